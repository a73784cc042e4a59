"""How late the service's event loop runs: the wait every RPC and consumer shares.

An RPC's handler is timed from its own start (grpc_server_handling_seconds), so time a call spent
queued behind other work on the loop (a consumer decoding a large batch, a long synchronous step,
the collector) shows nowhere else. A task sleeps `interval` seconds over and over and records how
much later than asked it woke (`evolutivo_event_loop_lag_seconds`): a stall of the loop delays it
by as much, whatever held the loop. A lag over EVOLUTIVO_LOOP_LAG_LOG_MS (250 by default; 0
turns the log off) is logged.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Callable

from prometheus_client import Histogram

log = logging.getLogger(__name__)

LOOP_LAG = Histogram(
    "evolutivo_event_loop_lag_seconds",
    "How much later than scheduled the event loop ran a timer (time the loop was held by other work)",
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5),
)

# Every 25 ms: a stall that long or longer is always seen; ~40 wake-ups a second cost ~0.1% of a core.
INTERVAL_SECONDS = 0.025


def _log_after_seconds() -> float:
    """EVOLUTIVO_LOOP_LAG_LOG_MS in seconds; a value that is not a number keeps the default (the
    watch must not stop over its log's setting)."""
    raw = os.environ.get("EVOLUTIVO_LOOP_LAG_LOG_MS", "250")
    try:
        return float(raw) / 1000
    except ValueError:
        log.warning("EVOLUTIVO_LOOP_LAG_LOG_MS is not a number; logging lags over 250 ms", extra={"value": raw})
        return 0.25


async def watch(
    stop: asyncio.Event, interval: float = INTERVAL_SECONDS, record: Callable[[float], None] = LOOP_LAG.observe
) -> None:
    """Records the loop's lag (s) until `stop` is set: in the histogram, or by `record`."""
    log_after = _log_after_seconds()
    while not stop.is_set():
        asked = time.perf_counter()
        await asyncio.sleep(interval)
        lag = max(0.0, time.perf_counter() - asked - interval)
        record(lag)
        if log_after > 0 and lag >= log_after:
            log.warning("event loop held", extra={"lag_ms": round(lag * 1000, 1)})
