"""What a service's background loops stand on: a NATS connection that waits for the server, and a
supervisor that restarts a crashed loop."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Mapping

import nats
from nats.aio.client import Client as NatsClient
from prometheus_client import Counter
from sqlalchemy.ext.asyncio import AsyncEngine

from evolutivo_runtime.db import create_engine

log = logging.getLogger(__name__)

RESTARTS = Counter(
    "evolutivo_background_restarts_total",
    "Background loops (relay, consumers, ...) that crashed and were restarted",
    ["task"],
)


class StoppedBeforeConnected(Exception):
    """The service was asked to stop while NATS had not answered yet."""


async def connect_nats(url: str, stop: asyncio.Event, name: str) -> NatsClient:
    """Connects, retrying until NATS answers (it may start after us); reconnects forever after.
    Raises StoppedBeforeConnected when `stop` is set first (nats-py's own connect retries an
    unreachable server forever, so the attempt is raced against it)."""
    delay = 0.2
    while True:
        attempt = asyncio.ensure_future(
            nats.connect(
                url,
                name=name,
                connect_timeout=2,
                allow_reconnect=True,
                max_reconnect_attempts=-1,
                reconnect_time_wait=1,
                # Bounded, so a SIGTERM never waits out nats-py's 30 s default.
                drain_timeout=5,
            )
        )
        stopped = asyncio.ensure_future(stop.wait())
        try:
            await asyncio.wait({attempt, stopped}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            stopped.cancel()
            if not attempt.done():
                attempt.cancel()
                await asyncio.wait({attempt})  # its cancellation, without raising it here
        if attempt.cancelled():
            raise StoppedBeforeConnected(url)
        try:
            return attempt.result()
        except Exception as exc:
            if stop.is_set():
                raise StoppedBeforeConnected(url) from exc
            log.warning("NATS not reachable yet", extra={"nats_error": repr(exc)})
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), delay)  # back off between connection attempts
            delay = min(delay * 2, 5.0)


async def open_connections(
    database_url: str,
    pool_size: int,
    nats_url: str,
    stop: asyncio.Event,
    client_name: str,
    server_settings: Mapping[str, str] | None = None,
) -> tuple[AsyncEngine, NatsClient] | None:
    """A database engine (its connections with `server_settings`) and a NATS connection; None, with
    nothing left open, when `stop` was set before NATS answered."""
    engine = create_engine(database_url, pool_size, server_settings)
    try:
        return engine, await connect_nats(nats_url, stop, client_name)
    except StoppedBeforeConnected:
        log.info("stopped before NATS answered", extra={"client": client_name})
        await engine.dispose()
        return None


async def supervise(name: str, run: Callable[[], Awaitable[None]], stop: asyncio.Event) -> None:
    """Keeps a background loop alive: a crash is logged, counted and the loop restarts after a pause."""
    restarts = RESTARTS.labels(name)  # the series exists before the first crash: increase() sees it
    while not stop.is_set():
        try:
            await run()
        except asyncio.CancelledError:
            raise
        except Exception:
            restarts.inc()
            log.exception("background task crashed; restarting", extra={"task": name})
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=1.0)
