"""Durable JetStream pull consumers that apply each event exactly once.

A batch of messages is applied in one database transaction, each message inside its own savepoint
together with its inbox row; the transaction commits, then the messages are acked. A crash before
the ack redelivers them and the inbox makes the second delivery a no-op. Replicas of a service
bind to the same durable consumer and share its messages. A message that fails
`max_deliver` times goes to the dead-letter subject and is acked.

A lone message (a fetch of one, the usual case when a consumer keeps up with a trickle) is applied
in its transaction without a savepoint: there is nothing else to protect from its failure, and a
savepoint is two round trips of a transaction of a few. When its handler fails, the transaction
rolls back with its inbox row, as the savepoint would have; a deadlock or serialization failure
runs the whole transaction again.

A subscription may also give *batch handlers* (`Subscription.batch_handlers`): the batch's events of
those types are applied by one call, in one savepoint, instead of one savepoint and one handler call
each. When that call raises, its savepoint rolls back and the same events are applied one by one by
their own handlers, each in its savepoint as above: every event's effects still happen exactly once,
and a poison message still fails (and is retried, then dead-lettered) alone.

A subscription whose handlers take advisory locks may name them (`Subscription.advisory_locks`):
the batch takes all of them at once, in key order, before applying any event, so batches wait for
each other instead of deadlocking.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Generic, TypeVar

import nats.errors
import nats.js.errors
from google.protobuf.message import Message
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy
from prometheus_client import Counter, Gauge
from sqlalchemy import Table, delete

from evolutivo_runtime import transient_errors
from evolutivo_runtime.bulk import insert_rows
from evolutivo_runtime.locks import advisory_xact_locks
from evolutivo_runtime.messaging import envelope
from evolutivo_runtime.messaging.dead_letters import DEAD_LETTERED, DeadLetterQueue
from evolutivo_runtime.progress import consumer_task, heartbeat
from evolutivo_runtime.uow import UnitOfWork

log = logging.getLogger(__name__)

U = TypeVar("U", bound=UnitOfWork)
M = TypeVar("M", bound=Message)

CONSUMER_PENDING = Gauge("evolutivo_consumer_pending", "Messages waiting for this durable consumer", ["consumer"])
APPLIED = Counter("evolutivo_consumer_applied_total", "Events applied", ["consumer", "event_type"])
SKIPPED = Counter("evolutivo_consumer_duplicates_total", "Redelivered events skipped by the inbox", ["consumer"])
CONFLICTS = Counter(
    "evolutivo_consumer_conflicts_total", "Deadlocks and serialization failures retried in place", ["consumer"]
)
# How often one message is tried (in its savepoint, or alone in its transaction) when PostgreSQL
# reports a conflict.
_CONFLICT_ATTEMPTS = 5


def _event_id(msg: Msg) -> uuid.UUID | None:
    try:
        return uuid.UUID((msg.headers or {})[envelope.EVENT_ID])
    except (KeyError, ValueError):
        return None


FAILED = Counter("evolutivo_consumer_failures_total", "Event applications that raised", ["consumer"])
SETTLED = Counter(
    "evolutivo_consumer_settled_total",
    "Events acknowledged without a transaction: the replica knew their effect was in the database",
    ["consumer"],
)
BATCH_FALLBACKS = Counter(
    "evolutivo_consumer_batch_fallbacks_total",
    "Batch handler calls that raised: their events were applied one by one instead",
    ["consumer"],
)
DURABLES_DECLARED_AGAIN = Counter(
    "evolutivo_consumer_durables_declared_again_total",
    "Times this durable consumer was found gone from the server and declared again",
    ["consumer"],
)
BATCH_TRANSACTION_FAILURES = Counter(
    "evolutivo_consumer_batch_transaction_failures_total",
    "Fetched batches whose transaction failed (at its commit): their messages were applied one by one instead",
    ["consumer"],
)


@dataclass(frozen=True)
class EventHandler(Generic[U, M]):
    message_type: type[M]
    handle: Callable[[U, M, envelope.EventMeta], Awaitable[None]]


@dataclass(frozen=True, eq=False)
class BatchHandler(Generic[U]):
    """Applies several events of a fetched batch in one call: `handle` gets them as (event, meta),
    in the order of the batch, each event decoded by its type's `EventHandler.message_type`.

    It runs in one savepoint. It must leave the same effects as the events' own handlers applied
    one by one in that order (they are its fallback: when it raises, its savepoint rolls back and
    they apply the same events, each in its savepoint). Compared by identity: the event types
    mapped to one BatchHandler are applied together in one call."""

    handle: Callable[[U, Sequence[tuple[Any, envelope.EventMeta]]], Awaitable[None]]


@dataclass(frozen=True)
class Subscription(Generic[U]):
    """A durable consumer of one upstream service's stream."""

    durable: str
    stream: str
    # Subjects of the events this consumer applies; handlers are keyed by event type.
    subjects: list[str]
    handlers: Mapping[str, EventHandler[U, Any]] = field(default_factory=dict)
    # Optional, by event type: the batch's events of these types are applied by one call (a type
    # needs its EventHandler too, the fallback). They are applied before the batch's other events
    # (and a lone event of such a type by its own handler): only for events whose effects do not
    # depend on their order relative to the subscription's other types.
    batch_handlers: Mapping[str, BatchHandler[U]] = field(default_factory=dict)
    # Optional, by event type: the advisory locks (evolutivo_runtime.locks) the event's handler
    # takes, named from the decoded event. The consumer takes all of a batch's at once, in key
    # order, before applying any event: two batches needing some of the same locks (two streams
    # whose events lock the same record, or two replicas) then wait for each other instead of
    # taking them in opposite orders and deadlocking. Should taking them fail, a fetch of several
    # lets each handler take its own; a lone message fails (a conflict runs it again).
    advisory_locks: Mapping[str, Callable[[Any], Iterable[str]]] = field(default_factory=dict)
    # Optional, by event type: whether this replica knows the decoded event's effect to be in the
    # database already (a committed state that never goes back), so that applying it would change
    # nothing. Such a message is acknowledged without a transaction (no inbox row: applying it
    # again, should it come back, changes nothing either). A predicate that cannot tell says False.
    settled: Mapping[str, Callable[[Any], bool]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        unhandled = sorted(set(self.batch_handlers) - set(self.handlers))
        if unhandled:
            raise ValueError(f"{self.durable}: batch handlers without an event handler to fall back on: {unhandled}")
        unhandled = sorted(set(self.advisory_locks) - set(self.handlers))
        if unhandled:
            raise ValueError(f"{self.durable}: advisory locks named for event types it does not handle: {unhandled}")


class EventConsumer(Generic[U]):
    def __init__(
        self,
        js: JetStreamContext,
        subscription: Subscription[U],
        uow_factory: Callable[[], U],
        inbox: Table,
        dead_letters: DeadLetterQueue,
        batch_size: int,
        max_deliver: int,
        ack_wait: float,
        linger: float = 0.0,
        check_seconds: float = 10.0,
    ) -> None:
        self._js = js
        self._linger = linger
        # How often run() asks the server for the durable (`_check_durable`).
        self._check_every = check_seconds
        self.subscription = subscription
        self._uow_factory = uow_factory
        self._inbox = inbox
        self._dead_letters = dead_letters
        self._batch_size = batch_size
        self._max_deliver = max_deliver
        self._ack_wait = ack_wait
        self._psub: JetStreamContext.PullSubscription | None = None
        # While a batch's transaction is open, what it counts waits for its commit: a batch whose
        # commit fails is applied again message by message, and must not be counted twice.
        self._deferred: list[Callable[[], None]] | None = None
        # The series alerts watch exist from the start: increase() cannot see the first failure or
        # dead letter of a series that appears at 1 (deploy/k8s/monitoring).
        FAILED.labels(subscription.durable)
        SETTLED.labels(subscription.durable)
        DEAD_LETTERED.labels(subscription.durable)

    async def setup(self) -> None:
        """Declares the durable consumer (idempotent) and binds to it."""
        await self._declare()
        self._psub = await self._js.pull_subscribe_bind(self.subscription.durable, stream=self.subscription.stream)

    async def _declare(self) -> None:
        """Declares the durable consumer on the server (idempotent)."""
        sub = self.subscription
        config = ConsumerConfig(
            durable_name=sub.durable,
            deliver_policy=DeliverPolicy.ALL,
            ack_policy=AckPolicy.EXPLICIT,
            ack_wait=self._ack_wait,
            # Unlimited at the server: this consumer counts attempts and dead-letters itself.
            max_deliver=-1,
            filter_subjects=sub.subjects,
            max_ack_pending=max(1000, self._batch_size * 10),
        )
        await self._js.add_consumer(sub.stream, config)

    async def run(self, stop: asyncio.Event) -> None:
        assert self._psub is not None, "setup() first"
        loop = asyncio.get_running_loop()
        checked = loop.time()
        beat = heartbeat(consumer_task(self.subscription.durable))
        while not stop.is_set():
            beat.set_to_current_time()
            if loop.time() - checked >= self._check_every:
                checked = loop.time()
                await self._check_durable()
            try:
                messages = await self._psub.fetch(self._batch_size, timeout=1.0)
            except (nats.errors.TimeoutError, TimeoutError):
                continue  # nothing to fetch within the poll
            except Exception:
                log.exception("fetch failed", extra={"consumer": self.subscription.durable})
                await asyncio.sleep(1.0)  # the connection is reconnecting; don't spin
                continue
            await self.process(messages)
            if len(messages) < self._batch_size and self._linger > 0:
                # Keeping up with a trickle: let a few more arrive, so the next transaction applies
                # several (the per-transaction cost dominates a message's).
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), self._linger)

    async def _check_durable(self) -> None:
        """The durable as the server has it, every `check_seconds` whether fetches bring messages
        or not: its pending count for the gauge (set otherwise only from a fetched message, so
        it stood still while fetches failed or found nothing), and declared again when it is
        gone (JetStream storage lost, the stream created again, removed by hand): a pull on a
        durable that no longer exists only ever times out, silently."""
        sub = self.subscription
        try:
            info = await self._js.consumer_info(sub.stream, sub.durable)
        except nats.js.errors.NotFoundError:
            DURABLES_DECLARED_AGAIN.labels(sub.durable).inc()
            log.warning("durable consumer gone from the server; declaring it again", extra={"consumer": sub.durable})
            try:
                # The subscription stays: its pulls name the stream and the durable, not a binding.
                await self._declare()
            except Exception:
                log.exception("declaring the durable consumer again failed", extra={"consumer": sub.durable})
            return
        except Exception:
            return  # NATS out of reach: the fetches log it
        CONSUMER_PENDING.labels(sub.durable).set(info.num_pending or 0)

    async def close(self) -> None:
        """Stops pulling, so draining the connection does not wait on this subscription."""
        if self._psub is not None:
            with contextlib.suppress(Exception):
                await self._psub.unsubscribe()

    async def process(self, messages: list[Msg]) -> None:
        todo = [m for m in messages if not self._settled(m)] if self.subscription.settled else messages
        if len(todo) < len(messages):
            SETTLED.labels(self.subscription.durable).inc(len(messages) - len(todo))
        failed: list[tuple[Msg, BaseException]] = []
        if todo:
            failed = await (self._apply_lone(todo[0]) if len(todo) == 1 else self._apply_batch_of(todo))
        failed_ids = {id(m) for m, _ in failed}
        for msg in messages:
            if id(msg) not in failed_ids:
                await msg.ack()
        for msg, error in failed:
            attempts = msg.metadata.num_delivered or 1
            if attempts >= self._max_deliver:
                await self._dead_letters.send(msg, self.subscription.durable, error)
                await msg.ack()
            else:
                # Exponential backoff between attempts, capped.
                await msg.nak(delay=min(2.0**attempts, 60.0))
        if messages:
            CONSUMER_PENDING.labels(self.subscription.durable).set(messages[-1].metadata.num_pending or 0)

    async def _apply_lone(self, msg: Msg) -> list[tuple[Msg, BaseException]]:
        """Applies one message in a transaction of its own, without a savepoint; returns it with its
        error when its handler failed (the transaction, its inbox row included, rolled back)."""
        durable = self.subscription.durable
        event_id = _event_id(msg)
        if event_id is None:
            return [self._without_an_id(msg)]
        for attempt in range(1, _CONFLICT_ATTEMPTS + 1):
            if attempt > 1:
                await asyncio.sleep(0.05 * (attempt - 1))  # the other transaction usually only had to go first
            async with self._uow_factory() as uow:
                if not await self._claim(uow, [msg]):
                    SKIPPED.labels(durable).inc()  # applied before
                    return []
                try:
                    names = self._lock_names([(msg, event_id)])
                    if names:
                        await advisory_xact_locks(uow.session, names)
                    applied = await self._apply(uow, msg, event_id)
                    # Inside: a conflict at commit runs the transaction again too, and an event the
                    # commit cannot write fails the message (a commit that did go through despite
                    # an error is skipped by its inbox row when the message comes back).
                    await uow.commit()
                except Exception as exc:
                    if attempt == _CONFLICT_ATTEMPTS or not transient_errors.is_conflict(exc):
                        self._failed(msg, exc)
                        return [(msg, exc)]
                    CONFLICTS.labels(durable).inc()
                    continue  # leaving the unit of work rolls the transaction back
            if applied:
                APPLIED.labels(durable, (msg.headers or {}).get(envelope.EVENT_TYPE, "")).inc()
            return []
        raise AssertionError("unreachable: the last attempt returns")

    async def _apply_batch_of(self, messages: list[Msg]) -> list[tuple[Msg, BaseException]]:
        """Applies the messages in one transaction (`_apply_together`); returns those that failed
        with their errors. Should the transaction itself fail (its commit: a write deferred to
        it, a conflict there), nothing of it was kept, and each message is applied alone: the
        one at fault then fails by itself (counted, retried, in the end dead-lettered) instead of
        taking the whole batch back to the server at every delivery."""
        try:
            return await self._apply_together(messages)
        except Exception:
            BATCH_TRANSACTION_FAILURES.labels(self.subscription.durable).inc()
            log.warning(
                "batch transaction failed; applying its messages one by one",
                extra={"consumer": self.subscription.durable, "events": len(messages)},
                exc_info=True,
            )
        failed: list[tuple[Msg, BaseException]] = []
        for msg in messages:
            failed += await self._apply_lone(msg)
        return failed

    async def _apply_together(self, messages: list[Msg]) -> list[tuple[Msg, BaseException]]:
        """Applies the messages in one transaction, each (or each batch handler's call) in a
        savepoint; returns those that failed with their errors."""
        deferred: list[Callable[[], None]] = []
        self._deferred = deferred
        try:
            async with self._uow_factory() as uow:
                failed = await self._apply_in(uow, messages)
                await uow.commit()
        finally:
            self._deferred = None
        for count in deferred:
            count()
        return failed

    async def _apply_in(self, uow: U, messages: list[Msg]) -> list[tuple[Msg, BaseException]]:
        """`_apply_together`'s work in its transaction, up to the commit."""
        durable = self.subscription.durable
        batch_handlers = self.subscription.batch_handlers
        failed: list[tuple[Msg, BaseException]] = []
        # The batch's inbox rows first, in one insert sorted by event id: two replicas holding the
        # same redelivered events (an ack wait ran out under load) then wait on each other in
        # one order and never deadlock; the second finds the rows and skips those events.
        claimed = await self._claim(uow, messages)
        singles: list[tuple[Msg, uuid.UUID]] = []
        batches: dict[BatchHandler[U], list[tuple[Msg, uuid.UUID]]] = {}
        for msg in messages:
            event_id = _event_id(msg)
            if event_id is None or event_id not in claimed:
                if event_id is None:
                    failed.append(self._without_an_id(msg))
                else:
                    self._count(SKIPPED.labels(durable).inc)  # applied before, or earlier in this batch
                continue
            claimed.discard(event_id)
            batch_handler = batch_handlers.get((msg.headers or {}).get(envelope.EVENT_TYPE, ""))
            if batch_handler is None:
                singles.append((msg, event_id))
            else:
                batches.setdefault(batch_handler, []).append((msg, event_id))
        if self.subscription.advisory_locks:
            await self._take_locks(uow, [*singles, *(m for batch in batches.values() for m in batch)])
        one_by_one: list[tuple[Msg, uuid.UUID]] = []
        for batch_handler, batch in batches.items():
            if len(batch) == 1 or not await self._apply_batch(uow, batch_handler, batch):
                one_by_one += batch  # a lone event, or the batch handler raised
        for msg, event_id in one_by_one + singles:
            error = await self._apply_one(uow, msg, event_id)
            if error is not None:
                failed.append((msg, error))
        return failed

    async def _apply_one(self, uow: U, msg: Msg, event_id: uuid.UUID) -> BaseException | None:
        """Applies one message in its savepoint; returns the error when it failed (its writes,
        events and inbox row undone, so that a retry applies it)."""
        durable = self.subscription.durable
        mark = uow.checkpoint()
        applied = False

        async def apply() -> None:
            nonlocal applied
            applied = await self._apply(uow, msg, event_id)

        try:
            await self._retrying_conflicts(uow, apply)
        except Exception as exc:
            # The savepoint rolled back this message's writes; forget its events and give
            # back its inbox row so the retry applies it.
            uow.discard_since(mark)
            await uow.session.execute(
                delete(self._inbox).where(self._inbox.c.consumer == durable, self._inbox.c.event_id == event_id)
            )
            self._failed(msg, exc)
            return exc
        if applied:
            self._count(APPLIED.labels(durable, (msg.headers or {}).get(envelope.EVENT_TYPE, "")).inc)
        return None

    def _count(self, count: Callable[[], None]) -> None:
        """Counts now, or at the commit of the batch's transaction when one is open."""
        if self._deferred is None:
            count()
        else:
            self._deferred.append(count)

    def _without_an_id(self, msg: Msg) -> tuple[Msg, BaseException]:
        """A message without a valid event id: failed (the inbox cannot tell whether it was applied)."""
        error = ValueError(f"no valid {envelope.EVENT_ID} header")
        self._failed(msg, error)
        return msg, error

    def _failed(self, msg: Msg, exc: BaseException) -> None:
        durable = self.subscription.durable
        self._count(FAILED.labels(durable).inc)
        log.warning(
            "event failed",
            extra={"consumer": durable, "subject": msg.subject, "attempt": msg.metadata.num_delivered},
            exc_info=exc,
        )

    async def _apply_batch(self, uow: U, batch_handler: BatchHandler[U], batch: list[tuple[Msg, uuid.UUID]]) -> bool:
        """Applies the messages by their batch handler in one savepoint; False when it raised (the
        savepoint rolled back and the events it recorded are dropped: the caller applies the
        messages one by one)."""
        durable = self.subscription.durable
        mark = uow.checkpoint()

        async def apply() -> None:
            events = [self._decode(msg, event_id) for msg, event_id in batch]
            await batch_handler.handle(uow, events)

        try:
            await self._retrying_conflicts(uow, apply)
        except Exception as exc:
            uow.discard_since(mark)
            BATCH_FALLBACKS.labels(durable).inc()
            log.warning(
                "batch handler failed; applying its events one by one",
                extra={"consumer": durable, "events": len(batch)},
                exc_info=exc,
            )
            return False
        for msg, _ in batch:
            self._count(APPLIED.labels(durable, (msg.headers or {}).get(envelope.EVENT_TYPE, "")).inc)
        return True

    async def _take_locks(self, uow: U, claimed: list[tuple[Msg, uuid.UUID]]) -> None:
        """Takes the advisory locks the claimed events' handlers will take, all in one statement in
        key order (Subscription.advisory_locks). An event that does not decode names none (its own
        handler fails on it, alone). Should taking them fail, the handlers take their own as they
        go, as without this step."""
        names = self._lock_names(claimed)
        if not names:
            return
        mark = uow.checkpoint()
        try:
            await self._retrying_conflicts(uow, lambda: advisory_xact_locks(uow.session, names))
        except Exception:
            uow.discard_since(mark)
            log.warning(
                "taking the batch's advisory locks failed; each handler takes its own",
                extra={"consumer": self.subscription.durable, "locks": len(names)},
                exc_info=True,
            )

    def _lock_names(self, claimed: list[tuple[Msg, uuid.UUID]]) -> set[str]:
        """The advisory locks the claimed events' handlers will take (Subscription.advisory_locks).
        An event that does not decode names none: its own handler fails on it, alone."""
        names_of = self.subscription.advisory_locks
        names: set[str] = set()
        for msg, event_id in claimed:
            event_type = (msg.headers or {}).get(envelope.EVENT_TYPE, "")
            if event_type not in names_of:
                continue
            try:
                message, _ = self._decode(msg, event_id)
                names.update(names_of[event_type](message))
            except Exception:  # the event's handler reports it
                continue
        return names

    async def _claim(self, uow: U, messages: list[Msg]) -> set[uuid.UUID]:
        """Inserts the inbox rows of the batch's events this consumer has not applied; returns
        their ids."""
        rows = {}
        for msg in messages:
            event_id = _event_id(msg)
            if event_id is not None and event_id not in rows:
                rows[event_id] = (msg.headers or {}).get(envelope.EVENT_TYPE, "")
        if not rows:
            return set()
        # One statement over arrays whatever the batch's size (evolutivo_runtime.bulk).
        inserted = await uow.session.execute(
            *insert_rows(
                self._inbox,
                [
                    {"consumer": self.subscription.durable, "event_id": event_id, "event_type": rows[event_id]}
                    for event_id in sorted(rows)
                ],
                on_conflict_columns=("consumer", "event_id"),
                returning=("event_id",),
            )
        )
        return set(inserted.scalars().all())

    async def _retrying_conflicts(self, uow: U, apply: Callable[[], Awaitable[None]]) -> None:
        """Runs `apply` in a savepoint. A deadlock or serialization failure in it is retried here, a
        few times, instead of failing: the other transaction usually only had to go first."""
        for attempt in range(1, _CONFLICT_ATTEMPTS + 1):
            mark = uow.checkpoint()
            try:
                async with uow.session.begin_nested():
                    await apply()
                return
            except Exception as exc:
                if attempt == _CONFLICT_ATTEMPTS or not transient_errors.is_conflict(exc):
                    raise
                uow.discard_since(mark)
                CONFLICTS.labels(self.subscription.durable).inc()
                await asyncio.sleep(0.05 * attempt)

    def _settled(self, msg: Msg) -> bool:
        """Whether the subscription's predicate for the message's type knows it changes nothing."""
        event_type = (msg.headers or {}).get(envelope.EVENT_TYPE, "")
        predicate = self.subscription.settled.get(event_type)
        if predicate is None or _event_id(msg) is None:
            return False  # (a message without a valid id fails where it is applied)
        try:
            return bool(predicate(self.subscription.handlers[event_type].message_type.FromString(msg.data)))
        except Exception:
            return False  # an event that does not decode fails where it is applied, as any other

    def _decode(self, msg: Msg, event_id: uuid.UUID) -> tuple[Any, envelope.EventMeta]:
        """The message's event, decoded by its type's handler, and its metadata."""
        headers = msg.headers or {}
        event_type = headers.get(envelope.EVENT_TYPE, "")
        handler = self.subscription.handlers[event_type]
        meta = envelope.EventMeta(
            event_id=event_id,
            event_type=event_type,
            subject=msg.subject,
            occurred_at=datetime.fromisoformat(headers[envelope.OCCURRED_AT]),
            stream_sequence=msg.metadata.sequence.stream,
        )
        return handler.message_type.FromString(msg.data), meta

    async def _apply(self, uow: U, msg: Msg, event_id: uuid.UUID) -> bool:
        """Applies the message by its type's handler; False for a type this consumer has none for."""
        event_type = (msg.headers or {}).get(envelope.EVENT_TYPE, "")
        handler = self.subscription.handlers.get(event_type)
        if handler is None:
            # An event type this consumer does not apply (a newer publisher): recorded, not an error.
            return False
        message, meta = self._decode(msg, event_id)
        await handler.handle(uow, message, meta)
        return True
