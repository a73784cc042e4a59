"""The outbox relay on a thread of its own: its own event loop, database engine and NATS connection.

On the service's event loop each of the relay's round trips (lock, read, publishes, acks, delete,
commit) waited for every ready task to take its turn. Under load that was most of the delay from a
commit to the consumers: with eight RecordUsageBatch calls rating 500 events each, a pass took
~200 ms and passes came ~0.5 s apart (docs/performance.md). On its own thread a round trip waits
for the interpreter lock, typically no longer than its switch interval (5 ms).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections.abc import Callable

from sqlalchemy import Table

from evolutivo_runtime.messaging.relay import OutboxRelay
from evolutivo_runtime.progress import RELAY_TASK
from evolutivo_runtime.server.background import open_connections, supervise
from evolutivo_runtime.settings import ServiceSettings

log = logging.getLogger(__name__)

# The relay holds one connection for its pass and one for LISTEN (outside the pool); the backlog
# count takes another.
_POOL_SIZE = 2
# The relay's read (`seq > after ORDER BY seq LIMIT n`) must go through the primary key: the outbox
# holds few live rows, so the planner prefers a sequential scan and a sort, which reads every
# deleted row still in the table (until a vacuum), on every pass; on a young table that was 1,588
# sequential scans of charging's outbox at ~500 buffers each in a 20 s run of single calls.
RELAY_SERVER_SETTINGS = {"enable_seqscan": "off"}


class RelayThread:
    """Starts with `start()`; `stop()` asks it to publish what is committed and end; `join()`
    waits for that without blocking the caller's loop. `on_crash` is called (from the relay's
    thread) when the thread ends on an error instead of a stop: the service should stop, since
    nothing of its replica would publish any more."""

    def __init__(self, name: str, settings: ServiceSettings, outbox: Table, on_crash: Callable[[], object]) -> None:
        self._name = name
        self._settings = settings
        self._outbox = outbox
        self._on_crash = on_crash
        self._loop_factory = _same_kind_of_loop()
        self._thread = threading.Thread(target=self._main, name=f"{name}-outbox-relay", daemon=True)
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._stop_requested = False
        # Set once the relay holds its NATS connection and engine (tests wait on it).
        self.connected = threading.Event()
        # The error the thread ended on, if any.
        self.error: BaseException | None = None

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        """Safe from any thread, before the relay's loop exists and after it ended."""
        with self._lock:
            self._stop_requested = True
            if self._loop is not None and self._stop is not None:
                self._loop.call_soon_threadsafe(self._stop.set)

    async def join(self, timeout: float) -> bool:
        """Waits up to `timeout` s for the thread to end; False if it did not (a relay stuck on an
        unanswering NATS or database: what it did not publish stays in the outbox for the next)."""
        await asyncio.to_thread(self._thread.join, timeout)
        return not self._thread.is_alive()

    def _main(self) -> None:
        try:
            with asyncio.Runner(loop_factory=self._loop_factory) as runner:
                runner.run(self._serve())
        except BaseException as exc:
            self.error = exc
            log.exception("outbox relay thread ended on an error; stopping the service")
            try:
                self._on_crash()
            except Exception:  # the service's loop is already gone: it is stopping anyway
                log.warning("could not ask the service to stop", exc_info=True)
        finally:
            with self._lock:
                self._loop = self._stop = None  # its loop is closed: stop() has nothing to wake

    async def _serve(self) -> None:
        stop = asyncio.Event()
        with self._lock:
            self._loop, self._stop = asyncio.get_running_loop(), stop
            if self._stop_requested:
                stop.set()
        settings = self._settings
        connections = await open_connections(
            settings.database_url,
            _POOL_SIZE,
            settings.nats_url,
            stop,
            f"evolutivo-{self._name}-relay",
            RELAY_SERVER_SETTINGS,
        )
        if connections is None:
            return  # stopped before NATS answered: what is in the outbox waits for the next relay
        engine, nc = connections
        self.connected.set()
        relay = OutboxRelay(
            engine,
            settings.database_url,
            self._outbox,
            nc.jetstream(publish_async_max_pending=settings.publish_max_in_flight),
            settings.outbox_batch_size,
            settings.outbox_poll_seconds,
            linger=settings.outbox_linger_seconds,
            sweep_seconds=settings.outbox_sweep_seconds,
        )
        try:
            await supervise(RELAY_TASK, lambda: relay.run(stop), stop)
            # run() drains when stopped; this covers a stop that came before run() began.
            await relay.drain()
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
