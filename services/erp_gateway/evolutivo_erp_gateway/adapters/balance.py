"""Balance's RecordPayment, for payments imported from an ERP."""

from __future__ import annotations

import uuid
from decimal import Decimal

import grpc
from evolutivo.balance.v1 import balance_service_pb2, balance_service_pb2_grpc, payment_pb2
from evolutivo_runtime.clients import service_channel
from evolutivo_runtime.errors import FailedPrecondition, InvalidArgument, Unavailable
from evolutivo_runtime.money import to_money


class BalanceClient:
    def __init__(self, address: str, timeout: float) -> None:
        self._address = address
        self._timeout = timeout
        self._channel: grpc.aio.Channel | None = None

    def _stub(self) -> balance_service_pb2_grpc.BalanceServiceStub:
        if self._channel is None:
            self._channel = service_channel(self._address)
        return balance_service_pb2_grpc.BalanceServiceStub(self._channel)

    async def close(self) -> None:
        if self._channel is not None:
            await self._channel.close(None)

    async def record_payment(self, account_id: uuid.UUID, amount: Decimal, currency_code: str, reference: str) -> str:
        request = balance_service_pb2.RecordPaymentRequest(
            account_id=str(account_id),
            amount=to_money(amount, currency_code),
            method=payment_pb2.PAYMENT_METHOD_TYPE_BANK_TRANSFER,
            # Idempotent on the reference: a re-import returns the first payment.
            reference=reference,
        )
        try:
            response: balance_service_pb2.RecordPaymentResponse = await self._stub().RecordPayment(  # type: ignore[misc]
                request, timeout=self._timeout
            )
        except grpc.aio.AioRpcError as exc:
            if exc.code() == grpc.StatusCode.INVALID_ARGUMENT:
                raise InvalidArgument("payment", exc.details() or "refused") from None
            if exc.code() in (grpc.StatusCode.FAILED_PRECONDITION, grpc.StatusCode.NOT_FOUND):
                raise FailedPrecondition("PAYMENT_REFUSED", exc.details() or "refused") from None
            raise Unavailable("BALANCE_UNAVAILABLE", f"balance did not record the payment: {exc.code().name}") from None
        return str(response.payment.payment_id)
