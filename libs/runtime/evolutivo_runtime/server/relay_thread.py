"""The outbox relay on a thread of its own: its own event loop, database engine and NATS connection.

On the service's event loop each of the relay's round trips (lock, read, publishes, acks, delete,
commit) waited for every ready task to take its turn. Under load that was most of the delay from a
commit to the consumers: with eight RecordUsageBatch calls rating 500 events each, a pass took
~200 ms and passes came ~0.5 s apart (docs/performance.md). On its own thread a round trip waits
for the interpreter lock at most its switch interval (5 ms) instead.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections.abc import Callable

from sqlalchemy import Table

from evolutivo_runtime.messaging.relay import OutboxRelay
from evolutivo_runtime.server.background import open_connections, supervise
from evolutivo_runtime.settings import ServiceSettings

log = logging.getLogger(__name__)

# The relay holds one connection for its pass and one for LISTEN (outside the pool); the backlog
# count takes another.
_POOL_SIZE = 2


class RelayThread:
    """Starts with `start()`; `stop()` asks it to publish what is committed and end; `join()`
    waits for that without blocking the caller's loop."""

    def __init__(self, name: str, settings: ServiceSettings, outbox: Table) -> None:
        self._name = name
        self._settings = settings
        self._outbox = outbox
        self._loop_factory = _same_kind_of_loop()
        self._thread = threading.Thread(target=self._main, name=f"{name}-outbox-relay", daemon=True)
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._stop_requested = False

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        with self._lock:
            self._stop_requested = True
            if self._loop is not None and self._stop is not None:
                self._loop.call_soon_threadsafe(self._stop.set)

    async def join(self) -> None:
        await asyncio.to_thread(self._thread.join)

    def _main(self) -> None:
        with asyncio.Runner(loop_factory=self._loop_factory) as runner:
            runner.run(self._serve())

    async def _serve(self) -> None:
        stop = asyncio.Event()
        with self._lock:
            self._loop, self._stop = asyncio.get_running_loop(), stop
            if self._stop_requested:
                stop.set()
        settings = self._settings
        connections = await open_connections(
            settings.database_url, _POOL_SIZE, settings.nats_url, stop, f"evolutivo-{self._name}-relay"
        )
        if connections is None:
            return
        engine, nc = connections
        relay = OutboxRelay(
            engine,
            settings.database_url,
            self._outbox,
            nc.jetstream(publish_async_max_pending=settings.publish_max_in_flight),
            settings.outbox_batch_size,
            settings.outbox_poll_seconds,
            linger=settings.outbox_linger_seconds,
        )
        try:
            await supervise("outbox-relay", lambda: relay.run(stop), stop)
        finally:
            try:
                await nc.drain()
            except Exception as exc:  # NATS already gone: nothing left to flush
                log.warning("relay's NATS drain incomplete", extra={"nats_error": repr(exc)})
                with contextlib.suppress(Exception):
                    await nc.close()
            await engine.dispose()


def _same_kind_of_loop() -> Callable[[], asyncio.AbstractEventLoop]:
    """A factory of the caller's kind of event loop (uvloop, or asyncio's with EVOLUTIVO_EVENT_LOOP=asyncio)."""
    running = asyncio.get_running_loop()
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a pinned dependency
        return asyncio.new_event_loop
    return uvloop.new_event_loop if isinstance(running, uvloop.Loop) else asyncio.new_event_loop
