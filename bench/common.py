"""What every measure of the harness shares: a figure, percentiles, closed- and open-loop drivers."""

from __future__ import annotations

import asyncio
import gc
import statistics
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field, fields, replace
from typing import Any

from evolutivo_runtime.server import loop_lag


@dataclass
class Figure:
    """One measured figure. `rate` is per second in `unit`; latencies are milliseconds."""

    name: str
    unit: str
    rate: float
    p50_ms: float | None = None
    p95_ms: float | None = None
    p99_ms: float | None = None
    operations: int = 0
    items: int = 0
    seconds: float = 0.0
    notes: str = ""
    # Extra named values (e.g. the end-to-end rate and lag of an ingest figure).
    extra: dict[str, float] = field(default_factory=dict)
    # How many repeated runs the median is taken over (1: a single run).
    runs: int = 1


def percentile(samples: Sequence[float], q: float) -> float:
    """The q-quantile (nearest rank) of samples given in seconds, in milliseconds."""
    if not samples:
        return 0.0
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))] * 1000


def latencies(figure: Figure, samples: Sequence[float]) -> Figure:
    return replace(
        figure,
        p50_ms=percentile(samples, 0.50),
        p95_ms=percentile(samples, 0.95),
        p99_ms=percentile(samples, 0.99),
    )


def median(runs: Sequence[Figure]) -> Figure:
    """The figure whose every number is the median of the runs' (notes of the first run)."""
    first = runs[0]
    if len(runs) == 1:
        return first
    values: dict[str, Any] = {}
    for f in fields(Figure):
        if f.name in ("name", "unit", "notes", "extra", "runs"):
            continue
        numbers = [getattr(r, f.name) for r in runs if getattr(r, f.name) is not None]
        values[f.name] = statistics.median(numbers) if numbers else None
    keys = {k for r in runs for k in r.extra}
    extra = {k: statistics.median([r.extra[k] for r in runs if k in r.extra]) for k in sorted(keys)}
    return replace(first, **values, extra=extra, runs=len(runs))


def quiet_collector() -> None:
    """Collects, then freezes what this process holds (gc.freeze), as the services do at start-up.
    Called before each timed run: by the reads, the harness holds the ids and timestamps of
    hundreds of thousands of charges it checked, and a full collection walking them stalled this
    client's event loop for up to ~0.4 s, charged to every call it delayed (measured with
    gc.callbacks). The client's own collector is not the system under test."""
    gc.collect()
    gc.freeze()


async def closed_loop(
    seconds: float, concurrency: int, operation: Callable[[int], Awaitable[int]], name: str, unit: str, notes: str = ""
) -> Figure:
    """Runs `operation(seq)` (returns the items it handled) back to back from `concurrency`
    workers for `seconds`: the most the system under test takes, with per-call latency."""
    quiet_collector()
    samples: list[float] = []
    items = 0
    deadline = time.perf_counter() + seconds
    began = time.perf_counter()

    async def worker(w: int) -> None:
        nonlocal items
        n = 0
        while time.perf_counter() < deadline:
            t0 = time.perf_counter()
            # Awaited first: `items += await ...` would read `items` before the await and lose the
            # other workers' counts.
            handled = await operation(w * 1_000_000 + n)
            samples.append(time.perf_counter() - t0)
            items += handled
            n += 1

    await asyncio.gather(*(worker(w) for w in range(concurrency)))
    elapsed = time.perf_counter() - began
    figure = Figure(name, unit, items / elapsed, operations=len(samples), items=items, seconds=round(elapsed, 2))
    figure.notes = notes
    return latencies(figure, samples)


async def open_loop(
    seconds: float, rate: float, operation: Callable[[int], Awaitable[None]], name: str, unit: str, notes: str = ""
) -> Figure:
    """Starts `operation(seq)` at a fixed `rate` per second for `seconds`, whether the earlier
    ones answered or not (an open system, as users are). Latency counts from each call's
    scheduled start, so a stall is charged to every call it delays (no coordinated omission)."""
    quiet_collector()
    samples: list[float] = []
    errors: list[BaseException] = []
    pending: set[asyncio.Task[None]] = set()
    # The client's own loop lag: a call it started or answered late is charged to the latency.
    lags: list[float] = []
    lag_stop = asyncio.Event()
    lag_watch = asyncio.create_task(loop_lag.watch(lag_stop, 0.01, lags.append))
    began = time.perf_counter()
    total = int(seconds * rate)

    async def one(seq: int, scheduled: float) -> None:
        try:
            await operation(seq)
        except Exception as exc:  # counted and reported: an overloaded server may refuse calls
            errors.append(exc)
            return
        samples.append(time.perf_counter() - scheduled)

    try:
        for seq in range(total):
            scheduled = began + seq / rate
            delay = scheduled - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            task = asyncio.create_task(one(seq, scheduled))
            pending.add(task)
            task.add_done_callback(pending.discard)
        if pending:
            await asyncio.gather(*pending)
        elapsed = time.perf_counter() - began
    finally:
        lag_stop.set()
        await lag_watch
    figure = Figure(name, unit, len(samples) / elapsed, operations=total, items=len(samples), seconds=round(elapsed, 2))
    figure.notes = notes + (f"; {len(errors)} failed ({errors[0]!r:.80})" if errors else "")
    figure.extra["errors"] = float(len(errors))
    figure.extra["client_loop_lag_p99_ms"] = percentile(lags, 0.99)
    figure.extra["client_loop_lag_max_ms"] = max(lags, default=0.0) * 1000
    return latencies(figure, samples)
