"""evolutivo_runtime.collector: every collection's pause measured, long ones logged."""

from __future__ import annotations

import gc
import logging
from collections.abc import Iterator

import pytest
from evolutivo_runtime import collector
from prometheus_client import REGISTRY


def _pauses(generation: int) -> float:
    value = REGISTRY.get_sample_value("evolutivo_gc_pause_seconds_count", {"generation": str(generation)})
    return value or 0.0


@pytest.fixture
def watching(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    before = list(gc.callbacks)
    monkeypatch.setenv("EVOLUTIVO_GC_PAUSE_LOG_MS", "0.000001")  # every collection counts as long
    collector.watch_pauses()
    try:
        yield
    finally:
        gc.callbacks[:] = before


def test_each_collection_is_measured_and_a_long_one_logged(watching: None, caplog: pytest.LogCaptureFixture) -> None:
    counted = _pauses(2)
    with caplog.at_level(logging.WARNING, logger="evolutivo_runtime.collector"):
        gc.collect()
    assert _pauses(2) == counted + 1
    logged = [r for r in caplog.records if r.getMessage() == "long garbage collection"]
    # Logging allocates, so a young collection may follow (and be logged) after the full one.
    assert 2 in [r.generation for r in logged]  # type: ignore[attr-defined]


def test_the_log_can_be_turned_off(monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    before = list(gc.callbacks)
    monkeypatch.setenv("EVOLUTIVO_GC_PAUSE_LOG_MS", "0")
    collector.watch_pauses()
    try:
        counted = _pauses(1)
        with caplog.at_level(logging.WARNING, logger="evolutivo_runtime.collector"):
            gc.collect(1)
        assert _pauses(1) == counted + 1
        assert not [r for r in caplog.records if r.getMessage() == "long garbage collection"]
    finally:
        gc.callbacks[:] = before
