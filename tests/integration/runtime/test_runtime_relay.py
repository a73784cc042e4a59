"""OutboxRelay: publishes the outbox to JetStream in order, once, and wakes on LISTEN/NOTIFY."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import asyncpg  # type: ignore[import-untyped,unused-ignore]
import nats
import pytest
from evolutivo_runtime.clock import SystemClock
from evolutivo_runtime.db import plain_url
from evolutivo_runtime.messaging import envelope
from evolutivo_runtime.messaging.relay import OUTBOX_BACKLOG, RELAY_LOCK_KEY, OutboxRelay
from evolutivo_runtime.progress import PROGRESS, RELAY_TASK
from evolutivo_runtime.uow import UnitOfWork
from google.protobuf.wrappers_pb2 import StringValue
from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from prometheus_client import REGISTRY
from runtime_helpers import MessagingDb, ServiceStream, eventually  # type: ignore[import-not-found,unused-ignore]
from sqlalchemy import insert, select, text, update


async def commit_events(db: MessagingDb, stream: ServiceStream, values: list[str]) -> list[uuid.UUID]:
    """One unit of work publishing one event per value; returns the event ids in outbox order."""
    async with UnitOfWork(db.sessions, db.outbox, SystemClock()) as uow:
        events = [uow.publish(stream.subject(), StringValue(value=v)) for v in values]
        await uow.commit()
    return [e.event_id for e in events]


async def stream_event_ids(js: JetStreamContext, stream: ServiceStream) -> list[str]:
    """Nats-Msg-Id of every message of the stream, in stream order."""
    count = await stream.messages(js)
    ids = []
    for seq in range(1, count + 1):
        raw = await js.get_msg(stream.stream, seq=seq)
        assert raw.headers is not None
        assert raw.headers[envelope.MSG_ID] == raw.headers[envelope.EVENT_ID]
        ids.append(raw.headers[envelope.MSG_ID])
    return ids


class ObservedRelay(OutboxRelay):
    """Signals `parked` when the run loop has published everything and is about to wait."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.parked = asyncio.Event()

    async def _update_backlog(self) -> None:
        await super()._update_backlog()
        # run() goes on to clear its wake-up and wait without yielding in between, so by the
        # time a waiter on `parked` runs, the relay is waiting.
        self.parked.set()


@contextlib.asynccontextmanager
async def running(relay: OutboxRelay) -> AsyncIterator[asyncio.Event]:
    stop = asyncio.Event()
    task = asyncio.create_task(relay.run(stop))
    try:
        yield stop
    finally:
        stop.set()
        await asyncio.wait_for(task, timeout=10)


def _relay(cls: type[OutboxRelay], db: MessagingDb, js: JetStreamContext, batch_size: int, poll: float) -> Any:
    return cls(db.engine, db.url, db.outbox, js, batch_size=batch_size, poll_seconds=poll)


async def test_publish_batch_publishes_in_seq_order_and_deletes(
    messaging_db: MessagingDb, js: JetStreamContext, service_stream: ServiceStream
) -> None:
    db = messaging_db
    ids = await commit_events(db, service_stream, ["a", "b", "c"])
    ids += await commit_events(db, service_stream, ["d", "e"])
    relay = _relay(OutboxRelay, db, js, batch_size=3, poll=1.0)

    assert await relay.publish_batch() == 3
    assert await db.count(db.outbox) == 2
    assert await stream_event_ids(js, service_stream) == [str(i) for i in ids[:3]]

    assert await relay.publish_batch() == 2
    assert await relay.publish_batch() == 0
    assert await db.count(db.outbox) == 0
    assert await stream_event_ids(js, service_stream) == [str(i) for i in ids]

    # Subject, payload and all the envelope headers travel unchanged.
    raw = await js.get_msg(service_stream.stream, seq=4)
    assert raw.subject == service_stream.subject()
    assert StringValue.FromString(raw.data or b"").value == "d"
    assert raw.headers is not None
    assert raw.headers[envelope.EVENT_TYPE] == "google.protobuf.StringValue"
    assert envelope.OCCURRED_AT in raw.headers


async def test_republishing_within_the_duplicate_window_is_dropped(
    messaging_db: MessagingDb, js: JetStreamContext, service_stream: ServiceStream
) -> None:
    """A crash between JetStream's ack and the delete republishes the rows: JetStream drops them."""
    db = messaging_db
    await commit_events(db, service_stream, ["a", "b", "c"])
    async with db.engine.connect() as conn:
        rows = [dict(r._mapping) for r in (await conn.execute(select(db.outbox).order_by(db.outbox.c.seq))).all()]
    relay = _relay(OutboxRelay, db, js, batch_size=10, poll=1.0)
    assert await relay.publish_batch() == 3
    assert await service_stream.messages(js) == 3

    async with db.engine.begin() as conn:  # the rows are back, as if the delete never committed
        await conn.execute(insert(db.outbox), [{k: v for k, v in r.items() if k != "seq"} for r in rows])
    assert await relay.publish_batch() == 3
    assert await db.count(db.outbox) == 0
    assert await service_stream.messages(js) == 3


async def test_a_failed_publish_keeps_only_the_failed_event_for_the_next_pass(
    messaging_db: MessagingDb, js: JetStreamContext, service_stream: ServiceStream
) -> None:
    """The acknowledged events of the batch are in the stream: they leave the outbox (they are not
    published again on every retry); the failed one stays and goes on a later pass."""
    db = messaging_db
    ids = await commit_events(db, service_stream, ["a", "b", "c"])
    async with db.engine.begin() as conn:  # the second event's subject is captured by no stream
        await conn.execute(
            update(db.outbox).where(db.outbox.c.event_id == ids[1]).values(subject="nowhere.evolutivo.test")
        )
    relay = _relay(OutboxRelay, db, js, batch_size=10, poll=1.0)
    with pytest.raises(RuntimeError, match="1 of 3 publishes failed"):
        await relay.publish_batch()
    assert await db.count(db.outbox) == 1
    assert await stream_event_ids(js, service_stream) == [str(ids[0]), str(ids[2])]

    async with db.engine.begin() as conn:
        await conn.execute(
            update(db.outbox).where(db.outbox.c.event_id == ids[1]).values(subject=service_stream.subject())
        )
    assert await relay.publish_batch() == 1
    assert await db.count(db.outbox) == 0
    assert await stream_event_ids(js, service_stream) == [str(ids[0]), str(ids[2]), str(ids[1])]


async def test_the_backlog_gauge_counts_the_outbox_while_every_publish_fails(
    messaging_db: MessagingDb, js: JetStreamContext, service_stream: ServiceStream
) -> None:
    """The gauge the backlog alerts read (deploy/k8s/monitoring/alerts.yaml) is counted after a
    failed pass too: while JetStream refuses every publish it shows the events waiting."""
    db = messaging_db
    await commit_events(db, service_stream, ["a", "b", "c"])
    async with db.engine.begin() as conn:  # a subject no stream captures: every publish fails
        await conn.execute(update(db.outbox).values(subject="nowhere.evolutivo.test"))
    OUTBOX_BACKLOG.set(0)
    relay = _relay(ObservedRelay, db, js, batch_size=10, poll=0.05)
    async with running(relay):
        await asyncio.wait_for(relay.parked.wait(), timeout=10)
        assert REGISTRY.get_sample_value("evolutivo_outbox_backlog") == 3
        assert await service_stream.messages(js) == 0
        async with db.engine.begin() as conn:  # JetStream takes them again: the stop drains them
            await conn.execute(update(db.outbox).values(subject=service_stream.subject()))
    assert await db.count(db.outbox) == 0
    assert await service_stream.messages(js) == 3


class BacklogRecordingRelay(ObservedRelay):
    """Records the backlog gauge each time the relay counts it."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.counted: list[float | None] = []

    async def _count_backlog(self) -> None:
        await super()._count_backlog()
        self.counted.append(REGISTRY.get_sample_value("evolutivo_outbox_backlog"))


async def test_the_backlog_gauge_follows_a_drain_of_full_batches(
    messaging_db: MessagingDb, js: JetStreamContext, service_stream: ServiceStream
) -> None:
    """While every batch comes back full the relay keeps draining, and the gauge goes down as it
    does (not only once the outbox is drained)."""
    db = messaging_db
    await commit_events(db, service_stream, ["a", "b", "c"])
    relay = BacklogRecordingRelay(
        db.engine, db.url, db.outbox, js, batch_size=1, poll_seconds=1.0, backlog_every_seconds=0.0
    )
    async with running(relay):
        await asyncio.wait_for(relay.parked.wait(), timeout=10)
    assert relay.counted[:3] == [2, 1, 0]


async def test_the_relay_beats_each_time_round(
    messaging_db: MessagingDb, js: JetStreamContext, service_stream: ServiceStream
) -> None:
    """The heartbeat EvolutivoBackgroundLoopStuck watches (deploy/k8s/monitoring)."""
    PROGRESS.labels(RELAY_TASK).set(0)
    relay = _relay(ObservedRelay, messaging_db, js, batch_size=10, poll=0.05)
    async with running(relay):
        await asyncio.wait_for(relay.parked.wait(), timeout=10)
        PROGRESS.labels(RELAY_TASK).set(0)  # each time round, not only at the start
        await eventually(lambda: _beaten_since(RELAY_TASK, time.time() - 5), within=5, what="a beat")


async def _beaten_since(task: str, since: float) -> bool:
    beat = REGISTRY.get_sample_value("evolutivo_background_progress_timestamp_seconds", {"task": task})
    return beat is not None and beat >= since


async def _outbox_event_ids(db: MessagingDb) -> list[uuid.UUID]:
    async with db.engine.connect() as conn:
        return list((await conn.scalars(select(db.outbox.c.event_id).order_by(db.outbox.c.seq))).all())


async def test_an_ack_that_never_comes_fails_its_event_after_the_ack_timeout(
    messaging_db: MessagingDb, nc: NatsClient, js: JetStreamContext, service_stream: ServiceStream
) -> None:
    """A publish whose ack is lost (here: a plain subscriber takes it and never answers) fails its
    event after the ack timeout instead of holding the pass, its transaction and the leader lock
    for good; the events acknowledged leave the outbox and the lost one goes on a later pass."""
    db = messaging_db
    blackhole = f"blackhole.{uuid.uuid4().hex}"
    swallowed = await nc.subscribe(blackhole)  # takes the message, never replies
    ids = await commit_events(db, service_stream, ["a", "b", "c"])
    async with db.engine.begin() as conn:
        await conn.execute(update(db.outbox).where(db.outbox.c.event_id == ids[1]).values(subject=blackhole))
    relay = OutboxRelay(db.engine, db.url, db.outbox, js, batch_size=10, poll_seconds=1.0, ack_timeout_seconds=0.5)
    with pytest.raises(RuntimeError, match="1 of 3 publishes failed: TimeoutError"):
        await asyncio.wait_for(relay.publish_batch(), timeout=10)
    assert await stream_event_ids(js, service_stream) == [str(ids[0]), str(ids[2])]
    assert await _outbox_event_ids(db) == [ids[1]]
    # The leader lock went with the pass: the next one publishes the event once it can.
    await swallowed.unsubscribe()
    async with db.engine.begin() as conn:
        await conn.execute(update(db.outbox).values(subject=service_stream.subject()))
    assert await asyncio.wait_for(relay.publish_batch(), timeout=10) == 1
    assert await stream_event_ids(js, service_stream) == [str(i) for i in (ids[0], ids[2], ids[1])]


async def test_a_publish_that_cannot_be_sent_fails_it_and_the_rest_of_its_batch(
    messaging_db: MessagingDb, js: JetStreamContext, service_stream: ServiceStream
) -> None:
    """An event NATS refuses to take (here: over its maximum payload) fails with the events after
    it in the batch, which were not sent; those before it were acknowledged and leave."""
    db = messaging_db
    ids = await commit_events(db, service_stream, ["a", "b", "c"])
    too_big = b"x" * (js._nc.max_payload + 1)
    async with db.engine.begin() as conn:
        await conn.execute(update(db.outbox).where(db.outbox.c.event_id == ids[1]).values(payload=too_big))
    relay = _relay(OutboxRelay, db, js, batch_size=10, poll=1.0)
    for _ in range(3):  # a pass each time: none leaves an in-flight slot of nats-py's taken
        with pytest.raises(RuntimeError, match=r"2 of [23] publishes failed"):
            await asyncio.wait_for(relay.publish_batch(), timeout=10)
        assert js.publish_async_pending() == 0
    assert await stream_event_ids(js, service_stream) == [str(ids[0])]
    assert await _outbox_event_ids(db) == ids[1:]


class Clock:
    """A monotonic clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


@dataclass
class OpenWriter:
    """An event whose outbox row is written, and its seq taken, by a transaction still open."""

    event_id: str
    seq: int
    row: dict[str, Any]
    commit: bool = True  # False: it rolls back when the block ends


@contextlib.asynccontextmanager
async def outbox_row_left_uncommitted(db: MessagingDb, stream: ServiceStream, value: str) -> AsyncIterator[OpenWriter]:
    """As a transaction that takes its seq before another one but commits (or rolls back) after
    it: the row is written in a transaction that ends when the block does."""
    (event_id,) = await commit_events(db, stream, [value])
    async with db.engine.begin() as conn:
        taken = db.outbox.delete().where(db.outbox.c.event_id == event_id).returning(db.outbox)
        row = {k: v for k, v in (await conn.execute(taken)).one()._mapping.items() if k != "seq"}
    async with db.engine.connect() as conn:
        transaction = await conn.begin()
        seq = (await conn.execute(insert(db.outbox).values(row).returning(db.outbox.c.seq))).scalar_one()
        writer = OpenWriter(str(event_id), seq, row)
        try:
            yield writer
        finally:
            await (transaction.commit() if writer.commit else transaction.rollback())


def _clocked_relay(db: MessagingDb, js: JetStreamContext, clock: Clock) -> OutboxRelay:
    return OutboxRelay(
        db.engine, db.url, db.outbox, js, batch_size=10, poll_seconds=30.0, sweep_seconds=1000.0, clock=clock
    )


async def test_a_lower_seq_committed_after_higher_ones_holds_passes_back_until_it_commits(
    messaging_db: MessagingDb, js: JetStreamContext, service_stream: ServiceStream
) -> None:
    """Passes read after what the relay published, but not past a lower seq whose transaction is
    still in progress, however long it takes: once it commits, the next pass publishes it."""
    db, clock = messaging_db, Clock()
    relay = _clocked_relay(db, js, clock)
    (first,) = await commit_events(db, service_stream, ["first"])
    assert await relay.publish_batch() == 1  # the first pass is a sweep
    async with outbox_row_left_uncommitted(db, service_stream, "took its seq before the next") as late:
        (early,) = await commit_events(db, service_stream, ["committed before it"])
        clock.now = 0.1
        assert await relay.publish_batch() == 1
        clock.now = 500.0  # long after: no timer gives the seq up
        (later,) = await commit_events(db, service_stream, ["committed later"])
        assert await relay.publish_batch() == 1
        assert await relay.publish_batch() == 0
    clock.now = 500.1
    assert await relay.publish_batch() == 1
    published = [str(first), str(early), str(later), late.event_id]
    assert await stream_event_ids(js, service_stream) == published
    assert await db.count(db.outbox) == 0


async def test_a_seq_rolled_back_stops_holding_passes_back_and_only_a_sweep_reads_below_the_top(
    messaging_db: MessagingDb, js: JetStreamContext, service_stream: ServiceStream
) -> None:
    """Once the transaction that may hold an unseen seq has ended, one pass reads it and the cursor
    forgets it: a row that later appears below what the relay published (here, the rolled-back seq
    written by hand, as a sequence set back by a restore would) waits for a sweep."""
    db, clock = messaging_db, Clock()
    relay = _clocked_relay(db, js, clock)
    assert await relay.publish_batch() == 0  # the first pass is a sweep
    async with outbox_row_left_uncommitted(db, service_stream, "rolled back") as rolled_back:
        rolled_back.commit = False
        (early,) = await commit_events(db, service_stream, ["committed"])
        clock.now = 0.1
        assert await relay.publish_batch() == 1
    clock.now = 0.2
    assert await relay.publish_batch() == 0  # the writer ended: this pass reads the gap one last time
    async with db.engine.begin() as conn:
        await conn.execute(
            text(
                "INSERT INTO outbox (seq, event_id, subject, event_type, payload, headers) OVERRIDING SYSTEM VALUE "
                "VALUES (:seq, :event_id, :subject, :event_type, :payload, CAST(:headers AS jsonb))"
            ),
            rolled_back.row | {"seq": rolled_back.seq, "headers": json.dumps(rolled_back.row["headers"])},
        )
    clock.now = 0.3
    assert await relay.publish_batch() == 0
    assert await db.count(db.outbox) == 1
    await relay.drain()  # a sweep
    assert await db.count(db.outbox) == 0
    assert await stream_event_ids(js, service_stream) == [str(early), rolled_back.event_id]


async def test_a_writer_that_does_not_end_is_warned_about_once_a_sweep_time_has_passed(
    messaging_db: MessagingDb, js: JetStreamContext, service_stream: ServiceStream, caplog: pytest.LogCaptureFixture
) -> None:
    db, clock = messaging_db, Clock()
    relay = _clocked_relay(db, js, clock)
    assert await relay.publish_batch() == 0
    async with outbox_row_left_uncommitted(db, service_stream, "left open") as stuck:
        await commit_events(db, service_stream, ["committed"])
        clock.now = 0.1
        assert await relay.publish_batch() == 1
        assert await relay.publish_batch() == 0  # the writers read: the open transaction among them
        with caplog.at_level(logging.WARNING, logger="evolutivo_runtime.messaging.relay"):
            clock.now = 999.0
            relay.warn_of_a_stuck_gap()
            assert not caplog.records  # not yet a sweep's time (1,000 s)
            clock.now = 1000.2
            relay.warn_of_a_stuck_gap()
            relay.warn_of_a_stuck_gap()
        (warning,) = caplog.records
        assert warning.outbox_seq <= stuck.seq  # type: ignore[attr-defined]  # the gap it is in
        assert len(warning.writers) == 1  # type: ignore[attr-defined]


async def test_jetstream_drops_a_second_publish_with_the_same_msg_id(
    js: JetStreamContext, service_stream: ServiceStream
) -> None:
    event_id = str(uuid.uuid4())
    first = await js.publish(service_stream.subject(), b"1", headers={envelope.MSG_ID: event_id})
    second = await js.publish(service_stream.subject(), b"2", headers={envelope.MSG_ID: event_id})
    assert not first.duplicate
    assert second.duplicate
    assert second.seq == first.seq
    assert await service_stream.messages(js) == 1


async def test_another_leader_holding_the_lock_blocks_publishing(
    messaging_db: MessagingDb, js: JetStreamContext, service_stream: ServiceStream
) -> None:
    db = messaging_db
    await commit_events(db, service_stream, ["a"])
    relay = _relay(OutboxRelay, db, js, batch_size=10, poll=1.0)
    leader = await asyncpg.connect(plain_url(db.url))
    try:
        assert await leader.fetchval("SELECT pg_try_advisory_lock($1)", RELAY_LOCK_KEY)
        assert await relay.publish_batch() == 0
        assert await service_stream.messages(js) == 0
        assert await db.count(db.outbox) == 1
        await leader.execute("SELECT pg_advisory_unlock($1)", RELAY_LOCK_KEY)
        assert await relay.publish_batch() == 1
        assert await service_stream.messages(js) == 1
    finally:
        await leader.close()


async def test_run_wakes_on_notify_long_before_its_poll(
    messaging_db: MessagingDb, js: JetStreamContext, service_stream: ServiceStream
) -> None:
    db = messaging_db
    relay = _relay(ObservedRelay, db, js, batch_size=10, poll=30.0)  # polling alone would take 30 s
    async with running(relay):
        for expected in (1, 2, 3):
            await asyncio.wait_for(relay.parked.wait(), timeout=5)
            relay.parked.clear()
            await commit_events(db, service_stream, [f"v{expected}"])
            waited = await eventually(
                lambda n=expected: _has(js, service_stream, n), within=5, what=f"{expected} published events"
            )
            assert waited < 5
    assert await db.count(db.outbox) == 0


async def test_stop_drains_what_was_committed(
    messaging_db: MessagingDb, js: JetStreamContext, service_stream: ServiceStream
) -> None:
    db = messaging_db
    relay = _relay(ObservedRelay, db, js, batch_size=2, poll=30.0)
    stop = asyncio.Event()
    task = asyncio.create_task(relay.run(stop))
    await asyncio.wait_for(relay.parked.wait(), timeout=5)
    await commit_events(db, service_stream, ["a", "b", "c", "d", "e"])
    stop.set()
    await asyncio.wait_for(task, timeout=10)
    assert await service_stream.messages(js) == 5
    assert await db.count(db.outbox) == 0


async def _has(js: JetStreamContext, stream: ServiceStream, n: int) -> bool:
    return bool(await stream.messages(js) >= n)


class CommitWhilePublishing(ObservedRelay):
    """Commits one more event right after a batch was published (as a concurrent request would),
    and returns once that commit's NOTIFY has reached the relay."""

    def __init__(self, *args: Any, commit: Callable[[], Awaitable[object]], **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._commit: Callable[[], Awaitable[object]] | None = commit

    async def publish_batch(self, *, sweep: bool = False) -> int:
        published = await super().publish_batch(sweep=sweep)
        if published and self._commit is not None:
            commit, self._commit = self._commit, None
            await commit()
            await asyncio.wait_for(self._wakeup.wait(), timeout=5)
        return published


async def test_notify_arriving_while_a_batch_is_published_is_not_lost(
    messaging_db: MessagingDb, js: JetStreamContext, service_stream: ServiceStream
) -> None:
    """A commit that lands while the relay is busy publishing must not wait for the next poll:
    run() clears its wake-up *after* publishing, which throws that commit's NOTIFY away."""
    db = messaging_db
    relay = _relay_with_commit(db, js, lambda: commit_events(db, service_stream, ["second"]))
    async with running(relay):
        await asyncio.wait_for(relay.parked.wait(), timeout=5)
        await commit_events(db, service_stream, ["first"])
        await eventually(lambda: _has(js, service_stream, 1), within=5, what="the first event")
        await eventually(lambda: _has(js, service_stream, 2), within=5, what="the event committed during publishing")


def _relay_with_commit(
    db: MessagingDb, js: JetStreamContext, commit: Callable[[], Awaitable[object]]
) -> CommitWhilePublishing:
    return CommitWhilePublishing(db.engine, db.url, db.outbox, js, batch_size=10, poll_seconds=30.0, commit=commit)


@pytest.fixture
async def relay_connections(nats_url: str) -> AsyncIterator[list[NatsClient]]:
    clients = [await nats.connect(nats_url) for _ in range(2)]
    try:
        yield clients
    finally:
        for client in clients:
            await client.close()


async def test_two_relays_publish_each_event_exactly_once_in_order(
    messaging_db: MessagingDb,
    nc: NatsClient,
    js: JetStreamContext,
    service_stream: ServiceStream,
    relay_connections: list[NatsClient],
) -> None:
    db = messaging_db
    # A core subscription sees every publish, including those JetStream would drop as duplicates.
    seen: list[str] = []

    async def record(msg: Msg) -> None:
        seen.append((msg.headers or {}).get(envelope.MSG_ID, ""))

    sub = await nc.subscribe(service_stream.all_subjects, cb=record)
    await nc.flush()

    relays = [
        _relay(OutboxRelay, db, client.jetstream(timeout=5), batch_size=7, poll=0.05) for client in relay_connections
    ]
    expected: list[uuid.UUID] = []
    async with running(relays[0]), running(relays[1]):
        for round_ in range(30):
            expected += await commit_events(db, service_stream, [f"{round_}-{i}" for i in range(5)])
        total = len(expected)
        await eventually(lambda: _has(js, service_stream, total), within=20, what=f"{total} events in the stream")
        await eventually(lambda: _outbox_empty(db), within=5, what="an empty outbox")
    await nc.flush()
    await sub.unsubscribe()

    assert await service_stream.messages(js) == total
    assert sorted(seen) == sorted(str(i) for i in expected), "an event was published more than once (or not at all)"
    assert await stream_event_ids(js, service_stream) == [str(i) for i in expected]


async def _outbox_empty(db: MessagingDb) -> bool:
    return bool(await db.count(db.outbox) == 0)


class PassRecordingRelay(ObservedRelay):
    """Records each pass that found events: when it started and how many it published."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.passes: list[tuple[float, int]] = []

    async def publish_batch(self, *, sweep: bool = False) -> int:
        started = asyncio.get_running_loop().time()
        found = await super().publish_batch(sweep=sweep)
        if found:
            self.passes.append((started, found))
        return found


async def test_with_a_linger_a_quiet_commit_goes_at_once_and_busy_ones_together(
    messaging_db: MessagingDb, js: JetStreamContext, service_stream: ServiceStream
) -> None:
    """At most one pass per linger: a commit after a quiet spell is published at once; commits
    right after a pass wait out the rest of the linger and leave in one pass."""
    db = messaging_db
    linger = 1.5
    relay = PassRecordingRelay(db.engine, db.url, db.outbox, js, batch_size=10, poll_seconds=30.0, linger=linger)
    loop = asyncio.get_running_loop()
    async with running(relay):
        await asyncio.wait_for(relay.parked.wait(), timeout=5)  # the start-up pass found nothing
        await asyncio.sleep(linger)  # quiet for longer than the linger
        committed = loop.time()
        await commit_events(db, service_stream, ["after a quiet spell"])
        await eventually(lambda: _has(js, service_stream, 1), within=5, what="the first event")
        (first_pass, first_found), *_ = relay.passes
        assert first_found == 1
        assert first_pass - committed < linger / 2  # not held for the linger
        await commit_events(db, service_stream, ["soon after, 1"])
        await commit_events(db, service_stream, ["soon after, 2"])
        await eventually(lambda: _has(js, service_stream, 3), within=10, what="the two later events")
    assert len(relay.passes) == 2
    second_pass, second_found = relay.passes[1]
    assert second_found == 2  # both commits in one pass
    assert second_pass - first_pass >= linger - 0.05
