"""The collections processor: a background loop every billing replica runs (Wiring.background).

Every `BILLING_COLLECTIONS_CHECK_SECONDS` it opens cases for bill units whose debt past due
enters a scenario, closes the cases whose debt was settled, and runs passes over the cases due a
look until one finds none (docs/collections.md, "The processor"). Replicas share the work through
row locks (FOR UPDATE SKIP LOCKED); each action runs once, also after a crash."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from datetime import timedelta

from evolutivo_runtime.clients import service_channel

from evolutivo_billing.adapters.collections_clients import GrpcCollectionsGateway
from evolutivo_billing.service_layer.collections import (
    CollectionsGateway,
    ProcessorPolicy,
    close_settled_cases,
    open_cases,
    run_due_cases,
)
from evolutivo_billing.service_layer.unit_of_work import BillingUnitOfWork
from evolutivo_billing.settings import BillingSettings

log = logging.getLogger(__name__)

# Passes over due cases in one catch-up, so a check always ends (the next check goes on).
MAX_PASSES = 1000


class CollectionsProcessor:
    def __init__(
        self,
        uow: Callable[[], BillingUnitOfWork],
        gateway: CollectionsGateway,
        check_seconds: float,
        policy: ProcessorPolicy | None = None,
    ) -> None:
        self._uow = uow
        self._gateway = gateway
        self.check_seconds = check_seconds
        self.policy = policy or ProcessorPolicy()

    async def check(self, stop: asyncio.Event | None = None) -> int:
        """One check: open, close, then pass over due cases until a pass finds none; returns the
        cases handled by those passes."""
        for _ in range(MAX_PASSES):
            if stop is not None and stop.is_set():
                return 0
            looked, _ = await open_cases(self._uow, self.policy.batch_size)
            if looked < self.policy.batch_size:
                break
        await close_settled_cases(self._uow, self.policy.batch_size)
        handled = 0
        for _ in range(MAX_PASSES):
            if stop is not None and stop.is_set():
                break
            done = await run_due_cases(self._uow, self._gateway, self.policy)
            handled += done
            if not done:
                break
        return handled

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            try:
                await self.check(stop)
            except Exception:
                # A failed check is retried at the next one (the runtime restarts a crashed loop too).
                log.exception("collections check failed")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=self.check_seconds)


def processor(uow: Callable[[], BillingUnitOfWork], settings: BillingSettings) -> CollectionsProcessor:
    """The processor with its calls to balance and customer (BILLING_BALANCE_ADDRESS,
    BILLING_CUSTOMER_ADDRESS) and BILLING_COLLECTIONS_* settings, for app.wire."""
    gateway = GrpcCollectionsGateway(
        service_channel(settings.balance_address),
        service_channel(settings.customer_address),
        settings.downstream_timeout_seconds,
    )
    policy = ProcessorPolicy(
        batch_size=settings.collections_batch_size,
        lease=timedelta(seconds=settings.collections_action_lease_seconds),
        retry_delay=timedelta(seconds=settings.collections_retry_seconds),
        max_attempts=settings.collections_max_attempts,
        late_fee_tax_code=settings.collections_late_fee_tax_code,
    )
    return CollectionsProcessor(uow, gateway, settings.collections_check_seconds, policy)
