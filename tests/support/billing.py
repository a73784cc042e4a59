"""Billing's servicer behind a real gRPC server, as its integration tests call it."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

from evolutivo.billing.v1 import billing_service_pb2_grpc as pb_grpc
from evolutivo_billing.entrypoints.grpc_api import BillingServicer
from evolutivo_billing.service_layer.unit_of_work import BillingUnitOfWork
from evolutivo_runtime.server.interceptors import ServiceInterceptor

from support.rpc import serving


@asynccontextmanager
async def billing_stub(uow: Callable[[], BillingUnitOfWork]) -> AsyncIterator[pb_grpc.BillingServiceAsyncStub]:
    """A client of BillingServicer(uow), through the runtime's interceptor as the service runs it."""
    servicer = BillingServicer(uow)
    async with serving(
        pb_grpc.add_BillingServiceServicer_to_server, servicer, ServiceInterceptor("billing.evolutivo.io")
    ) as channel:
        yield pb_grpc.BillingServiceStub(channel)
