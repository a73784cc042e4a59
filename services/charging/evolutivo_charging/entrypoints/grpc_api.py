"""ChargingService over gRPC: one servicer composed of one mixin per part of the API.

Each part translates messages to service-layer calls and back, nothing more."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta

from evolutivo.charging.v1 import charging_service_pb2 as pb
from evolutivo.charging.v1 import charging_service_pb2_grpc as pb_grpc
from evolutivo_runtime.ids import parse_uuid
from evolutivo_runtime.server import Context

from evolutivo_charging.adapters import proto
from evolutivo_charging.entrypoints.grpc_catalog import CatalogApi
from evolutivo_charging.entrypoints.grpc_usage import UsageApi
from evolutivo_charging.service_layer import handlers
from evolutivo_charging.service_layer.unit_of_work import ChargingUnitOfWork


class ChargingServicer(CatalogApi, UsageApi, pb_grpc.ChargingServiceServicer):
    def __init__(self, uow: Callable[[], ChargingUnitOfWork], usage_horizon: timedelta | None = None) -> None:
        self._uow = uow
        self._usage_horizon = usage_horizon

    async def GetChargingAccount(
        self, request: pb.GetChargingAccountRequest, context: Context
    ) -> pb.GetChargingAccountResponse:
        account = await handlers.get_charging_account(self._uow(), parse_uuid("account_id", request.account_id))
        return pb.GetChargingAccountResponse(charging_account=proto.account_to_pb(account))
