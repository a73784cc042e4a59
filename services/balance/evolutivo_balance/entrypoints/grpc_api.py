"""BalanceService over gRPC: translates messages to handler calls and back, nothing more."""

from __future__ import annotations

from collections.abc import Callable

from evolutivo.balance.v1 import balance_service_pb2 as pb
from evolutivo.balance.v1 import balance_service_pb2_grpc as pb_grpc
from evolutivo_runtime.ids import parse_uuid
from evolutivo_runtime.money import to_money
from evolutivo_runtime.server import Context

from evolutivo_balance.adapters import proto
from evolutivo_balance.domain.model import total
from evolutivo_balance.service_layer import handlers
from evolutivo_balance.service_layer.unit_of_work import BalanceUnitOfWork


class BalanceServicer(pb_grpc.BalanceServiceServicer):
    def __init__(self, uow: Callable[[], BalanceUnitOfWork]) -> None:
        self._uow = uow

    async def GetBalance(self, request: pb.GetBalanceRequest, context: Context) -> pb.GetBalanceResponse:
        account_id = parse_uuid("account_id", request.account_id)
        groups = await handlers.get_balance(self._uow(), account_id)
        return pb.GetBalanceResponse(
            account_id=str(account_id),
            balance_groups=[proto.group_to_pb(g) for g in groups],
            total=to_money(total(groups), groups[0].currency_code),
        )
