"""The balance service, as customer reads it: over gRPC, with a deadline."""

from __future__ import annotations

import uuid
from decimal import Decimal

import grpc
from evolutivo.balance.v1 import balance_service_pb2, balance_service_pb2_grpc
from evolutivo_runtime.errors import Unavailable
from evolutivo_runtime.money import from_money


class GrpcBalanceReader:
    def __init__(self, channel: grpc.aio.Channel, timeout: float) -> None:
        self._stub = balance_service_pb2_grpc.BalanceServiceStub(channel)
        self._timeout = timeout

    async def get_balance(self, account_id: uuid.UUID) -> balance_service_pb2.GetBalanceResponse | None:
        """The account's balance groups, or None when balance does not know the account yet."""
        try:
            return await self._stub.GetBalance(
                balance_service_pb2.GetBalanceRequest(account_id=str(account_id)),
                timeout=self._timeout,
                # Wait (within the deadline) for a reconnect instead of failing at once.
                wait_for_ready=True,
            )
        except grpc.aio.AioRpcError as error:
            if error.code() == grpc.StatusCode.NOT_FOUND:
                return None
            raise Unavailable(
                "BALANCE_UNAVAILABLE", f"the balance service did not answer: {error.code().name}"
            ) from None

    async def amount_owed(self, account_id: uuid.UUID) -> Decimal:
        balance = await self.get_balance(account_id)
        return from_money(balance.total) if balance is not None else Decimal(0)
