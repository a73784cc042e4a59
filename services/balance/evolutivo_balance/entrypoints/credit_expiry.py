"""The temporary-limit expiry loop: a background loop every balance replica runs (Wiring.background).

Every `BALANCE_CREDIT_EXPIRY_CHECK_SECONDS` it runs passes of `expire_temporary_limits` until one
claims less than a batch. Groups are claimed FOR NO KEY UPDATE SKIP LOCKED, so replicas share them
and none is done twice; a group a booking holds is left to the next pass."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable

from evolutivo_balance.service_layer.credit import expire_temporary_limits
from evolutivo_balance.service_layer.unit_of_work import BalanceUnitOfWork


class TemporaryLimitExpiry:
    def __init__(self, uow: Callable[[], BalanceUnitOfWork], check_seconds: float, batch_size: int) -> None:
        self._uow = uow
        self.check_seconds = check_seconds
        self.batch_size = batch_size

    async def catch_up(self, stop: asyncio.Event | None = None) -> int:
        """Passes until one claims less than a batch (or `stop` is set); returns the groups done."""
        total = 0
        while stop is None or not stop.is_set():
            done = await expire_temporary_limits(self._uow(), self.batch_size)
            total += done
            if done < self.batch_size:
                break
        return total

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            await self.catch_up(stop)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=self.check_seconds)
