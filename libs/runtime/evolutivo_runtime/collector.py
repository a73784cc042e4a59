"""The garbage collector of a service process: kept quiet, and its pauses measured.

A full collection walks every object the process holds; it stops the event loop meanwhile, and
every RPC waiting on that loop waits with it. `evolutivo_gc_pause_seconds` (by generation) shows
how long each collection held the loop, and one over EVOLUTIVO_GC_PAUSE_LOG_MS (100 by default; 0
turns the log off) is logged, so that a latency tail can be told from a collector pause.
"""

from __future__ import annotations

import gc
import logging
import os
import time
from typing import Any

from prometheus_client import Histogram

log = logging.getLogger(__name__)

GC_PAUSE = Histogram(
    "evolutivo_gc_pause_seconds",
    "How long each garbage collection held the process (and its event loop)",
    ["generation"],
    buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5),
)


def quiet() -> None:
    """What the imports built (modules, protobuf descriptors, SQLAlchemy tables: most of a
    service's objects) lives as long as the process: moved out of the collector's sight
    (gc.freeze), the full collections a busy service triggers no longer walk it, and the
    young generation is collected ten times less often. Reference counting frees almost
    everything anyway; the collector is for cycles."""
    gc.collect()
    gc.freeze()
    gen0, gen1, gen2 = gc.get_threshold()
    gc.set_threshold(gen0 * 10, gen1, gen2)


def watch_pauses() -> None:
    """Measures every collection from now on (a callback; ~1 us each)."""
    log_after = float(os.environ.get("EVOLUTIVO_GC_PAUSE_LOG_MS", "100")) / 1000
    started = [0.0]
    children = {g: GC_PAUSE.labels(str(g)) for g in range(3)}

    def observe(phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            started[0] = time.perf_counter()
            return
        pause = time.perf_counter() - started[0]
        generation = info["generation"]
        children[generation].observe(pause)
        if log_after > 0 and pause >= log_after:
            log.warning(
                "long garbage collection",
                extra={"generation": generation, "pause_ms": round(pause * 1000, 1), "collected": info["collected"]},
            )

    gc.callbacks.append(observe)
