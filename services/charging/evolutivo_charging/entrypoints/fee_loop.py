"""The fee loop: a background loop every charging replica runs (Wiring.background).

Every `CHARGING_FEE_CHECK_SECONDS` it runs passes of `charge_started_purchases` until one claims
nothing: the purchases whose start the clock has passed get their fees due at the start (one-time
fees, in-advance fees of the cycles open then). Replicas share the work through row locks
(`SKIP LOCKED`), and the fee keys make a fee charged twice impossible (docs/charging.md)."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import Callable

from evolutivo_charging.service_layer.fees import charge_started_purchases
from evolutivo_charging.service_layer.unit_of_work import ChargingUnitOfWork


class FeeLoop:
    def __init__(self, uow: Callable[[], ChargingUnitOfWork], check_seconds: float, batch_size: int) -> None:
        self._uow = uow
        self.check_seconds = check_seconds
        self.batch_size = batch_size

    async def catch_up(self, stop: asyncio.Event | None = None) -> int:
        """Passes until one claims nothing (or `stop` is set); returns the purchases settled.

        A purchase left pending (a fee waiting for a cycle charging has not learnt, or a failure)
        is left out of the following passes, so it cannot hold up the others; the next catch-up
        tries it again."""
        total = 0
        left: set[uuid.UUID] = set()
        while stop is None or not stop.is_set():
            done = await charge_started_purchases(self._uow(), self.batch_size, left)
            total += done.settled
            left |= done.left
            if not done.settled and not done.left:
                break
        return total

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            await self.catch_up(stop)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=self.check_seconds)
