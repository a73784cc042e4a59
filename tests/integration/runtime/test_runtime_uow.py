"""UnitOfWork: events reach the outbox in the same transaction as the state change, or not at all."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import asyncpg  # type: ignore[import-untyped,unused-ignore]
import pytest
from evolutivo_runtime.clock import FixedClock
from evolutivo_runtime.db import plain_url
from evolutivo_runtime.messaging import envelope
from evolutivo_runtime.messaging.tables import OUTBOX_CHANNEL
from evolutivo_runtime.security.audit import AuditContext, audit_log, current_audit, grouped_audits
from evolutivo_runtime.uow import UnitOfWork
from google.protobuf.message import Message
from google.protobuf.wrappers_pb2 import StringValue
from runtime_helpers import MessagingDb  # type: ignore[import-not-found,unused-ignore]
from sqlalchemy import event, insert, select, text
from sqlalchemy.exc import IntegrityError

NOW = datetime(2031, 5, 17, 9, 30, tzinfo=UTC)
SUBJECT = "evolutivo.uowtest.v1.item.created"


def _uow(db: MessagingDb) -> UnitOfWork:
    return UnitOfWork(db.sessions, db.outbox, FixedClock(NOW))


async def test_commit_writes_state_and_events_together(messaging_db: MessagingDb) -> None:
    db = messaging_db
    async with _uow(db) as uow:
        await uow.session.execute(insert(db.items).values(id="a", value="alpha"))
        first = uow.publish(SUBJECT, StringValue(value="alpha"))
        second = uow.publish(SUBJECT + ".again", StringValue(value="alpha-2"))
        assert uow.events == [first, second]
        await uow.commit()
        assert uow.events == []

    assert await db.count(db.items) == 1
    async with db.engine.connect() as conn:
        rows = (await conn.execute(select(db.outbox).order_by(db.outbox.c.seq))).all()
    assert [r.event_id for r in rows] == [first.event_id, second.event_id]
    assert rows[0].seq < rows[1].seq
    assert [r.subject for r in rows] == [SUBJECT, SUBJECT + ".again"]
    assert [r.event_type for r in rows] == ["google.protobuf.StringValue"] * 2
    assert StringValue.FromString(rows[0].payload).value == "alpha"
    assert StringValue.FromString(rows[1].payload).value == "alpha-2"
    assert rows[0].headers == {
        envelope.MSG_ID: str(first.event_id),
        envelope.EVENT_ID: str(first.event_id),
        envelope.EVENT_TYPE: "google.protobuf.StringValue",
        envelope.OCCURRED_AT: NOW.isoformat(),
    }
    assert rows[0].created_at is not None


async def test_commit_without_events_writes_no_outbox_row(messaging_db: MessagingDb) -> None:
    db = messaging_db
    async with _uow(db) as uow:
        await uow.session.execute(insert(db.items).values(id="a", value="alpha"))
        await uow.commit()
    assert await db.count(db.items) == 1
    assert await db.count(db.outbox) == 0


async def test_explicit_rollback_writes_nothing(messaging_db: MessagingDb) -> None:
    db = messaging_db
    async with _uow(db) as uow:
        await uow.session.execute(insert(db.items).values(id="a", value="alpha"))
        uow.publish(SUBJECT, StringValue(value="alpha"))
        await uow.rollback()
        assert uow.events == []
        # The unit of work is usable again after a rollback; only what follows is committed.
        await uow.session.execute(insert(db.items).values(id="b", value="beta"))
        kept = uow.publish(SUBJECT, StringValue(value="beta"))
        await uow.commit()

    async with db.engine.connect() as conn:
        assert (await conn.execute(select(db.items.c.id))).scalars().all() == ["b"]
        assert (await conn.execute(select(db.outbox.c.event_id))).scalars().all() == [kept.event_id]


async def test_leaving_without_commit_writes_nothing(messaging_db: MessagingDb) -> None:
    db = messaging_db
    async with _uow(db) as uow:
        await uow.session.execute(insert(db.items).values(id="a", value="alpha"))
        uow.publish(SUBJECT, StringValue(value="alpha"))
    assert await db.count(db.items) == 0
    assert await db.count(db.outbox) == 0


async def test_exception_inside_writes_nothing(messaging_db: MessagingDb) -> None:
    db = messaging_db
    with pytest.raises(RuntimeError, match="boom"):
        async with _uow(db) as uow:
            await uow.session.execute(insert(db.items).values(id="a", value="alpha"))
            uow.publish(SUBJECT, StringValue(value="alpha"))
            raise RuntimeError("boom")
    assert await db.count(db.items) == 0
    assert await db.count(db.outbox) == 0


async def _deferred_unique_table(db: MessagingDb, name: str) -> None:
    """A table whose ids are checked unique only at COMMIT: a commit that fails after its statements."""
    async with db.engine.begin() as conn:
        await conn.execute(
            text(
                f"CREATE TABLE {name} (id text NOT NULL,"
                f" CONSTRAINT {name}_id UNIQUE (id) DEFERRABLE INITIALLY DEFERRED)"
            )
        )


async def test_failed_commit_writes_neither_state_nor_events(messaging_db: MessagingDb) -> None:
    """A constraint checked only at COMMIT fails the commit: the events must go with the state."""
    db = messaging_db
    await _deferred_unique_table(db, "deferred_items")
    async with db.engine.begin() as conn:
        await conn.execute(text("INSERT INTO deferred_items VALUES ('a')"))

    with pytest.raises(IntegrityError):
        async with _uow(db) as uow:
            await uow.session.execute(insert(db.items).values(id="a", value="alpha"))
            await uow.session.execute(text("INSERT INTO deferred_items VALUES ('a')"))  # fails at COMMIT
            uow.publish(SUBJECT, StringValue(value="alpha"))
            await uow.commit()

    assert await db.count(db.items) == 0
    assert await db.count(db.outbox) == 0


async def test_after_commit_callbacks_run_once_committed_only(messaging_db: MessagingDb) -> None:
    """after_commit: run after a commit that went through; not on rollback, on leaving without
    committing, or when the commit itself fails; not carried into the next transaction."""
    db = messaging_db
    await _deferred_unique_table(db, "deferred_keys")
    ran: list[str] = []
    uow = _uow(db)
    async with uow:
        await uow.session.execute(insert(db.items).values(id="a", value="alpha"))
        uow.after_commit(lambda: ran.append("committed"))
        assert ran == []
        await uow.commit()
    assert ran == ["committed"]
    async with uow:
        uow.after_commit(lambda: ran.append("rolled back"))
        await uow.rollback()
        await uow.commit()
    async with uow:
        uow.after_commit(lambda: ran.append("left"))
    async with uow:
        await uow.commit()
    with pytest.raises(IntegrityError):
        async with uow:
            uow.after_commit(lambda: ran.append("failed"))
            # A duplicate key checked only at COMMIT: the commit itself fails.
            await uow.session.execute(text("INSERT INTO deferred_keys VALUES ('a'), ('a')"))
            await uow.commit()
    assert ran == ["committed"]


async def test_notify_is_delivered_on_commit_only(messaging_db: MessagingDb) -> None:
    db = messaging_db
    notifications: asyncio.Queue[str] = asyncio.Queue()
    listener = await asyncpg.connect(plain_url(db.url))
    try:
        await listener.add_listener(
            OUTBOX_CHANNEL, lambda _conn, _pid, channel, _payload: notifications.put_nowait(channel)
        )

        async with _uow(db) as uow:
            uow.publish(SUBJECT, StringValue(value="rolled back"))
            await uow.rollback()
        async with _uow(db) as uow:
            uow.publish(SUBJECT, StringValue(value="abandoned"))
        async with _uow(db) as uow:
            await uow.commit()  # nothing to publish: no notification needed
        async with _uow(db) as uow:
            uow.publish(SUBJECT, StringValue(value="committed"))
            await uow.commit()

        assert await asyncio.wait_for(notifications.get(), timeout=5) == OUTBOX_CHANNEL
        # Exactly one notification: a round trip on the listener flushes anything still in flight.
        await listener.execute("SELECT 1")
        assert notifications.empty()
    finally:
        await listener.close()
    assert await db.count(db.outbox) == 1


async def test_many_events_of_one_commit_keep_their_publication_order(messaging_db: MessagingDb) -> None:
    """The relay publishes by seq: the events of one commit, written in one statement, take their
    seqs in the order they were published (their random ids sort otherwise)."""
    db = messaging_db
    async with _uow(db) as uow:
        published = [uow.publish(SUBJECT, StringValue(value=f"v{i}")) for i in range(50)]
        await uow.commit()
    async with db.engine.connect() as conn:
        rows = (await conn.execute(select(db.outbox.c.event_id, db.outbox.c.payload).order_by(db.outbox.c.seq))).all()
    assert [r.event_id for r in rows] == [e.event_id for e in published]
    assert [StringValue.FromString(r.payload).value for r in rows] == [f"v{i}" for i in range(50)]
    assert sorted(e.event_id for e in published) != [e.event_id for e in published]


async def test_concurrent_units_of_work_get_distinct_increasing_seqs(messaging_db: MessagingDb) -> None:
    db = messaging_db

    async def one(i: int) -> uuid.UUID:
        async with _uow(db) as uow:
            await uow.session.execute(insert(db.items).values(id=f"i{i}", value=str(i)))
            event = uow.publish(SUBJECT, StringValue(value=str(i)))
            await uow.commit()
            return event.event_id

    ids = await asyncio.gather(*(one(i) for i in range(20)))
    async with db.engine.connect() as conn:
        rows = (await conn.execute(select(db.outbox.c.seq, db.outbox.c.event_id))).all()
    assert sorted(r.event_id for r in rows) == sorted(ids)
    assert len({r.seq for r in rows}) == 20
    assert await db.count(db.items) == 20


# Aggregates tracked by the unit of work: their domain events are encoded and written at commit.


@dataclass
class Thing:
    name: str
    events: list[object] = field(default_factory=list)

    def rename(self, name: str) -> None:
        self.name = name
        self.events.append(ThingRenamed(name))


@dataclass(frozen=True)
class ThingRenamed:
    name: str


def encode(event: object) -> tuple[str, Message]:
    match event:
        case ThingRenamed(name=name):
            return SUBJECT + ".renamed", StringValue(value=name)
    raise TypeError(f"no protobuf event for {type(event).__name__}")


def _tracking_uow(db: MessagingDb) -> UnitOfWork:
    return UnitOfWork(db.sessions, db.outbox, FixedClock(NOW), encode)


async def _outbox_values(db: MessagingDb) -> list[tuple[str, str]]:
    async with db.engine.connect() as conn:
        rows = (await conn.execute(select(db.outbox.c.subject, db.outbox.c.payload).order_by(db.outbox.c.seq))).all()
    return [(r.subject, StringValue.FromString(r.payload).value) for r in rows]


async def test_tracked_aggregate_events_are_written_at_commit(messaging_db: MessagingDb) -> None:
    db = messaging_db
    thing = Thing("a")
    async with _tracking_uow(db) as uow:
        uow.track(thing)
        thing.rename("b")
        thing.rename("c")  # events recorded after track() count too: they are collected at commit
        uow.publish(SUBJECT, StringValue(value="explicit"))
        await uow.commit()
    assert thing.events == []
    assert sorted(await _outbox_values(db)) == sorted(
        [(SUBJECT, "explicit"), (SUBJECT + ".renamed", "b"), (SUBJECT + ".renamed", "c")]
    )


async def test_tracked_aggregate_is_forgotten_on_rollback(messaging_db: MessagingDb) -> None:
    db = messaging_db
    thing = Thing("a")
    async with _tracking_uow(db) as uow:
        uow.track(thing)
        thing.rename("b")
        await uow.rollback()
        await uow.commit()
    assert await db.count(db.outbox) == 0


async def test_tracked_events_without_an_encoder_fail_the_commit(messaging_db: MessagingDb) -> None:
    db = messaging_db
    thing = Thing("a")
    with pytest.raises(TypeError, match="no encoder"):
        async with UnitOfWork(db.sessions, db.outbox, FixedClock(NOW)) as uow:
            await uow.session.execute(insert(db.items).values(id="a", value="alpha"))
            uow.track(thing)
            thing.rename("b")
            await uow.commit()
    assert await db.count(db.items) == 0
    assert await db.count(db.outbox) == 0


async def test_discard_since_drops_what_a_failed_step_added(messaging_db: MessagingDb) -> None:
    db = messaging_db
    kept, dropped = Thing("kept"), Thing("dropped")
    async with _tracking_uow(db) as uow:
        uow.track(kept)
        kept.rename("kept-1")
        uow.publish(SUBJECT, StringValue(value="before"))
        mark = uow.checkpoint()
        uow.publish(SUBJECT, StringValue(value="failed step"))
        uow.track(dropped)
        dropped.rename("dropped-1")
        uow.discard_since(mark)
        await uow.commit()
    assert sorted(await _outbox_values(db)) == [(SUBJECT, "before"), (SUBJECT + ".renamed", "kept-1")]


async def test_discard_since_drops_events_a_failed_step_recorded_on_an_already_tracked_aggregate(
    messaging_db: MessagingDb,
) -> None:
    """The checkpoint remembers how many aggregates are tracked, not how many events each holds:
    an aggregate tracked before the checkpoint (a repository's identity map hands the same object
    to the next message of the batch) keeps the events of the failed, rolled-back step."""
    db = messaging_db
    thing = Thing("a")
    async with _tracking_uow(db) as uow:
        uow.track(thing)
        thing.rename("by the step that succeeded")
        mark = uow.checkpoint()
        thing.rename("by the step that failed")
        uow.track(thing)
        uow.discard_since(mark)
        await uow.commit()
    assert await _outbox_values(db) == [(SUBJECT + ".renamed", "by the step that succeeded")]


@contextmanager
def statements(db: MessagingDb) -> Iterator[list[str]]:
    """The statements the test's database is sent while the block runs."""
    seen: list[str] = []

    def before(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        seen.append(statement)

    event.listen(db.engine.sync_engine, "before_cursor_execute", before)
    try:
        yield seen
    finally:
        event.remove(db.engine.sync_engine, "before_cursor_execute", before)


async def _audited_db(db: MessagingDb) -> None:
    async with db.engine.begin() as conn:
        await conn.run_sync(lambda sync: audit_log.create(sync, checkfirst=True))


def _audit_context(rpc: str, account_id: str) -> AuditContext:
    return AuditContext(
        actor="platform:crm",
        actor_issuer="test",
        rpc=rpc,
        request_id=f"req-{rpc}",
        request_ids={"account_id": account_id},
        sessions=None,
        clock=FixedClock(NOW),
    )


async def _audit_rows(db: MessagingDb) -> list[Any]:
    async with db.engine.connect() as conn:
        return list((await conn.execute(select(audit_log).order_by(audit_log.c.seq))).all())


async def test_commit_writes_its_events_and_the_calls_audit_record_in_one_statement(
    messaging_db: MessagingDb,
) -> None:
    db = messaging_db
    await _audited_db(db)
    context = _audit_context("/evolutivo.test.v1.Things/Create", "7d1c3d4e-0000-4000-8000-000000000001")
    token = current_audit.set(context)
    try:
        async with _uow(db) as uow:
            await uow.session.execute(insert(db.items).values(id="a", value="alpha"))
            event = uow.publish(SUBJECT, StringValue(value="alpha"))
            with statements(db) as seen:
                await uow.commit()
    finally:
        current_audit.reset(token)

    writes = [s for s in seen if "INSERT" in s]
    assert len(writes) == 1, seen
    assert "INSERT INTO audit_log" in writes[0] and "INSERT INTO outbox" in writes[0]
    assert context.recorded == 1
    [record] = await _audit_rows(db)
    assert (record.actor, record.rpc, record.request_id, record.source) == (
        "platform:crm",
        "/evolutivo.test.v1.Things/Create",
        "req-/evolutivo.test.v1.Things/Create",
        "unit_of_work",
    )
    assert record.account_id == "7d1c3d4e-0000-4000-8000-000000000001"
    assert record.event_types == ["google.protobuf.StringValue"]
    assert record.occur_time == NOW
    async with db.engine.connect() as conn:
        assert (await conn.scalars(select(db.outbox.c.event_id))).all() == [event.event_id]


async def test_grouped_calls_without_events_get_a_record_each_from_the_commit(messaging_db: MessagingDb) -> None:
    db = messaging_db
    await _audited_db(db)
    group = (
        _audit_context("/evolutivo.test.v1.Things/One", "7d1c3d4e-0000-4000-8000-000000000002"),
        _audit_context("/evolutivo.test.v1.Things/Two", "7d1c3d4e-0000-4000-8000-000000000003"),
    )
    token = grouped_audits.set(group)
    try:
        async with _uow(db) as uow:
            await uow.session.execute(insert(db.items).values(id="b", value="beta"))
            await uow.commit()
    finally:
        grouped_audits.reset(token)

    assert [c.recorded for c in group] == [1, 1]
    records = await _audit_rows(db)
    assert [(r.rpc, r.account_id, r.event_types) for r in records] == [
        ("/evolutivo.test.v1.Things/One", "7d1c3d4e-0000-4000-8000-000000000002", []),
        ("/evolutivo.test.v1.Things/Two", "7d1c3d4e-0000-4000-8000-000000000003", []),
    ]
    assert await db.count(db.outbox) == 0


async def test_an_audited_commit_whose_statement_fails_keeps_nothing(messaging_db: MessagingDb) -> None:
    """The outbox rows and the audit record share a statement: when it fails, neither is kept,
    nor the change, and the call is not counted as recorded."""
    db = messaging_db
    await _audited_db(db)
    async with _uow(db) as uow:
        sent = uow.publish(SUBJECT, StringValue(value="first"))
        await uow.commit()
    context = _audit_context("/evolutivo.test.v1.Things/Create", "7d1c3d4e-0000-4000-8000-000000000004")
    token = current_audit.set(context)
    try:
        with pytest.raises(IntegrityError):
            async with _uow(db) as uow:
                await uow.session.execute(insert(db.items).values(id="c", value="gamma"))
                uow.events.append(sent)  # the same event id again: the outbox refuses it
                await uow.commit()
    finally:
        current_audit.reset(token)
    assert context.recorded == 0
    assert await _audit_rows(db) == []
    assert await db.count(db.items) == 0
    assert await db.count(db.outbox) == 1


ADD_ITEM = text("INSERT INTO items (id, value) VALUES (:id, :value)")
RENAME_ITEM = text("UPDATE items SET value = :new_value WHERE id = :renamed")


async def _items(db: MessagingDb) -> dict[str, str]:
    async with db.engine.connect() as conn:
        return {r.id: r.value for r in await conn.execute(select(db.items))}


async def test_writes_deferred_to_the_commit_go_with_its_events_in_one_statement(messaging_db: MessagingDb) -> None:
    db = messaging_db
    async with _uow(db) as uow:
        await uow.session.execute(insert(db.items).values(id="a", value="alpha"))
        with statements(db) as seen:
            uow.write_at_commit(ADD_ITEM, {"id": "b", "value": "beta"})
            uow.write_at_commit(RENAME_ITEM, {"new_value": "alpha-2", "renamed": "a"})
            event = uow.publish(SUBJECT, StringValue(value="beta"))
            assert seen == []  # nothing is sent before the commit
            await uow.commit()
    assert len(seen) == 1 and "INSERT INTO items" in seen[0] and "UPDATE items" in seen[0]
    assert "INSERT INTO outbox" in seen[0]
    assert await _items(db) == {"a": "alpha-2", "b": "beta"}
    async with db.engine.connect() as conn:
        assert (await conn.scalars(select(db.outbox.c.event_id))).all() == [event.event_id]


async def test_a_lone_deferred_write_is_the_commits_statement(messaging_db: MessagingDb) -> None:
    db = messaging_db
    async with _uow(db) as uow:
        uow.write_at_commit(ADD_ITEM, {"id": "a", "value": "alpha"})
        with statements(db) as seen:
            await uow.commit()
    assert [s for s in seen if "items" in s] == ["INSERT INTO items (id, value) VALUES ($1, $2)"]
    assert await _items(db) == {"a": "alpha"}
    assert await db.count(db.outbox) == 0


async def test_deferred_writes_are_dropped_with_their_savepoint_or_the_rollback(messaging_db: MessagingDb) -> None:
    db = messaging_db
    async with _uow(db) as uow:
        uow.write_at_commit(ADD_ITEM, {"id": "kept", "value": "k"})
        mark = uow.checkpoint()
        uow.write_at_commit(text("INSERT INTO items (id, value) VALUES (:other, 'x')"), {"other": "dropped"})
        uow.discard_since(mark)
        await uow.commit()
    async with _uow(db) as uow:
        uow.write_at_commit(ADD_ITEM, {"id": "rolled-back", "value": "r"})
        await uow.rollback()
        await uow.commit()
    assert await _items(db) == {"kept": "k"}


async def test_writes_binding_one_name_to_two_values_are_refused_and_keep_nothing(messaging_db: MessagingDb) -> None:
    db = messaging_db
    async with _uow(db) as uow:
        # The same name with the same value is one parameter.
        uow.write_at_commit(ADD_ITEM, {"id": "a", "value": "same"})
        uow.write_at_commit(
            text("INSERT INTO items (id, value) VALUES (:b_id, :value)"), {"b_id": "b", "value": "same"}
        )
        await uow.commit()
    with pytest.raises(ValueError, match="'id'"):
        async with _uow(db) as uow:
            uow.write_at_commit(ADD_ITEM, {"id": "c", "value": "x"})
            uow.write_at_commit(ADD_ITEM, {"id": "d", "value": "x"})
            await uow.commit()
    assert await _items(db) == {"a": "same", "b": "same"}


async def test_a_failing_deferred_write_fails_the_commit_and_keeps_nothing(messaging_db: MessagingDb) -> None:
    db = messaging_db
    async with _uow(db) as uow:
        await uow.session.execute(insert(db.items).values(id="a", value="alpha"))
        await uow.commit()
    with pytest.raises(IntegrityError):
        async with _uow(db) as uow:
            await uow.session.execute(insert(db.items).values(id="b", value="beta"))
            uow.write_at_commit(ADD_ITEM, {"id": "a", "value": "again"})  # the key exists
            uow.publish(SUBJECT, StringValue(value="b"))
            await uow.commit()
    assert await _items(db) == {"a": "alpha"}
    assert await db.count(db.outbox) == 0
