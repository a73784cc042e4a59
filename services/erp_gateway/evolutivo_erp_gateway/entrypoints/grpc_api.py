"""ErpGatewayService over gRPC: translates messages to handler calls and back, nothing more."""

from __future__ import annotations

from collections.abc import Callable

from evolutivo.erp_gateway.v1 import erp_gateway_service_pb2 as pb
from evolutivo.erp_gateway.v1 import erp_gateway_service_pb2_grpc as pb_grpc
from evolutivo_runtime.ids import parse_uuid
from evolutivo_runtime.server import Context

from evolutivo_erp_gateway.adapters import proto
from evolutivo_erp_gateway.service_layer import handlers
from evolutivo_erp_gateway.service_layer.unit_of_work import ErpGatewayUnitOfWork


class ErpGatewayServicer(pb_grpc.ErpGatewayServiceServicer):
    def __init__(self, uow: Callable[[], ErpGatewayUnitOfWork]) -> None:
        self._uow = uow

    async def GetSyncState(self, request: pb.GetSyncStateRequest, context: Context) -> pb.GetSyncStateResponse:
        entity_type = proto.entity_type_from_pb(request.entity_type)
        entity_id = parse_uuid("entity_id", request.entity_id)
        state = await handlers.get_sync_state(self._uow(), entity_type, entity_id)
        return pb.GetSyncStateResponse(sync_state=proto.state_to_pb(state))
