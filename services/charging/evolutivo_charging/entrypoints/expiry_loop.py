"""The usage expiry loop: a background loop every charging replica runs (Wiring.background).

Every `CHARGING_USAGE_EXPIRY_CHECK_SECONDS` it deletes RATED usage events received longer ago than
the idempotency horizon (`CHARGING_USAGE_RETENTION_DAYS`), a batch per transaction until none is
left. Rows are claimed with FOR UPDATE SKIP LOCKED, so replicas share the work without waiting."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from datetime import timedelta

from evolutivo_charging.service_layer.unit_of_work import ChargingUnitOfWork
from evolutivo_charging.service_layer.usage import expire_usage


class ExpiryLoop:
    def __init__(
        self, uow: Callable[[], ChargingUnitOfWork], horizon: timedelta, check_seconds: float, batch_size: int
    ) -> None:
        self._uow = uow
        self.horizon = horizon
        self.check_seconds = check_seconds
        self.batch_size = batch_size

    async def catch_up(self, stop: asyncio.Event | None = None) -> int:
        """Batches until one deletes fewer than a full batch (or `stop` is set); returns the total."""
        total = 0
        while stop is None or not stop.is_set():
            deleted = await expire_usage(self._uow(), self.horizon, self.batch_size)
            total += deleted
            if deleted < self.batch_size:
                break
        return total

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            await self.catch_up(stop)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=self.check_seconds)
