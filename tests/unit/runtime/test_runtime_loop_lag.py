"""evolutivo_runtime.server.loop_lag: a held event loop is seen as lag, and logged when long."""

from __future__ import annotations

import asyncio
import logging
import time

import pytest
from evolutivo_runtime.server import loop_lag


async def _watch_while(hold_seconds: float, record: list[float]) -> None:
    stop = asyncio.Event()
    watcher = asyncio.create_task(loop_lag.watch(stop, 0.01, record.append))
    await asyncio.sleep(0.05)  # a few quiet wake-ups first
    time.sleep(hold_seconds)  # noqa: ASYNC251  # holds the loop on purpose, as a long synchronous step would
    await asyncio.sleep(0.05)
    stop.set()
    await watcher


async def test_a_held_loop_is_recorded_as_lag() -> None:
    lags: list[float] = []
    await _watch_while(0.2, lags)
    assert max(lags) >= 0.15
    # The quiet wake-ups are not charged with the stall.
    assert sorted(lags)[len(lags) // 2] < 0.1


async def test_a_long_lag_is_logged(monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.setenv("EVOLUTIVO_LOOP_LAG_LOG_MS", "100")
    with caplog.at_level(logging.WARNING, logger=loop_lag.__name__):
        await _watch_while(0.2, [])
    held = [r for r in caplog.records if r.getMessage() == "event loop held"]
    # The 0.2 s hold is logged (a busy machine may delay another wake-up past 100 ms too).
    assert max(r.lag_ms for r in held) >= 150  # type: ignore[attr-defined]


async def test_the_histogram_counts_each_wake_up() -> None:
    before = loop_lag.LOOP_LAG.collect()[0].samples
    count_before = next(s.value for s in before if s.name.endswith("_count"))
    stop = asyncio.Event()
    watcher = asyncio.create_task(loop_lag.watch(stop, 0.01))
    await asyncio.sleep(0.1)
    stop.set()
    await watcher
    after = loop_lag.LOOP_LAG.collect()[0].samples
    assert next(s.value for s in after if s.name.endswith("_count")) >= count_before + 3


async def test_a_log_setting_that_is_not_a_number_keeps_the_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EVOLUTIVO_LOOP_LAG_LOG_MS", "fast")
    lags: list[float] = []
    await _watch_while(0.0, lags)  # the watch runs instead of raising
    assert lags
