"""SharedClock over a NATS KV bucket: every instance follows one offset that only moves forward.

These tests run on a NATS server of their own: the clock bucket is global by design, and moving
it forward must not leak into other suites that share the session's NATS server."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import nats
import pytest
from evolutivo.admin.v1 import clock_admin_service_pb2 as clock_pb
from evolutivo_runtime.clock import CLOCK_BUCKET, OFFSET_KEY, SharedClock
from evolutivo_runtime.errors import InvalidArgument
from evolutivo_runtime.server.admin import ClockAdminServicer
from evolutivo_stack.embedded import EmbeddedNats
from google.protobuf.duration_pb2 import Duration
from google.protobuf.timestamp_pb2 import Timestamp
from nats.aio.client import Client as NatsClient
from nats.js import JetStreamContext
from nats.js.errors import KeyNotFoundError

TOLERANCE = timedelta(seconds=2)


@pytest.fixture(scope="module")
def clock_nats_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    server = EmbeddedNats()
    yield server.start(tmp_path_factory.mktemp("clock-nats"))
    server.stop()


@pytest.fixture
async def connections(clock_nats_url: str) -> AsyncIterator[list[NatsClient]]:
    """Three connections, as if three services."""
    clients = [await nats.connect(clock_nats_url) for _ in range(3)]
    try:
        yield clients
    finally:
        for client in clients:
            await client.close()


@pytest.fixture
async def clocks(connections: list[NatsClient]) -> AsyncIterator[list[SharedClock]]:
    """Two started clocks on separate connections (a third connection is left for the test)."""
    started = []
    try:
        for client in connections[:2]:
            clock = SharedClock()
            await clock.start(client.jetstream(timeout=5))
            started.append(clock)
        yield started
    finally:
        for clock in started:
            await clock.stop()


async def stored_offset(js: JetStreamContext) -> timedelta:
    kv = await js.key_value(CLOCK_BUCKET)
    try:
        entry = await kv.get(OFFSET_KEY)
    except KeyNotFoundError:
        return timedelta(0)
    return timedelta(microseconds=int((entry.value or b"0").decode()))


def offset_of(clock: SharedClock) -> timedelta:
    return clock.now() - datetime.now(UTC)


async def test_one_clock_sees_the_other_advance(clocks: list[SharedClock], connections: list[NatsClient]) -> None:
    a, b = clocks
    before = await stored_offset(connections[2].jetstream())
    revision = await a.advance(timedelta(hours=1))
    assert a.revision == revision
    await b.wait_for_revision(revision, timeout=5)
    assert b.revision >= revision
    assert await stored_offset(connections[2].jetstream()) == before + timedelta(hours=1)
    for clock in (a, b):
        assert abs(offset_of(clock) - (before + timedelta(hours=1))) < TOLERANCE
    assert abs(a.now() - b.now()) < TOLERANCE

    # And back the other way.
    revision = await b.advance(timedelta(days=2))
    await a.wait_for_revision(revision, timeout=5)
    assert abs(offset_of(a) - (before + timedelta(hours=1, days=2))) < TOLERANCE


async def test_a_clock_started_later_starts_at_the_shared_offset(
    clocks: list[SharedClock], connections: list[NatsClient]
) -> None:
    a, _ = clocks
    revision = await a.advance(timedelta(minutes=30))
    late = SharedClock()
    await late.start(connections[2].jetstream(timeout=5))
    try:
        assert late.revision == revision  # read at start, no waiting
        assert abs(late.now() - a.now()) < TOLERANCE
    finally:
        await late.stop()


async def test_concurrent_advances_add_up(clocks: list[SharedClock], connections: list[NatsClient]) -> None:
    a, b = clocks
    js = connections[2].jetstream()
    before = await stored_offset(js)
    deltas = [timedelta(seconds=s) for s in range(1, 21)]  # 210 s in all
    revisions = await asyncio.wait_for(
        asyncio.gather(*((a if i % 2 else b).advance(d) for i, d in enumerate(deltas))), timeout=30
    )
    assert len(set(revisions)) == len(deltas), "two advances claimed the same revision"
    assert await stored_offset(js) == before + sum(deltas, timedelta(0))
    last = max(revisions)
    for clock in (a, b):
        await clock.wait_for_revision(last, timeout=5)
        assert clock.revision == last
        assert abs(offset_of(clock) - (before + sum(deltas, timedelta(0)))) < TOLERANCE


async def test_negative_delta_is_refused(clocks: list[SharedClock], connections: list[NatsClient]) -> None:
    a, _ = clocks
    js = connections[2].jetstream()
    await a.advance(timedelta(seconds=1))  # the key exists
    before, revision = await stored_offset(js), a.revision
    with pytest.raises(ValueError, match="forward"):
        await a.advance(timedelta(microseconds=-1))
    with pytest.raises(ValueError, match="forward"):
        await a.advance(timedelta(days=-1))
    assert await stored_offset(js) == before
    assert a.revision == revision


async def test_zero_delta_is_allowed(clocks: list[SharedClock], connections: list[NatsClient]) -> None:
    a, b = clocks
    before = await stored_offset(connections[2].jetstream())
    revision = await a.advance(timedelta(0))
    await b.wait_for_revision(revision, timeout=5)
    assert await stored_offset(connections[2].jetstream()) == before


async def test_waiting_for_a_revision_nobody_wrote_times_out(clocks: list[SharedClock]) -> None:
    a, _ = clocks
    with pytest.raises(TimeoutError):
        await a.wait_for_revision(a.revision + 1000, timeout=0.3)


async def test_clock_admin_service(clocks: list[SharedClock]) -> None:
    a, b = clocks
    admin = ClockAdminServicer(a)
    context: Any = None  # the servicer does not use its context

    got = await admin.GetClock(clock_pb.GetClockRequest(), context)
    assert got.revision == a.revision
    assert abs(got.now.ToDatetime(tzinfo=UTC) - a.now()) < TOLERANCE

    advanced = await admin.AdvanceClock(clock_pb.AdvanceClockRequest(duration=Duration(seconds=3600)), context)
    assert advanced.revision == a.revision
    await b.wait_for_revision(advanced.revision, timeout=5)
    assert abs(advanced.now.ToDatetime(tzinfo=UTC) - b.now()) < TOLERANCE

    target = a.now() + timedelta(days=10)
    target_pb = Timestamp()
    target_pb.FromDatetime(target)
    moved = await admin.SetClock(clock_pb.SetClockRequest(time=target_pb), context)
    assert abs(moved.now.ToDatetime(tzinfo=UTC) - target) < TOLERANCE
    await b.wait_for_revision(moved.revision, timeout=5)
    assert abs(b.now() - target) < TOLERANCE

    with pytest.raises(InvalidArgument) as refused:
        await admin.AdvanceClock(clock_pb.AdvanceClockRequest(duration=Duration(seconds=-1)), context)
    assert refused.value.field == "duration"
    past = Timestamp()
    past.FromDatetime(a.now() - timedelta(hours=1))
    with pytest.raises(InvalidArgument) as refused:
        await admin.SetClock(clock_pb.SetClockRequest(time=past), context)
    assert refused.value.field == "time"
    with pytest.raises(InvalidArgument):
        await admin.SetClock(clock_pb.SetClockRequest(), context)
