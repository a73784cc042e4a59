"""EventConsumer and DeadLetterQueue against real PostgreSQL and JetStream: each event applied
exactly once, failures isolated per message, retried, dead-lettered and replayed."""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any

import pytest
from evolutivo_runtime.clock import SystemClock
from evolutivo_runtime.locks import advisory_xact_locks
from evolutivo_runtime.messaging import envelope
from evolutivo_runtime.messaging.consumer import (
    CONSUMER_PENDING,
    BatchHandler,
    EventConsumer,
    EventHandler,
    Subscription,
)
from evolutivo_runtime.messaging.dead_letters import DeadLetter, DeadLetterQueue
from evolutivo_runtime.progress import PROGRESS
from evolutivo_runtime.uow import UnitOfWork
from google.protobuf.wrappers_pb2 import StringValue
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from prometheus_client import REGISTRY
from runtime_helpers import MessagingDb, ServiceStream, event_headers, eventually  # type: ignore[import-not-found,unused-ignore]
from sqlalchemy import event, insert, select
from support.jetstream import FakeMsg, process

EVENT_TYPE = StringValue.DESCRIPTOR.full_name
FOLLOW_UP_SUBJECT = "evolutivo.consumertest.v1.followed.up"


@dataclass
class Handler:
    """Applies StringValue events: writes an item and publishes a follow-up event; raises for the
    values in `broken` *after* writing both, so the savepoint must undo them."""

    broken: set[str] = field(default_factory=set)
    attempts: Counter[str] = field(default_factory=Counter)
    applied: list[str] = field(default_factory=list)
    metas: list[envelope.EventMeta] = field(default_factory=list)
    delay: float = 0.0
    db: MessagingDb | None = None

    async def handle(self, uow: UnitOfWork, message: StringValue, meta: envelope.EventMeta) -> None:
        assert self.db is not None
        self.attempts[message.value] += 1
        await uow.session.execute(
            insert(self.db.items).values(id=f"{message.value}:{meta.event_id}", value=message.value)
        )
        uow.publish(FOLLOW_UP_SUBJECT, StringValue(value=f"after-{message.value}"))
        if self.delay:
            await asyncio.sleep(self.delay)
        if message.value in self.broken:
            raise RuntimeError(f"cannot apply {message.value}")
        self.applied.append(message.value)
        self.metas.append(meta)


@dataclass
class Setup:
    db: MessagingDb
    js: JetStreamContext
    stream: ServiceStream
    handler: Handler
    subscription: Subscription[UnitOfWork]
    dead_letters: DeadLetterQueue
    service: str

    def consumer(
        self, batch_size: int = 10, max_deliver: int = 3, ack_wait: float = 30.0, check_seconds: float = 10.0
    ) -> EventConsumer[UnitOfWork]:
        return EventConsumer(
            self.js,
            self.subscription,
            lambda: UnitOfWork(self.db.sessions, self.db.outbox, SystemClock()),
            self.db.inbox,
            self.dead_letters,
            batch_size=batch_size,
            max_deliver=max_deliver,
            ack_wait=ack_wait,
            check_seconds=check_seconds,
        )

    async def publish(
        self, value: str, event_id: uuid.UUID | None = None, msg_id: str | None = None, event_type: str = EVENT_TYPE
    ) -> uuid.UUID:
        event_id = event_id or uuid.uuid4()
        headers = event_headers(event_id, event_type, msg_id=msg_id)
        ack = await self.js.publish(
            self.stream.subject(), StringValue(value=value).SerializeToString(), headers=headers
        )
        assert not ack.duplicate
        return event_id

    async def items(self) -> list[str]:
        async with self.db.engine.connect() as conn:
            return sorted((await conn.execute(select(self.db.items.c.value))).scalars().all())

    async def follow_ups(self) -> list[str]:
        async with self.db.engine.connect() as conn:
            payloads = (await conn.execute(select(self.db.outbox.c.payload))).scalars().all()
        return sorted(StringValue.FromString(p).value for p in payloads)

    async def inbox(self) -> list[tuple[str, uuid.UUID, str]]:
        async with self.db.engine.connect() as conn:
            rows = (await conn.execute(select(self.db.inbox))).all()
        return sorted((r.consumer, r.event_id, r.event_type) for r in rows)

    async def settled(self, delivered: int) -> bool:
        """The durable has delivered `delivered` stream messages and none waits for an ack."""
        info = await self.js.consumer_info(self.stream.stream, self.subscription.durable)
        return (
            info.delivered is not None
            and info.delivered.stream_seq == delivered
            and info.num_ack_pending == 0
            and info.num_pending == 0
            and (info.num_redelivered or 0) == 0
        )

    async def letters(self) -> list[DeadLetter]:
        return await self.dead_letters.list(0, 100)


@pytest.fixture
async def setup(messaging_db: MessagingDb, js: JetStreamContext, service_stream: ServiceStream) -> Setup:
    handler = Handler(db=messaging_db)
    subscription: Subscription[UnitOfWork] = Subscription(
        durable=f"d{uuid.uuid4().hex[:10]}",
        stream=service_stream.stream,
        subjects=[service_stream.all_subjects],
        handlers={EVENT_TYPE: EventHandler(StringValue, handler.handle)},
    )
    service = f"c{uuid.uuid4().hex[:10]}"  # the consuming service: its own dead-letter subjects
    return Setup(
        messaging_db, js, service_stream, handler, subscription, DeadLetterQueue(js, service, SystemClock()), service
    )


@contextlib.asynccontextmanager
async def running(*consumers: EventConsumer[Any]) -> AsyncIterator[None]:
    stop = asyncio.Event()
    tasks = [asyncio.create_task(c.run(stop)) for c in consumers]
    try:
        yield
    finally:
        stop.set()
        await asyncio.wait_for(asyncio.gather(*tasks), timeout=15)


async def test_applies_each_event_once(setup: Setup) -> None:
    consumer = setup.consumer()
    await consumer.setup()
    ids = [await setup.publish(f"v{i}") for i in range(5)]
    started = datetime.now(UTC)
    async with running(consumer):
        ids += [await setup.publish(f"v{i}") for i in range(5, 10)]
        await eventually(lambda: setup.settled(10), within=15, what="10 events acked")

    values = [f"v{i}" for i in range(10)]
    assert sorted(setup.handler.applied) == sorted(values)
    assert setup.handler.attempts == Counter(values)
    assert await setup.items() == sorted(values)
    assert await setup.follow_ups() == sorted(f"after-{v}" for v in values)
    assert await setup.inbox() == sorted((setup.subscription.durable, i, EVENT_TYPE) for i in ids)

    metas = sorted(setup.handler.metas, key=lambda m: m.stream_sequence)
    assert [m.stream_sequence for m in metas] == list(range(1, 11))
    assert [m.event_id for m in metas] == ids
    assert {m.event_type for m in metas} == {EVENT_TYPE}
    assert {m.subject for m in metas} == {setup.stream.subject()}
    assert all(m.occurred_at.tzinfo is not None for m in metas)
    assert all(abs((m.occurred_at - started).total_seconds()) < 60 for m in metas)
    assert await setup.letters() == []


async def test_redelivered_event_id_is_skipped_by_the_inbox(setup: Setup) -> None:
    """The same event under another Nats-Msg-Id (a replay, a republish after the duplicate
    window) is stored twice by JetStream; the inbox applies it once."""
    consumer = setup.consumer()
    await consumer.setup()
    event_id = await setup.publish("once", msg_id="first-publish")
    async with running(consumer):
        await eventually(lambda: setup.settled(1), within=10, what="the first delivery acked")
        await setup.publish("once", event_id=event_id, msg_id="second-publish")
        await eventually(lambda: setup.settled(2), within=10, what="the second delivery acked")

    assert await setup.stream.messages(setup.js) == 2
    assert setup.handler.attempts == Counter({"once": 1})
    assert await setup.items() == ["once"]
    assert await setup.follow_ups() == ["after-once"]
    assert await setup.inbox() == [(setup.subscription.durable, event_id, EVENT_TYPE)]


async def test_duplicate_inside_one_batch_is_applied_once(setup: Setup) -> None:
    consumer = setup.consumer()
    await consumer.setup()
    event_id = await setup.publish("twin", msg_id="a")
    await setup.publish("twin", event_id=event_id, msg_id="b")
    psub = await setup.js.pull_subscribe_bind(setup.subscription.durable, stream=setup.stream.stream)
    messages = await psub.fetch(2, timeout=5)
    assert len(messages) == 2
    await consumer.process(messages)

    await eventually(lambda: setup.settled(2), within=5, what="both copies acked")
    assert setup.handler.attempts == Counter({"twin": 1})
    assert await setup.items() == ["twin"]
    assert await setup.inbox() == [(setup.subscription.durable, event_id, EVENT_TYPE)]


async def test_event_type_without_handler_is_recorded_and_acked(setup: Setup) -> None:
    consumer = setup.consumer()
    await consumer.setup()
    event_id = await setup.publish("from the future", event_type="evolutivo.future.v9.Unknown")
    async with running(consumer):
        await eventually(lambda: setup.settled(1), within=10, what="the unknown event acked")
    assert setup.handler.attempts == Counter()
    assert await setup.inbox() == [(setup.subscription.durable, event_id, "evolutivo.future.v9.Unknown")]
    assert await setup.letters() == []


async def test_failing_message_is_isolated_retried_dead_lettered_and_replayed(setup: Setup) -> None:
    handler = setup.handler
    handler.broken = {"bad"}
    consumer = setup.consumer(batch_size=10, max_deliver=2)
    await consumer.setup()
    good1 = await setup.publish("good1")
    bad = await setup.publish("bad")
    good2 = await setup.publish("good2")

    # 1. One batch: the failure of "bad" neither blocks nor undoes the other two.
    psub = await setup.js.pull_subscribe_bind(setup.subscription.durable, stream=setup.stream.stream)
    batch = await psub.fetch(3, timeout=5)
    assert [StringValue.FromString(m.data).value for m in batch] == ["good1", "bad", "good2"]
    await consumer.process(batch)
    assert sorted(handler.applied) == ["good1", "good2"]
    assert await setup.items() == ["good1", "good2"]  # the savepoint rolled back "bad"'s write
    assert await setup.follow_ups() == ["after-good1", "after-good2"]  # ... and its event
    assert {e for _, e, _ in await setup.inbox()} == {good1, good2}
    info = await setup.js.consumer_info(setup.stream.stream, setup.subscription.durable)
    assert info.num_ack_pending == 1  # "bad" was nak'ed (with a delay), the others acked

    # 2. Retried after the nak delay; at max_deliver it goes to the dead-letter queue, acked.
    dead_lettered = _dead_lettered(setup)
    async with running(consumer):
        await eventually(lambda: _has_letters(setup, 1), within=20, what="the dead letter")
        await eventually(lambda: _no_ack_pending(setup), within=10, what="the dead letter acked")
    assert handler.attempts["bad"] == 2
    assert _dead_lettered(setup) == dead_lettered + 1, "counted for the operator's alert"
    [letter] = await setup.letters()
    assert letter.event_id == str(bad)
    assert letter.event_type == EVENT_TYPE
    assert letter.original_subject == setup.stream.subject()
    assert letter.consumer == setup.subscription.durable
    assert letter.attempts == 2
    assert letter.error == "RuntimeError: cannot apply bad"
    assert StringValue.FromString(letter.payload).value == "bad"
    assert abs((letter.dead_time - datetime.now(UTC)).total_seconds()) < 60
    assert await setup.dead_letters.get(letter.sequence) == letter
    assert await setup.items() == ["good1", "good2"]
    assert await setup.follow_ups() == ["after-good1", "after-good2"]
    # Another service's queue does not list it.
    assert await DeadLetterQueue(setup.js, f"other{uuid.uuid4().hex[:8]}", SystemClock()).list(0, 100) == []

    # 3. The handler is fixed; the replay is applied exactly once and leaves the queue.
    handler.broken.clear()
    await setup.dead_letters.replay(letter)
    assert await setup.letters() == []
    assert await setup.dead_letters.get(letter.sequence) is None
    async with running(consumer):
        await eventually(lambda: _has_items(setup, 3), within=10, what="the replayed event applied")
        await eventually(lambda: _no_ack_pending(setup), within=10, what="the replay acked")
        # A second copy of the same event (say, replayed twice) is skipped by the inbox.
        await setup.publish("bad", event_id=bad, msg_id=f"{bad}:again")
        await eventually(lambda: _delivered(setup, 5), within=10, what="the second copy delivered")
        await eventually(lambda: _no_ack_pending(setup), within=10, what="the second copy acked")

    assert handler.attempts["bad"] == 3
    assert sorted(handler.applied) == ["bad", "good1", "good2"]
    assert await setup.items() == ["bad", "good1", "good2"]
    assert await setup.follow_ups() == ["after-bad", "after-good1", "after-good2"]
    assert {e for _, e, _ in await setup.inbox()} == {good1, bad, good2}
    assert await setup.letters() == []


def _dead_lettered(setup: Setup) -> float:
    """evolutivo_dead_letters_total of the test's consumer so far."""
    found = REGISTRY.get_sample_value("evolutivo_dead_letters_total", {"consumer": setup.subscription.durable})
    return found or 0.0


async def test_replayed_event_that_fails_again_is_dead_lettered_again(setup: Setup) -> None:
    """Replaying before the bug is fixed must put the event back in the queue, not lose it.

    DeadLetterQueue.send uses Nats-Msg-Id "dlq:<consumer>:<event id>", the same for the first
    dead letter and for the one after the replay; inside the DLQ stream's duplicate window
    JetStream drops the second one, the consumer acks the message anyway and the event is gone."""
    setup.handler.broken = {"bad"}
    consumer = setup.consumer(max_deliver=1)
    await consumer.setup()
    bad = await setup.publish("bad")
    dead_lettered = _dead_lettered(setup)
    async with running(consumer):
        await eventually(lambda: _has_letters(setup, 1), within=10, what="the first dead letter")
        [first] = await setup.letters()
        await setup.dead_letters.replay(first)  # still broken
        await eventually(lambda: _delivered(setup, 2), within=10, what="the replay delivered")
        await eventually(lambda: _no_ack_pending(setup), within=10, what="the replay given up on")
    assert setup.handler.attempts["bad"] == 2
    letters = await setup.letters()
    assert [letter.event_id for letter in letters] == [str(bad)], "the replayed event was lost"
    assert _dead_lettered(setup) == dead_lettered + 2, "each giving up counted"


class CountingConsumer(EventConsumer[UnitOfWork]):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.received: list[str] = []

    async def process(self, messages: list[Msg]) -> None:
        self.received += [(m.headers or {})[envelope.EVENT_ID] for m in messages]
        await super().process(messages)


async def test_two_instances_on_one_durable_share_the_messages(setup: Setup) -> None:
    setup.handler.delay = 0.005
    consumers = [
        CountingConsumer(
            setup.js,
            setup.subscription,
            lambda: UnitOfWork(setup.db.sessions, setup.db.outbox, SystemClock()),
            setup.db.inbox,
            setup.dead_letters,
            batch_size=5,
            max_deliver=3,
            ack_wait=30.0,
        )
        for _ in range(2)
    ]
    for consumer in consumers:
        await consumer.setup()  # declaring the same durable twice is idempotent
    total = 60
    async with running(*consumers):
        ids = [str(await setup.publish(f"v{i}")) for i in range(total)]
        await eventually(lambda: setup.settled(total), within=30, what=f"{total} events acked")

    received = consumers[0].received + consumers[1].received
    assert sorted(received) == sorted(ids), "a message was delivered twice or not at all"
    assert consumers[0].received and consumers[1].received, "one instance got every message"
    assert setup.handler.attempts == Counter(f"v{i}" for i in range(total))
    assert len(await setup.items()) == total
    assert len(await setup.inbox()) == total


async def _has_letters(setup: Setup, n: int) -> bool:
    return len(await setup.letters()) >= n


async def _has_items(setup: Setup, n: int) -> bool:
    return len(await setup.items()) >= n


async def _no_ack_pending(setup: Setup) -> bool:
    info = await setup.js.consumer_info(setup.stream.stream, setup.subscription.durable)
    return bool(info.num_ack_pending == 0 and info.num_pending == 0)


async def _delivered(setup: Setup, stream_seq: int) -> bool:
    info = await setup.js.consumer_info(setup.stream.stream, setup.subscription.durable)
    return info.delivered is not None and (info.delivered.stream_seq or 0) >= stream_seq


async def test_dead_letter_admin_lists_pages_and_replays(setup: Setup) -> None:
    from evolutivo.admin.v1 import dead_letter_admin_service_pb2 as dlq_pb
    from evolutivo_runtime.errors import InvalidArgument, NotFound
    from evolutivo_runtime.server.admin import DeadLetterAdminServicer

    setup.handler.broken = {"x0", "x1", "x2"}
    consumer = setup.consumer(max_deliver=1)
    await consumer.setup()
    ids = [str(await setup.publish(f"x{i}")) for i in range(3)]
    async with running(consumer):
        await eventually(lambda: _has_letters(setup, 3), within=15, what="three dead letters")

    admin = DeadLetterAdminServicer(setup.dead_letters)
    context: Any = None
    first = await admin.ListDeadLetters(dlq_pb.ListDeadLettersRequest(page_size=2), context)
    assert [d.event_id for d in first.dead_letters] == ids[:2]
    assert first.next_page_token
    second = await admin.ListDeadLetters(
        dlq_pb.ListDeadLettersRequest(page_size=2, page_token=first.next_page_token), context
    )
    assert [d.event_id for d in second.dead_letters] == ids[2:]
    assert second.next_page_token == ""
    letter = second.dead_letters[0]
    assert (letter.consumer, letter.attempts, letter.event_type) == (setup.subscription.durable, 1, EVENT_TYPE)
    assert letter.error == "RuntimeError: cannot apply x2"
    assert letter.original_subject == setup.stream.subject()

    with pytest.raises(InvalidArgument):
        await admin.ListDeadLetters(dlq_pb.ListDeadLettersRequest(page_size=-1), context)
    with pytest.raises(InvalidArgument):
        await admin.ListDeadLetters(dlq_pb.ListDeadLettersRequest(page_token="not-a-number"), context)
    with pytest.raises(InvalidArgument):
        await admin.ReplayDeadLetter(dlq_pb.ReplayDeadLetterRequest(sequence=0), context)
    with pytest.raises(NotFound):
        await admin.ReplayDeadLetter(dlq_pb.ReplayDeadLetterRequest(sequence=letter.sequence + 10_000), context)

    setup.handler.broken.clear()
    replayed = await admin.ReplayDeadLetter(dlq_pb.ReplayDeadLetterRequest(sequence=letter.sequence), context)
    assert replayed.dead_letter.event_id == ids[2]
    async with running(consumer):
        await eventually(lambda: _has_items(setup, 1), within=10, what="the replayed event applied")
    assert await setup.items() == ["x2"]
    remaining = await admin.ListDeadLetters(dlq_pb.ListDeadLettersRequest(), context)
    assert [d.event_id for d in remaining.dead_letters] == ids[:2]


# Aggregates tracked through the unit of work (UnitOfWork.track) inside a consumer batch.


@dataclass
class Tally:
    key: str
    count: int = 0
    events: list[object] = field(default_factory=list)

    def bump(self, by: str) -> None:
        self.count += 1
        self.events.append(by)


class TallyUnitOfWork(UnitOfWork):
    """A unit of work whose repository keeps an identity map, as ORM sessions do: the same key
    gives the same aggregate object for the whole transaction (here, the whole batch)."""

    async def __aenter__(self) -> TallyUnitOfWork:
        await super().__aenter__()
        self.tallies: dict[str, Tally] = {}
        return self

    def tally(self, key: str) -> Tally:
        if key not in self.tallies:
            self.tallies[key] = Tally(key)
        tally = self.tallies[key]
        self.track(tally)
        return tally


def _encode_bump(event: object) -> tuple[str, StringValue]:
    assert isinstance(event, str)
    return FOLLOW_UP_SUBJECT, StringValue(value=f"bumped-by-{event}")


def _tally_consumer(
    setup: Setup,
    handle: Callable[[TallyUnitOfWork, StringValue, envelope.EventMeta], Awaitable[None]],
    encode: Callable[[object], tuple[str, StringValue]],
) -> EventConsumer[TallyUnitOfWork]:
    """The test's durable consumer with `handle` for its event type, in TallyUnitOfWorks encoding
    their aggregates' events with `encode`."""
    subscription: Subscription[TallyUnitOfWork] = Subscription(
        durable=setup.subscription.durable,
        stream=setup.stream.stream,
        subjects=setup.subscription.subjects,
        handlers={EVENT_TYPE: EventHandler(StringValue, handle)},
    )
    return EventConsumer(
        setup.js,
        subscription,
        lambda: TallyUnitOfWork(setup.db.sessions, setup.db.outbox, SystemClock(), encode),
        setup.db.inbox,
        setup.dead_letters,
        batch_size=10,
        max_deliver=5,
        ack_wait=30.0,
    )


@pytest.mark.parametrize("same_aggregate", [False, True], ids=["own-aggregate", "shared-aggregate"])
async def test_failed_message_events_of_tracked_aggregates_are_not_published(
    setup: Setup, same_aggregate: bool
) -> None:
    """Value "<key>:<name>": the handler bumps aggregate <key>; names starting with "bad" raise
    after bumping. Only the successful messages' domain events may reach the outbox."""

    async def handle(uow: TallyUnitOfWork, message: StringValue, meta: envelope.EventMeta) -> None:
        key, name = message.value.split(":")
        uow.tally(key).bump(name)
        if name.startswith("bad"):
            raise RuntimeError(f"cannot apply {name}")

    consumer = _tally_consumer(setup, handle, _encode_bump)
    subscription = consumer.subscription
    await consumer.setup()
    await setup.publish("k1:good")
    await setup.publish("k1:bad" if same_aggregate else "k2:bad")
    psub = await setup.js.pull_subscribe_bind(subscription.durable, stream=subscription.stream)
    batch = await psub.fetch(2, timeout=5)
    assert len(batch) == 2
    await consumer.process(batch)
    assert await setup.follow_ups() == ["bumped-by-good"]


async def test_two_replicas_holding_the_same_events_in_opposite_orders_apply_each_once(setup: Setup) -> None:
    """Under load an ack wait runs out and another replica gets the events the first still holds,
    in another order. Both batches must go through (no deadlock, nothing failed or dead-lettered)
    and each event apply once: the inbox rows are claimed in one order, so one replica waits for
    the other and then skips what it applied."""
    setup.handler.delay = 0.3  # both transactions are open at once
    first, second = uuid.uuid4(), uuid.uuid4()

    def batch(*ids: uuid.UUID) -> list[FakeMsg]:
        return [
            FakeMsg(StringValue(value=str(i)).SerializeToString(), event_headers(i, EVENT_TYPE), "subject") for i in ids
        ]

    one, other = batch(first, second), batch(second, first)
    await asyncio.gather(process(setup.consumer(), *one), process(setup.consumer(), *other))
    assert sorted(setup.handler.applied) == sorted([str(first), str(second)])
    assert all(m.acked and not m.naked for m in one + other)
    assert await setup.items() == sorted([str(first), str(second)])


# Batch handlers: a batch's events of some types applied by one call in one savepoint, falling
# back to the events' own handlers (each in its savepoint) when that call raises.


@dataclass
class BatchApplier:
    """Applies a batch of StringValue events: writes every item and publishes every follow-up, then
    raises if any value is in `broken` (after writing, so the savepoint must undo it all)."""

    db: MessagingDb
    broken: set[str] = field(default_factory=set)
    calls: list[list[str]] = field(default_factory=list)
    metas: list[envelope.EventMeta] = field(default_factory=list)

    async def handle(self, uow: UnitOfWork, batch: Sequence[tuple[StringValue, envelope.EventMeta]]) -> None:
        values = [event.value for event, _ in batch]
        self.calls.append(values)
        await uow.session.execute(
            insert(self.db.items), [{"id": f"{e.value}:{meta.event_id}", "value": e.value} for e, meta in batch]
        )
        for value in values:
            uow.publish(FOLLOW_UP_SUBJECT, StringValue(value=f"after-{value}"))
        if self.broken.intersection(values):
            raise RuntimeError(f"cannot apply {sorted(self.broken.intersection(values))}")
        self.metas += [meta for _, meta in batch]


def _batched(setup: Setup) -> BatchApplier:
    """Gives `setup`'s subscription a batch handler for its event type."""
    applier = BatchApplier(setup.db)
    setup.subscription = replace(setup.subscription, batch_handlers={EVENT_TYPE: BatchHandler(applier.handle)})
    return applier


async def _fetch(setup: Setup, n: int) -> list[Msg]:
    psub = await setup.js.pull_subscribe_bind(setup.subscription.durable, stream=setup.stream.stream)
    batch = await psub.fetch(n, timeout=5)
    assert len(batch) == n
    return batch


async def test_a_batch_handler_applies_the_batchs_events_in_one_call(setup: Setup) -> None:
    applier = _batched(setup)
    consumer = setup.consumer()
    await consumer.setup()
    ids = [await setup.publish(f"v{i}") for i in range(4)]
    await setup.publish("v0", event_id=ids[0], msg_id="again")  # a duplicate: the inbox skips it
    await consumer.process(await _fetch(setup, 5))
    await eventually(lambda: setup.settled(5), within=10, what="the batch acked")

    assert applier.calls == [["v0", "v1", "v2", "v3"]]
    assert [m.event_id for m in applier.metas] == ids
    assert [m.stream_sequence for m in applier.metas] == [1, 2, 3, 4]
    assert {(m.event_type, m.subject) for m in applier.metas} == {(EVENT_TYPE, setup.stream.subject())}
    assert setup.handler.attempts == Counter(), "the per-message handler is the fallback only"
    assert await setup.items() == ["v0", "v1", "v2", "v3"]
    assert await setup.follow_ups() == ["after-v0", "after-v1", "after-v2", "after-v3"]
    assert await setup.inbox() == sorted((setup.subscription.durable, i, EVENT_TYPE) for i in ids)

    # A lone event goes to its own handler.
    await setup.publish("alone")
    await consumer.process(await _fetch(setup, 1))
    assert applier.calls == [["v0", "v1", "v2", "v3"]]
    assert setup.handler.attempts == Counter({"alone": 1})
    assert await setup.items() == ["alone", "v0", "v1", "v2", "v3"]


async def test_a_poison_message_in_a_batch_fails_alone_and_is_dead_lettered(setup: Setup) -> None:
    applier = _batched(setup)
    applier.broken = {"bad"}
    setup.handler.broken = {"bad"}
    consumer = setup.consumer(batch_size=10, max_deliver=2)
    await consumer.setup()
    good1 = await setup.publish("good1")
    bad = await setup.publish("bad")
    good2 = await setup.publish("good2")

    # The batch handler raises: its writes and events are undone, and the three messages applied
    # one by one: the good ones once, the poison fails alone and is retried later.
    await consumer.process(await _fetch(setup, 3))
    assert applier.calls == [["good1", "bad", "good2"]]
    assert setup.handler.attempts == Counter({"good1": 1, "bad": 1, "good2": 1})
    assert sorted(setup.handler.applied) == ["good1", "good2"]
    assert await setup.items() == ["good1", "good2"]
    assert await setup.follow_ups() == ["after-good1", "after-good2"]
    assert {e for _, e, _ in await setup.inbox()} == {good1, good2}
    info = await setup.js.consumer_info(setup.stream.stream, setup.subscription.durable)
    assert info.num_ack_pending == 1  # "bad" was nak'ed (with a delay), the others acked

    # Redelivered after the nak delay, it fails again and is dead-lettered at max_deliver.
    async with running(consumer):
        await eventually(lambda: _has_letters(setup, 1), within=20, what="the dead letter")
        await eventually(lambda: _no_ack_pending(setup), within=10, what="the dead letter acked")
    [letter] = await setup.letters()
    assert (letter.event_id, letter.attempts) == (str(bad), 2)
    assert letter.error == "RuntimeError: cannot apply bad"
    assert await setup.items() == ["good1", "good2"]
    assert await setup.follow_ups() == ["after-good1", "after-good2"]
    assert {e for _, e, _ in await setup.inbox()} == {good1, good2}


async def test_settled_messages_are_acked_without_a_transaction(setup: Setup) -> None:
    """Subscription.settled: what the replica knows changes nothing is acknowledged, with no inbox
    row and no handler call; in a batch the others are applied as ever; a predicate that raises
    (or a message that does not decode) counts as not settled."""

    def settled(message: StringValue) -> bool:
        if message.value == "raises":
            raise RuntimeError("cannot tell")
        return message.value.startswith("known")

    setup.subscription = replace(setup.subscription, settled={EVENT_TYPE: settled})
    consumer = setup.consumer()
    await consumer.setup()
    began: list[object] = []

    def begin(conn: object) -> None:
        began.append(conn)

    event.listen(setup.db.engine.sync_engine, "begin", begin)
    try:
        await setup.publish("known-1")
        await consumer.process(await _fetch(setup, 1))
        await eventually(lambda: setup.settled(1), within=10, what="the settled message acked")
        assert began == [], "no transaction for it"
        both = [await setup.publish("known-2"), await setup.publish("known-3")]
        await consumer.process(await _fetch(setup, 2))
        await eventually(lambda: setup.settled(3), within=10, what="the settled batch acked")
        assert began == [] and await setup.inbox() == [] and setup.handler.attempts == Counter()

        mixed = [await setup.publish("new"), await setup.publish("known-4"), await setup.publish("raises")]
        fetched = await _fetch(setup, 3)
        before_mixed = len(began)
        await consumer.process(fetched)
        assert len(began) > before_mixed, "the others had their transaction"
        await eventually(lambda: setup.settled(6), within=10, what="the mixed batch acked")
    finally:
        event.remove(setup.db.engine.sync_engine, "begin", begin)
    assert setup.handler.attempts == Counter({"new": 1, "raises": 1})
    assert await setup.items() == ["new", "raises"]
    assert {e for _, e, _ in await setup.inbox()} == {mixed[0], mixed[2]}
    assert not set(both) & {e for _, e, _ in await setup.inbox()}


def test_advisory_locks_are_named_only_for_handled_event_types() -> None:
    with pytest.raises(ValueError, match="advisory locks named for event types it does not handle"):
        Subscription(durable="d", stream="S", subjects=["s"], advisory_locks={EVENT_TYPE: lambda event: []})


def test_a_batch_handler_needs_an_event_handler_to_fall_back_on() -> None:
    async def handle(uow: UnitOfWork, batch: Sequence[tuple[StringValue, envelope.EventMeta]]) -> None:
        raise AssertionError("not called")

    with pytest.raises(ValueError, match="without an event handler"):
        Subscription(durable="d", stream="s", subjects=["s.>"], batch_handlers={EVENT_TYPE: BatchHandler(handle)})


# Advisory locks named up front (Subscription.advisory_locks): a batch takes all of its events'
# at once, in one order, so two batches needing the same locks wait instead of deadlocking.


@dataclass
class Locker:
    """Applies StringValue events "<lock>:<n>" as a handler that takes turns on a record does: it
    takes the advisory lock <lock>, writes an item, and holds the lock a moment."""

    db: MessagingDb
    delay: float = 0.4
    applied: list[str] = field(default_factory=list)

    async def handle(self, uow: UnitOfWork, message: StringValue, meta: envelope.EventMeta) -> None:
        await advisory_xact_locks(uow.session, [message.value.split(":")[0]])
        await uow.session.execute(
            insert(self.db.items).values(id=f"{message.value}:{meta.event_id}", value=message.value)
        )
        await asyncio.sleep(self.delay)
        self.applied.append(message.value)


def _locking(setup: Setup, named_up_front: bool) -> Locker:
    locker = Locker(setup.db)
    setup.subscription = replace(
        setup.subscription,
        handlers={EVENT_TYPE: EventHandler(StringValue, locker.handle)},
        advisory_locks={EVENT_TYPE: lambda event: [event.value.split(":")[0]]} if named_up_front else {},
    )
    return locker


def _conflicts(setup: Setup) -> float:
    found = REGISTRY.get_sample_value("evolutivo_consumer_conflicts_total", {"consumer": setup.subscription.durable})
    return found or 0.0


async def _opposite_batches(setup: Setup) -> list[FakeMsg]:
    """Two batches at once, each holding its first event's lock when it needs the other's."""

    def batch(*values: str) -> list[FakeMsg]:
        return [
            FakeMsg(StringValue(value=v).SerializeToString(), event_headers(uuid.uuid4(), EVENT_TYPE), "subject")
            for v in values
        ]

    one, other = batch("a:1", "b:1"), batch("b:2", "a:2")
    await asyncio.gather(process(setup.consumer(), *one), process(setup.consumer(), *other))
    return one + other


async def test_batches_naming_their_locks_up_front_wait_instead_of_deadlocking(setup: Setup) -> None:
    locker = _locking(setup, named_up_front=True)
    before = _conflicts(setup)
    messages = await _opposite_batches(setup)
    assert _conflicts(setup) == before  # no deadlock was detected and retried
    assert sorted(locker.applied) == ["a:1", "a:2", "b:1", "b:2"]
    assert all(m.acked and not m.naked for m in messages)
    assert await setup.items() == ["a:1", "a:2", "b:1", "b:2"]


async def test_without_them_the_same_batches_deadlock_and_are_retried(setup: Setup) -> None:
    """The control: the batches above do deadlock when each handler takes its lock as it goes.
    PostgreSQL breaks it after deadlock_timeout and the consumer retries the message in place,
    where it can deadlock again (its batch still holds the first lock), so a message may be left
    for redelivery: each is applied or left, none lost."""
    locker = _locking(setup, named_up_front=False)
    before = _conflicts(setup)
    messages = await _opposite_batches(setup)
    assert _conflicts(setup) > before
    left = [StringValue.FromString(m.data).value for m in messages if m.naked]
    assert sorted(locker.applied + left) == ["a:1", "a:2", "b:1", "b:2"]


# A lone message (a fetch of one) is applied in its transaction without a savepoint.


@contextlib.contextmanager
def savepoints(setup: Setup) -> Iterator[list[str]]:
    """The names of the savepoints the test's database sees while the block runs."""
    seen: list[str] = []

    def on_savepoint(conn: Any, name: str) -> None:
        seen.append(name)

    engine = setup.db.engine.sync_engine
    event.listen(engine, "savepoint", on_savepoint)
    try:
        yield seen
    finally:
        event.remove(engine, "savepoint", on_savepoint)


def _fake(value: str, event_id: uuid.UUID | None = None) -> FakeMsg:
    return FakeMsg(
        StringValue(value=value).SerializeToString(), event_headers(event_id or uuid.uuid4(), EVENT_TYPE), "s"
    )


def _applied(setup: Setup) -> float:
    found = REGISTRY.get_sample_value(
        "evolutivo_consumer_applied_total", {"consumer": setup.subscription.durable, "event_type": EVENT_TYPE}
    )
    return found or 0.0


async def test_a_lone_message_is_applied_without_a_savepoint(setup: Setup) -> None:
    consumer = setup.consumer()
    lone = _fake("alone")
    with savepoints(setup) as seen:
        await process(consumer, lone)
    assert seen == []
    assert lone.acked and not lone.naked
    assert await setup.items() == ["alone"]
    assert await setup.follow_ups() == ["after-alone"]
    assert _applied(setup) == 1

    # Its redelivery is skipped by the inbox, and acked.
    again = lone.again()
    await process(consumer, again)
    assert again.acked and setup.handler.attempts == Counter({"alone": 1})
    assert _applied(setup) == 1

    # The control: two messages fetched together each get a savepoint.
    with savepoints(setup) as seen:
        await process(consumer, _fake("one"), _fake("two"))
    assert len(seen) == 2
    assert await setup.items() == ["alone", "one", "two"]


async def _nothing_kept(setup: Setup) -> bool:
    """No item, follow-up event or inbox row: a failed message's transaction left nothing."""
    return (await setup.items(), await setup.follow_ups(), await setup.inbox()) == ([], [], [])


async def test_a_lone_message_that_fails_leaves_nothing_and_is_retried(setup: Setup) -> None:
    setup.handler.broken = {"bad"}
    consumer = setup.consumer(max_deliver=3)
    bad = _fake("bad")
    await process(consumer, bad)
    assert bad.naked and not bad.acked
    # The handler wrote an item and published a follow-up before raising: both rolled back with
    # the inbox row, so the redelivery applies it.
    assert await _nothing_kept(setup)
    assert _applied(setup) == 0

    setup.handler.broken.clear()
    again = bad.again()
    await process(consumer, again)
    assert again.acked and not again.naked
    assert await setup.items() == ["bad"]
    assert await setup.follow_ups() == ["after-bad"]
    assert setup.handler.attempts == Counter({"bad": 2})
    assert _applied(setup) == 1


@dataclass
class TwoLocks:
    """Applies StringValue events "<first>,<second>": takes lock <first>, then <second>, then writes
    an item. With `together` set, each event's first attempt waits, holding its first lock, until
    the other's holds its own: two such events in opposite orders, each alone in its transaction,
    then deadlock for certain."""

    db: MessagingDb
    together: asyncio.Barrier | None = None
    attempts: Counter[str] = field(default_factory=Counter)

    async def handle(self, uow: UnitOfWork, message: StringValue, meta: envelope.EventMeta) -> None:
        self.attempts[message.value] += 1
        first, second = message.value.split(",")
        await advisory_xact_locks(uow.session, [first])
        if self.together is not None and self.attempts[message.value] == 1:
            await asyncio.wait_for(self.together.wait(), timeout=10)
        await advisory_xact_locks(uow.session, [second])
        await uow.session.execute(
            insert(self.db.items).values(id=f"{message.value}:{meta.event_id}", value=message.value)
        )


def _lone_pair(setup: Setup, locker: TwoLocks, named_up_front: bool) -> tuple[FakeMsg, FakeMsg]:
    setup.subscription = replace(
        setup.subscription,
        handlers={EVENT_TYPE: EventHandler(StringValue, locker.handle)},
        advisory_locks={EVENT_TYPE: lambda event: event.value.split(",")} if named_up_front else {},
    )
    return _fake("a,b"), _fake("b,a")


async def test_a_lone_message_that_deadlocks_runs_its_transaction_again(setup: Setup) -> None:
    locker = TwoLocks(setup.db, together=asyncio.Barrier(2))
    one, other = _lone_pair(setup, locker, named_up_front=False)
    before = _conflicts(setup)
    with savepoints(setup) as seen:
        await asyncio.gather(process(setup.consumer(), one), process(setup.consumer(), other))
    assert seen == []  # each alone in its transaction: the retry ran the whole transaction again
    assert _conflicts(setup) == before + 1  # PostgreSQL broke the deadlock; the loser ran again
    assert sorted(locker.attempts.values()) == [1, 2]  # the winner ran once, the loser twice
    assert all(m.acked and not m.naked for m in (one, other))
    assert await setup.items() == ["a,b", "b,a"]
    assert await setup.inbox() == sorted(
        (setup.subscription.durable, uuid.UUID(m.headers[envelope.EVENT_ID]), EVENT_TYPE) for m in (one, other)
    )
    assert _applied(setup) == 2


async def test_a_lone_message_takes_the_locks_named_up_front_first(setup: Setup) -> None:
    """Named up front, both locks are taken in key order before the handler runs: the same pair
    waits instead of deadlocking."""
    locker = TwoLocks(setup.db)
    one, other = _lone_pair(setup, locker, named_up_front=True)
    before = _conflicts(setup)
    await asyncio.gather(process(setup.consumer(), one), process(setup.consumer(), other))
    assert _conflicts(setup) == before
    assert locker.attempts == Counter({"a,b": 1, "b,a": 1})
    assert all(m.acked and not m.naked for m in (one, other))
    assert await setup.items() == ["a,b", "b,a"]


async def test_a_lone_message_of_another_type_or_without_an_id(setup: Setup) -> None:
    consumer = setup.consumer()
    other_type = FakeMsg(b"", event_headers(uuid.uuid4(), "evolutivo.other.v1.Thing"), "s")
    await process(consumer, other_type)
    assert other_type.acked and not other_type.naked  # recorded in the inbox, not applied
    assert [t for _, _, t in await setup.inbox()] == ["evolutivo.other.v1.Thing"]
    assert _applied(setup) == 0

    no_id = _fake("orphan")
    del no_id.headers[envelope.EVENT_ID]
    await process(consumer, no_id)
    assert no_id.naked and not no_id.acked
    assert setup.handler.attempts == Counter()
    assert await setup.items() == []
    assert len(await setup.inbox()) == 1


async def test_a_durable_removed_from_the_server_is_declared_again(setup: Setup) -> None:
    """A pull on a durable that no longer exists only times out: the consumer finds it gone at
    its next check, declares it again, and goes on (what it had applied is skipped by its inbox)."""
    consumer = setup.consumer(check_seconds=0.2)
    await consumer.setup()
    durable = setup.subscription.durable
    before = REGISTRY.get_sample_value("evolutivo_consumer_durables_declared_again_total", {"consumer": durable})
    async with running(consumer):
        await setup.publish("one")
        await eventually(lambda: _items_are(setup, ["one"]), within=10, what="the first event applied")
        await setup.js.delete_consumer(setup.stream.stream, durable)
        await setup.publish("two")
        await eventually(lambda: _items_are(setup, ["one", "two"]), within=10, what="the durable declared again")
        # The loop goes round meanwhile (the heartbeat EvolutivoBackgroundLoopStuck watches).
        PROGRESS.labels(f"consumer:{durable}").set(0)
        await eventually(lambda: _beat_again(durable), within=5, what="a heartbeat")
    after = REGISTRY.get_sample_value("evolutivo_consumer_durables_declared_again_total", {"consumer": durable})
    assert (after or 0) - (before or 0) >= 1
    assert setup.handler.attempts == Counter({"one": 1, "two": 1})


async def test_the_pending_gauge_is_read_from_the_server_at_each_check(setup: Setup) -> None:
    """Set otherwise only from a fetched message, the gauge stood still while fetches brought
    nothing; each check reads it from the durable as the server has it."""
    consumer = setup.consumer()
    await consumer.setup()
    for value in ("a", "b", "c"):
        await setup.publish(value)
    CONSUMER_PENDING.labels(setup.subscription.durable).set(99)
    await consumer._check_durable()
    assert REGISTRY.get_sample_value("evolutivo_consumer_pending", {"consumer": setup.subscription.durable}) == 3


async def _beat_again(durable: str) -> bool:
    beat = REGISTRY.get_sample_value("evolutivo_background_progress_timestamp_seconds", {"task": f"consumer:{durable}"})
    return beat is not None and abs(time.time() - beat) < 5


async def _items_are(setup: Setup, values: list[str]) -> bool:
    return await setup.items() == values


async def test_a_batch_whose_commit_fails_is_applied_message_by_message(setup: Setup) -> None:
    """A batch's transaction that fails at its commit (one message's event cannot be encoded)
    keeps nothing; its messages are then applied one by one, so the good ones go through and the
    one at fault fails alone (nak'ed: retried, in the end dead-lettered), instead of the whole
    batch coming back from the server at every delivery."""

    def encode(event: object) -> tuple[str, StringValue]:
        if event == "doomed":
            raise TypeError(f"no protobuf event for {event!r}")
        return _encode_bump(event)

    async def handle(uow: TallyUnitOfWork, message: StringValue, meta: envelope.EventMeta) -> None:
        await uow.session.execute(insert(setup.db.items).values(id=str(meta.event_id), value=message.value))
        uow.tally("k").bump(message.value)

    consumer = _tally_consumer(setup, handle, encode)
    good, doomed, fine = _fake("good"), _fake("doomed"), _fake("fine")
    before = _batch_transaction_failures(setup)
    applied, failures = _applied(setup), _failures(setup)
    await process(consumer, good, doomed, fine)
    assert _batch_transaction_failures(setup) == before + 1
    # Counted once, as applied alone: what the failed transaction counted went with it.
    assert (_applied(setup) - applied, _failures(setup) - failures) == (2, 1)
    assert good.acked and fine.acked and not (good.naked or fine.naked)
    assert doomed.naked and not doomed.acked
    assert await setup.items() == ["fine", "good"]
    assert await setup.follow_ups() == ["bumped-by-fine", "bumped-by-good"]
    assert sorted(event_id for _, event_id, _ in await setup.inbox()) == sorted(
        uuid.UUID(m.headers[envelope.EVENT_ID]) for m in (good, fine)
    )


def _failures(setup: Setup) -> float:
    return (
        REGISTRY.get_sample_value("evolutivo_consumer_failures_total", {"consumer": setup.subscription.durable}) or 0.0
    )


def _batch_transaction_failures(setup: Setup) -> float:
    found = REGISTRY.get_sample_value(
        "evolutivo_consumer_batch_transaction_failures_total", {"consumer": setup.subscription.durable}
    )
    return found or 0.0


async def test_a_lone_message_whose_commit_fails_is_failed_not_lost(setup: Setup) -> None:
    """The commit writes the domain events the handler recorded: one it cannot encode fails the
    message (nak'ed, so it is retried and in the end dead-lettered) and leaves nothing behind."""

    def unencodable(event: object) -> tuple[str, StringValue]:
        raise TypeError(f"no protobuf event for {event!r}")

    async def handle(uow: TallyUnitOfWork, message: StringValue, meta: envelope.EventMeta) -> None:
        await uow.session.execute(insert(setup.db.items).values(id=str(meta.event_id), value=message.value))
        uow.tally("k").bump(message.value)

    consumer = _tally_consumer(setup, handle, unencodable)
    lone = _fake("doomed")
    await process(consumer, lone)
    assert lone.naked and not lone.acked
    assert await _nothing_kept(setup)
