"""The counters the shipped alerts take increase() of (deploy/k8s/monitoring) have their series from
the start, at 0: a series that first appears at 1 shows no increase, so the first dead letter,
failure, refused usage event or failed delivery would never alert."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

from evolutivo_billing.service_layer import delivery, notices
from evolutivo_charging.entrypoints import usage_subject
from evolutivo_runtime.messaging.consumer import EventConsumer, Subscription
from evolutivo_runtime.server.background import supervise
from prometheus_client import REGISTRY

NONE: Any = None


def sample(name: str, **labels: str) -> float | None:
    return REGISTRY.get_sample_value(name, labels)


def test_a_consumers_failures_and_dead_letters_exist_before_the_first() -> None:
    durable = f"alerted-{uuid.uuid4().hex[:8]}"
    assert sample("evolutivo_dead_letters_total", consumer=durable) is None
    EventConsumer(
        NONE, Subscription(durable=durable, stream="S", subjects=["s"], handlers={}), NONE, NONE, NONE, 10, 3, 30
    )
    assert sample("evolutivo_dead_letters_total", consumer=durable) == 0
    assert sample("evolutivo_consumer_failures_total", consumer=durable) == 0


def test_the_usage_subjects_outcomes_and_dead_letters_exist_before_the_first() -> None:
    durable = f"usage-{uuid.uuid4().hex[:8]}"
    usage_subject.UsageSubscriber(NONE, NONE, NONE, 10, 3, 30, durable=durable)
    assert sample("evolutivo_dead_letters_total", consumer=durable) == 0
    for outcome in ("rated", "refused", "dead_lettered", "retried"):
        assert outcome in usage_subject.MESSAGE_OUTCOMES
        assert sample("evolutivo_charging_usage_messages_total", outcome=outcome) is not None


def test_every_delivery_outcome_exists_before_the_first() -> None:
    assert {"sent", "failed", "retry"} <= set(delivery.DELIVERY_OUTCOMES)
    assert "pending" not in delivery.DELIVERY_OUTCOMES  # counted as "retry"
    for outcome in delivery.DELIVERY_OUTCOMES:
        assert sample("evolutivo_billing_bill_delivery_attempts_total", outcome=outcome) is not None
        assert sample("evolutivo_billing_notice_delivery_attempts_total", outcome=outcome) is not None
    assert notices.NOTICE_DELIVERIES is not delivery.DELIVERIES


async def test_a_background_loops_restarts_exist_before_the_first_and_count_each_crash() -> None:
    task = f"loop-{uuid.uuid4().hex[:8]}"
    stop = asyncio.Event()
    runs = 0

    async def crash_twice_then_stop() -> None:
        nonlocal runs
        runs += 1
        assert sample("evolutivo_background_restarts_total", task=task) == runs - 1
        if runs == 3:
            stop.set()
            return
        raise RuntimeError("the loop fell over")

    await asyncio.wait_for(supervise(task, crash_twice_then_stop, stop), timeout=10)
    assert runs == 3
    assert sample("evolutivo_background_restarts_total", task=task) == 2
