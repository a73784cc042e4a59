"""Collections' calls to balance (late fees, write-offs) and customer (suspend, reinstate), each
with a deadline and the action's request id (docs/collections.md, "Calls out")."""

from __future__ import annotations

import uuid
from decimal import Decimal

import grpc
from evolutivo.balance.v1 import balance_service_pb2, balance_service_pb2_grpc
from evolutivo.customer.v1 import account_pb2, customer_service_pb2, customer_service_pb2_grpc
from evolutivo_runtime.errors import Unavailable
from evolutivo_runtime.money import to_money

from evolutivo_billing.service_layer.collections import CallFailed, CallRefused

ACTOR = "collections"
LATE_FEE_REASON_CODE = "LATE_FEE"
WRITE_OFF_REASON_CODE = "UNCOLLECTIBLE"
# Answers that may change if asked again (the callee is down, or has not learnt of the account yet).
_RETRY = {
    grpc.StatusCode.UNAVAILABLE,
    grpc.StatusCode.DEADLINE_EXCEEDED,
    grpc.StatusCode.ABORTED,
    grpc.StatusCode.RESOURCE_EXHAUSTED,
    grpc.StatusCode.NOT_FOUND,
    grpc.StatusCode.INTERNAL,
    grpc.StatusCode.UNKNOWN,
    grpc.StatusCode.CANCELLED,
}


def _translate(error: grpc.aio.AioRpcError, service: str) -> Exception:
    message = f"{service}: {error.code().name}: {error.details()}"
    if error.code() in _RETRY:
        return Unavailable(f"{service.upper()}_UNAVAILABLE", message)
    if error.code() == grpc.StatusCode.FAILED_PRECONDITION:
        return CallRefused(message)
    return CallFailed(message)


class GrpcCollectionsGateway:
    def __init__(self, balance: grpc.aio.Channel, customer: grpc.aio.Channel, timeout: float) -> None:
        self._balance = balance_service_pb2_grpc.BalanceServiceStub(balance)
        self._customer = customer_service_pb2_grpc.CustomerServiceStub(customer)
        self._timeout = timeout

    async def post_late_fee(
        self, account_id: uuid.UUID, amount: Decimal, currency_code: str, reason: str, request_id: uuid.UUID
    ) -> str:
        try:
            response = await self._balance.CreateAdjustment(
                balance_service_pb2.CreateAdjustmentRequest(
                    account_id=str(account_id),
                    amount=to_money(amount, currency_code),
                    reason_code=LATE_FEE_REASON_CODE,
                    reason=reason,
                    actor=ACTOR,
                    request_id=str(request_id),
                ),
                timeout=self._timeout,
                wait_for_ready=True,
            )
        except grpc.aio.AioRpcError as error:
            raise _translate(error, "balance") from None
        return response.entry.entry_id

    async def write_off(
        self,
        account_id: uuid.UUID,
        amount: Decimal,
        currency_code: str,
        case_id: uuid.UUID,
        reason: str,
        request_id: uuid.UUID,
    ) -> str:
        try:
            response = await self._balance.WriteOff(
                balance_service_pb2.WriteOffRequest(
                    account_id=str(account_id),
                    amount=to_money(amount, currency_code),
                    source_type="collections_case",
                    source_id=str(case_id),
                    reason_code=WRITE_OFF_REASON_CODE,
                    reason=reason,
                    actor=ACTOR,
                    request_id=str(request_id),
                ),
                timeout=self._timeout,
                wait_for_ready=True,
            )
        except grpc.aio.AioRpcError as error:
            raise _translate(error, "balance") from None
        return response.entry.entry_id

    async def suspend(self, account_id: uuid.UUID, case_id: uuid.UUID, reason: str, request_id: uuid.UUID) -> str:
        try:
            await self._customer.SuspendAccount(
                customer_service_pb2.SuspendAccountRequest(
                    account_id=str(account_id),
                    reason=reason,
                    actor=account_pb2.STATUS_ACTOR_COLLECTIONS,
                    actor_id=str(case_id),
                    request_id=str(request_id),
                ),
                timeout=self._timeout,
                wait_for_ready=True,
            )
        except grpc.aio.AioRpcError as error:
            raise _translate(error, "customer") from None
        return ""

    async def reinstate(self, account_id: uuid.UUID, case_id: uuid.UUID, reason: str, request_id: uuid.UUID) -> str:
        try:
            await self._customer.ReinstateAccount(
                customer_service_pb2.ReinstateAccountRequest(
                    account_id=str(account_id),
                    reason=reason,
                    actor=account_pb2.STATUS_ACTOR_COLLECTIONS,
                    actor_id=str(case_id),
                    request_id=str(request_id),
                ),
                timeout=self._timeout,
                wait_for_ready=True,
            )
        except grpc.aio.AioRpcError as error:
            raise _translate(error, "customer") from None
        return ""
