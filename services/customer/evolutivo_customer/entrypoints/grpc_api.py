"""CustomerService over gRPC: translates messages to handler calls and back, nothing more."""

from __future__ import annotations

from collections.abc import Callable

from evolutivo.customer.v1 import customer_service_pb2 as pb
from evolutivo.customer.v1 import customer_service_pb2_grpc as pb_grpc
from evolutivo_runtime.errors import InvalidArgument
from evolutivo_runtime.ids import parse_request_id, parse_uuid
from evolutivo_runtime.server import Context

from evolutivo_customer.adapters import proto
from evolutivo_customer.service_layer import handlers
from evolutivo_customer.service_layer.unit_of_work import CustomerUnitOfWork


class CustomerServicer(pb_grpc.CustomerServiceServicer):
    def __init__(self, uow: Callable[[], CustomerUnitOfWork]) -> None:
        self._uow = uow

    async def CreateAccount(self, request: pb.CreateAccountRequest, context: Context) -> pb.CreateAccountResponse:
        if not request.HasField("account"):
            raise InvalidArgument("account", "is required")
        request_id = parse_request_id(request.request_id)
        account = await handlers.create_account(self._uow(), proto.new_account_from_pb(request.account), request_id)
        return pb.CreateAccountResponse(account=proto.account_to_pb(account))

    async def GetAccount(self, request: pb.GetAccountRequest, context: Context) -> pb.GetAccountResponse:
        account = await handlers.get_account(self._uow(), parse_uuid("account_id", request.account_id))
        return pb.GetAccountResponse(account=proto.account_to_pb(account))
