"""Dead letters of the NATS usage subject, against real PostgreSQL and JetStream: a usage event a
call would refuse is dead-lettered under its own event id (platforms publish no Evolutivo-* header),
so DeadLetterAdminService lists it by the id the platform knows."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime

import nats
import pytest
from evolutivo.charging.v1 import usage_pb2
from evolutivo_charging.adapters import events
from evolutivo_charging.adapters.orm import outbox, request_log
from evolutivo_charging.entrypoints.app import MIGRATIONS
from evolutivo_charging.entrypoints.usage_subject import UsageSubscriber
from evolutivo_charging.service_layer.unit_of_work import ChargingUnitOfWork
from evolutivo_runtime.clock import FixedClock
from evolutivo_runtime.db import create_engine, session_factory
from evolutivo_runtime.messaging.dead_letters import DeadLetterQueue
from evolutivo_runtime.messaging.streams import declare_dlq_stream
from evolutivo_runtime.testing import eventually
from evolutivo_runtime.timestamps import to_timestamp
from nats.aio.client import Client as NatsClient

NOW = datetime(2031, 5, 17, 9, 30, tzinfo=UTC)


@pytest.fixture
async def nc(nats_url: str) -> AsyncIterator[NatsClient]:
    client = await nats.connect(nats_url, connect_timeout=5)
    try:
        yield client
    finally:
        await client.close()


async def test_a_refused_usage_event_is_dead_lettered_under_its_event_id(
    migrated_database: Callable[..., Awaitable[str]], nc: NatsClient
) -> None:
    url = await migrated_database("charging_usage_dlq", MIGRATIONS)
    engine = create_engine(url, pool_size=2)
    sessions = session_factory(engine)
    clock = FixedClock(NOW)
    js = nc.jetstream(timeout=5)
    await declare_dlq_stream(js, replicas=1, duplicate_window=120.0)
    dead_letters = DeadLetterQueue(js, "charging", clock)
    source = f"usaged{uuid.uuid4().hex[:10]}"
    subscriber = UsageSubscriber(
        js,
        lambda: ChargingUnitOfWork(sessions, outbox, clock, events.encode, request_log),
        dead_letters,
        batch_size=10,
        max_deliver=3,
        ack_wait=30,
        source=source,
        durable=f"charging-{source}",
    )
    await subscriber.setup()
    try:
        bad = usage_pb2.UsageEvent(
            event_id=f"bad-{uuid.uuid4().hex}",
            account_id=str(uuid.uuid4()),
            event_type="api.call",
            event_time=to_timestamp(NOW),
            quantity="-3",
        )
        await js.publish(subscriber.subject, bad.SerializeToString(), headers={"Nats-Msg-Id": bad.event_id})
        await js.publish(subscriber.subject, b"\xff\xff not protobuf", headers={"Nats-Msg-Id": uuid.uuid4().hex})

        async def letters() -> list[tuple[str, str]] | None:
            await subscriber.poll(timeout=0.5)
            found = [
                (d.event_id, d.error) for d in await dead_letters.list(0, 10_000) if d.consumer == subscriber.durable
            ]
            return found if len(found) == 2 else None

        (named, unnamed) = sorted(await eventually(letters, timeout=20, what="two dead letters"), reverse=True)
        assert named[0] == bad.event_id and "event.quantity" in named[1]
        # A payload that is no UsageEvent has no id to give.
        assert unnamed[0] == ""
    finally:
        await js.delete_stream(subscriber.stream)
        await engine.dispose()
