"""The billing service, as customer reads it: over gRPC, with a deadline."""

from __future__ import annotations

import uuid

import grpc
from evolutivo.billing.v1 import billing_service_pb2, billing_service_pb2_grpc
from evolutivo_runtime.errors import Unavailable


class GrpcBillingReader:
    def __init__(self, channel: grpc.aio.Channel, timeout: float) -> None:
        self._stub = billing_service_pb2_grpc.BillingServiceStub(channel)
        self._timeout = timeout

    async def get_billing_summary(self, account_id: uuid.UUID) -> billing_service_pb2.GetBillingSummaryResponse | None:
        """The account's bill unit, open bills, overdue total and collections state, or None when
        billing has no bill unit for the account yet. Raises Unavailable when billing does not
        answer within the deadline or fails."""
        try:
            return await self._stub.GetBillingSummary(
                billing_service_pb2.GetBillingSummaryRequest(account_id=str(account_id)),
                timeout=self._timeout,
                # Wait (within the deadline) for a reconnect instead of failing at once.
                wait_for_ready=True,
            )
        except grpc.aio.AioRpcError as error:
            if error.code() == grpc.StatusCode.NOT_FOUND:
                return None
            raise Unavailable(
                "BILLING_UNAVAILABLE", f"the billing service did not answer: {error.code().name}"
            ) from None
