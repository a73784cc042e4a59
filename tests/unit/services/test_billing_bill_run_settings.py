"""BILLING_CYCLE_CLOSE_TOGETHER: the cycle closer's passes are set-based unless it says false
(docs/performance.md, "The bill run set-based"; the per-cycle path stays the reference)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, cast

import pytest
from evolutivo_billing.entrypoints.app import definition
from evolutivo_billing.entrypoints.cycle_closer import CycleCloser
from evolutivo_runtime.clock import FixedClock
from evolutivo_runtime.server.app import Runtime


def closer() -> CycleCloser:
    service = definition()
    runtime = Runtime(
        "billing",
        service.settings,
        engine=cast(Any, None),
        sessions=cast(Any, None),
        nc=cast(Any, None),
        js=cast(Any, None),
        clock=FixedClock(datetime(2031, 5, 10, tzinfo=UTC)),
    )
    wiring = service.wire(runtime)
    (found,) = [
        owner for loop in wiring.background if isinstance(owner := getattr(loop, "__self__", None), CycleCloser)
    ]
    return found


# Async: wiring opens the gRPC channels to customer and balance, which need a running loop.
async def test_passes_are_set_based_by_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("BILLING_CYCLE_CLOSE_TOGETHER", raising=False)
    assert closer().together is True


async def test_false_closes_every_cycle_one_by_one(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BILLING_CYCLE_CLOSE_TOGETHER", "false")
    assert closer().together is False
