"""The cycle closer: a background loop every billing replica runs (Wiring.background). Closing a
cycle bills it, in the same transaction (the bill run). After each catch-up it issues the
threshold bills of the bill units marked by the ChargesCreated consumer (docs/billing.md, "Other
triggers") and marks the bills past their due date OVERDUE (docs/billing.md, "Payments"). It is
woken at once when a threshold is reached (LISTEN), besides every check.

Every `BILLING_CYCLE_CHECK_SECONDS` it runs passes of `close_due_cycles` until one closes nothing,
so a unit several cycles behind catches up, one cycle per pass, in order. Each pass closes and bills
its cycles set-based, falling back to one by one when that fails (docs/performance.md). Replicas share the work
through row locks (`SKIP LOCKED`); a cycle is never closed, nor billed, twice (docs/billing.md)."""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Callable
from datetime import timedelta

import asyncpg
from evolutivo_runtime.db import plain_url

from evolutivo_billing.adapters.bills_repository import ThresholdRepository
from evolutivo_billing.service_layer.bills import BillPolicy, bill_thresholds
from evolutivo_billing.service_layer.cycles import any_due, close_due_cycles
from evolutivo_billing.service_layer.payments import mark_overdue_bills
from evolutivo_billing.service_layer.unit_of_work import BillingUnitOfWork

log = logging.getLogger(__name__)


class CycleCloser:
    def __init__(
        self,
        uow: Callable[[], BillingUnitOfWork],
        late_usage_delay: timedelta,
        check_seconds: float,
        batch_size: int,
        policy: BillPolicy | None = None,
        listen_url: str | None = None,
        together: bool = True,
        passes_at_once: int = 1,
    ) -> None:
        self._uow = uow
        # Passes a catch-up runs at once (they claim different cycles and overlap all but their
        # numbering, docs/billing.md "Lock order"); 1: one after the other.
        self.passes_at_once = passes_at_once
        # Passes close their cycles set-based (False: one by one, the reference path; tests).
        self.together = together
        # Where to LISTEN for reached thresholds (None: only the periodic check finds them).
        self._listen_url = listen_url
        self._wakeup = asyncio.Event()
        self.late_usage_delay = late_usage_delay
        self.check_seconds = check_seconds
        self.batch_size = batch_size
        self.policy = policy or BillPolicy()

    async def catch_up(self, stop: asyncio.Event | None = None) -> int:
        """Passes until one finds nothing due (or `stop` is set); returns the cycles closed.
        With `passes_at_once` above 1, that many run at once, each until one of its passes finds
        nothing due; only the first waits for cycles others hold (below).

        A cycle that fails to close is left out of the following passes, so it cannot take the
        place of due ones; the next catch-up tries it again. When a pass finds nothing it can
        claim but cycles are due, another transaction holds them: a closer (it closes them) or
        the ChargesCreated consumer adding items (briefly, but a busy account's cycle could be
        held at every check). A pass that waits for one is run then, and again while such
        passes close something, so no cycle is skipped for ever."""
        failed: set[uuid.UUID] = set()
        if self.passes_at_once <= 1:
            return await self._passes(stop, failed, may_wait=True)
        # A TaskGroup: a line that raises cancels the others; its error reaches the caller as is.
        try:
            async with asyncio.TaskGroup() as lines:
                done = [lines.create_task(self._passes(stop, failed, i == 0)) for i in range(self.passes_at_once)]
        except ExceptionGroup as errors:
            for other in errors.exceptions[1:]:
                log.error("a catch-up line failed too", exc_info=other)
            raise errors.exceptions[0] from None
        return sum(d.result() for d in done)

    async def _passes(self, stop: asyncio.Event | None, failed: set[uuid.UUID], may_wait: bool) -> int:
        """One line of catch-up passes (see catch_up); `failed` is shared by the lines."""
        total = 0
        while stop is None or not stop.is_set():
            done = await close_due_cycles(
                self._uow(), self.late_usage_delay, self.batch_size, failed, self.policy, together=self.together
            )
            total += done.closed
            failed |= done.failed
            if done.closed or done.failed:
                continue
            if not may_wait or not await any_due(self._uow(), self.late_usage_delay, failed):
                break
            done = await close_due_cycles(
                self._uow(),
                self.late_usage_delay,
                self.batch_size,
                failed,
                self.policy,
                wait=True,
                together=self.together,
            )
            total += done.closed
            failed |= done.failed
            may_wait = bool(done.closed)
        return total

    async def mark_overdue(self, stop: asyncio.Event | None = None) -> int:
        """Passes of the overdue marker until one marks fewer than a batch; returns how many."""
        total = 0
        while stop is None or not stop.is_set():
            marked = await mark_overdue_bills(self._uow(), self.batch_size)
            total += marked
            if marked < self.batch_size:
                break
        return total

    async def bill_thresholds(self, stop: asyncio.Event | None = None) -> int:
        """Passes of the threshold biller until one issues fewer than a batch; returns bills issued."""
        total = 0
        while stop is None or not stop.is_set():
            issued = await bill_thresholds(self._uow, self.policy, self.batch_size)
            total += issued
            if issued < self.batch_size:
                break
        return total

    async def run(self, stop: asyncio.Event) -> None:
        listener = await self._listen()
        try:
            while not stop.is_set():
                self._wakeup.clear()
                await self.catch_up(stop)
                await self.bill_thresholds(stop)
                await self.mark_overdue(stop)
                waiters = [asyncio.ensure_future(self._wakeup.wait()), asyncio.ensure_future(stop.wait())]
                _, pending = await asyncio.wait(waiters, timeout=self.check_seconds, return_when="FIRST_COMPLETED")
                for waiter in pending:
                    waiter.cancel()
        finally:
            if listener is not None:
                await listener.close()

    async def _listen(self) -> asyncpg.Connection | None:
        """LISTEN for reached thresholds; the periodic check still covers a lost notification."""
        if not self._listen_url:
            return None
        try:
            conn = await asyncpg.connect(plain_url(self._listen_url))
            await conn.add_listener(ThresholdRepository.CHANNEL, lambda *_: self._wakeup.set())
            return conn
        except Exception:
            log.warning("threshold LISTEN unavailable; relying on the periodic check", exc_info=True)
            return None
