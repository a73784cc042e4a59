"""The one clock every service reads time from.

Production uses SystemClock. In development and tests the services run a SharedClock: real time
plus an offset kept in a NATS KV bucket, so a test (or the demo) moves time forward once through
ClockAdminService and every service follows. The offset only grows: time never runs backwards.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from datetime import UTC, datetime, timedelta
from typing import Protocol

from nats.js import JetStreamContext
from nats.js.errors import BucketNotFoundError, KeyNotFoundError, KeyWrongLastSequenceError
from nats.js.kv import KeyValue

log = logging.getLogger(__name__)

CLOCK_BUCKET = "evolutivo_clock"
OFFSET_KEY = "offset_us"


class Clock(Protocol):
    def now(self) -> datetime:
        """The current instant, timezone-aware in UTC."""
        ...


class SystemClock:
    def now(self) -> datetime:
        return datetime.now(UTC)


class FixedClock:
    """For pure domain unit tests."""

    def __init__(self, instant: datetime) -> None:
        self.instant = instant

    def now(self) -> datetime:
        return self.instant

    def advance(self, delta: timedelta) -> None:
        self.instant += delta


class SharedClock:
    """Real time plus a shared offset that only moves forward, followed through a KV watch."""

    def __init__(self) -> None:
        self._offset = timedelta(0)
        self.revision = 0
        self._kv: KeyValue | None = None
        self._watch_task: asyncio.Task[None] | None = None
        self._watcher: KeyValue.KeyWatcher | None = None
        self._changed = asyncio.Condition()

    def now(self) -> datetime:
        return datetime.now(UTC) + self._offset

    async def start(self, js: JetStreamContext) -> None:
        try:
            self._kv = await js.key_value(CLOCK_BUCKET)
        except BucketNotFoundError:
            self._kv = await js.create_key_value(bucket=CLOCK_BUCKET, history=1)
        with contextlib.suppress(KeyNotFoundError):
            entry = await self._kv.get(OFFSET_KEY)
            self._apply(entry.value, entry.revision)
        self._watcher = await self._kv.watch(OFFSET_KEY)
        self._watch_task = asyncio.create_task(self._follow(self._watcher))

    async def stop(self) -> None:
        if self._watcher is not None:
            with contextlib.suppress(Exception):
                await self._watcher.stop()  # type: ignore[no-untyped-call]
        if self._watch_task:
            self._watch_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._watch_task

    async def _follow(self, watcher: KeyValue.KeyWatcher) -> None:
        async for entry in watcher:
            if entry is not None and entry.value is not None and entry.revision is not None:
                self._apply(entry.value, entry.revision)
                async with self._changed:
                    self._changed.notify_all()

    def _apply(self, value: bytes | None, revision: int | None) -> None:
        if value is None or revision is None or revision <= self.revision:
            return
        self._offset = timedelta(microseconds=int(value.decode()))
        self.revision = revision
        log.info("clock moved", extra={"clock_now": self.now().isoformat(), "clock_revision": revision})

    async def advance(self, delta: timedelta) -> int:
        """Moves the shared clock forward; returns the revision once this process has applied it."""
        if delta < timedelta(0):
            raise ValueError("the clock only moves forward")
        assert self._kv is not None, "SharedClock.start() was not awaited"
        while True:  # compare-and-set, so two concurrent advances add up instead of overwriting
            try:
                entry = await self._kv.get(OFFSET_KEY)
                current = int(entry.value.decode()) if entry.value else 0
                last: int | None = entry.revision
            except KeyNotFoundError:
                current, last = 0, None
            value = str(current + delta // timedelta(microseconds=1)).encode()
            try:
                if last is None:
                    revision = await self._kv.create(OFFSET_KEY, value)
                else:
                    revision = await self._kv.update(OFFSET_KEY, value, last=last)
            except KeyWrongLastSequenceError:
                continue
            except Exception as exc:  # nats-py raises APIError subclasses for a lost create race
                if last is None and "exists" in str(exc).lower():
                    continue
                raise
            self._apply(value, revision)
            return revision

    async def wait_for_revision(self, revision: int, timeout: float = 5.0) -> None:
        async with self._changed:
            await asyncio.wait_for(self._changed.wait_for(lambda: self.revision >= revision), timeout)
