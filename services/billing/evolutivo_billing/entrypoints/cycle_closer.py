"""The cycle closer: a background loop every billing replica runs (Wiring.background).

Every `BILLING_CYCLE_CHECK_SECONDS` it runs passes of `close_due_cycles` until one closes nothing,
so a unit several cycles behind catches up, one cycle per pass, in order. Replicas share the work
through row locks (`SKIP LOCKED`); a cycle is never closed twice (docs/billing.md)."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import Callable
from datetime import timedelta

from evolutivo_billing.service_layer.cycles import close_due_cycles
from evolutivo_billing.service_layer.unit_of_work import BillingUnitOfWork


class CycleCloser:
    def __init__(
        self,
        uow: Callable[[], BillingUnitOfWork],
        late_usage_delay: timedelta,
        check_seconds: float,
        batch_size: int,
    ) -> None:
        self._uow = uow
        self.late_usage_delay = late_usage_delay
        self.check_seconds = check_seconds
        self.batch_size = batch_size

    async def catch_up(self, stop: asyncio.Event | None = None) -> int:
        """Passes until one finds nothing due (or `stop` is set); returns the cycles closed.

        A cycle that fails to close is left out of the following passes, so it cannot take the
        place of due ones; the next catch-up tries it again."""
        total = 0
        failed: set[uuid.UUID] = set()
        while stop is None or not stop.is_set():
            done = await close_due_cycles(self._uow(), self.late_usage_delay, self.batch_size, failed)
            total += done.closed
            failed |= done.failed
            if not done.closed and not done.failed:
                break
        return total

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            await self.catch_up(stop)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=self.check_seconds)
