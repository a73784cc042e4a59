"""Bill cycles against a real, migrated database: the first cycle opened with the bill unit (through
the runtime's consumer), the cycle closer (due cycles, events through the outbox, concurrent
closers, clock jumps, pending profiles, failures), ListBillCycles and the 0003 migration."""

from __future__ import annotations

import asyncio
import dataclasses
import itertools
import json
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import asyncpg
import grpc
import pytest
import sqlalchemy
from alembic import command
from evolutivo.billing.v1 import bill_cycle_pb2, events_pb2
from evolutivo.billing.v1 import billing_service_pb2 as pb
from evolutivo.customer.v1 import account_pb2
from evolutivo_billing.adapters import events, proto
from evolutivo_billing.adapters.orm import bill_cycles, bill_units, inbox, outbox
from evolutivo_billing.adapters.repository import CycleAlreadyClosed
from evolutivo_billing.domain.cycles import BillCycle, BillCycleStatus
from evolutivo_billing.domain.model import BillingFrequency, BillingProfile, BillUnit
from evolutivo_billing.entrypoints.app import MIGRATIONS
from evolutivo_billing.entrypoints.consumers import subscriptions
from evolutivo_billing.entrypoints.cycle_closer import CycleCloser
from evolutivo_billing.entrypoints.grpc_api import BillingServicer
from evolutivo_billing.service_layer import handlers
from evolutivo_billing.service_layer.cycles import close_due_cycles
from evolutivo_billing.service_layer.unit_of_work import BillingUnitOfWork
from evolutivo_runtime.db import plain_url
from evolutivo_runtime.errors import InvalidArgument, NotFound
from evolutivo_runtime.messaging.streams import stream_name
from evolutivo_runtime.migrations import alembic_config
from evolutivo_runtime.testing import eventually
from evolutivo_runtime.timestamps import to_timestamp
from google.protobuf.message import Message
from sqlalchemy import select, text, update
from sqlalchemy.exc import IntegrityError
from support.billing import billing_stub
from support.customer_messages import created_message, status_changed_message
from support.databases import EmptyDatabase, MigratedDatabase, ServiceDb
from support.jetstream import FakeMsg, consumer_for, process

MADRID = ZoneInfo("Europe/Madrid")
DELAY = timedelta(hours=1)
NO_CONTEXT: Any = None
MONTHLY_15 = BillingProfile(15, BillingFrequency.MONTHLY, 30)

OPENED = "evolutivo.billing.v1.bill_cycle.opened"
CLOSED = "evolutivo.billing.v1.bill_cycle.closed"
UNIT_CREATED = "evolutivo.billing.v1.bill_unit.created"
_EVENT_TYPES: dict[str, type[Message]] = {
    "evolutivo.billing.v1.BillUnitCreated": events_pb2.BillUnitCreated,
    "evolutivo.billing.v1.BillCycleOpened": events_pb2.BillCycleOpened,
    "evolutivo.billing.v1.BillCycleClosed": events_pb2.BillCycleClosed,
}


def madrid(year: int, month: int, day: int, hour: int = 0, minute: int = 0) -> datetime:
    """The UTC instant of a Madrid wall-clock time."""
    return datetime(year, month, day, hour, minute, tzinfo=MADRID).astimezone(UTC)


NOW = madrid(2031, 5, 10, 12)


class BillingDb(ServiceDb):
    def uow(self) -> BillingUnitOfWork:
        return BillingUnitOfWork(self.sessions, outbox, self.clock, events.encode)

    def closer(self, batch_size: int = 100) -> CycleCloser:
        return CycleCloser(self.uow, DELAY, check_seconds=0.05, batch_size=batch_size)

    async def cycles(self, account_id: uuid.UUID | None = None) -> list[BillCycle]:
        """The account's cycles (every cycle when None), oldest first."""
        t = bill_cycles
        query = select(t).order_by(t.c.account_id, t.c.sequence)
        if account_id is not None:
            query = query.where(t.c.account_id == account_id)
        return [
            BillCycle(**{k: v for k, v in row._mapping.items() if k != "status"}, status=BillCycleStatus(row.status))
            for row in await self.rows(query)
        ]

    async def unit(self, account_id: uuid.UUID) -> BillUnit:
        async with self.uow() as uow:
            found = await uow.bill_units.for_account(account_id)
        assert found is not None
        return found

    async def events(self, *subjects: str) -> list[tuple[str, Any]]:
        """The outbox's events in publication order, decoded (only those on `subjects` if given)."""
        return [
            (row.subject, _EVENT_TYPES[row.event_type].FromString(row.payload))
            for row in await self.rows(select(outbox).order_by(outbox.c.seq))
            if not subjects or row.subject in subjects
        ]


@pytest.fixture
async def db(migrated_database: MigratedDatabase) -> AsyncIterator[BillingDb]:
    async with BillingDb.open(await migrated_database("billing", MIGRATIONS), NOW, pool_size=12) as database:
        yield database


async def open_unit(
    db: BillingDb, created: datetime, profile: BillingProfile = MONTHLY_15, account_id: uuid.UUID | None = None
) -> uuid.UUID:
    """An account's bill unit and first cycle, as the AccountCreated handler opens them."""
    account_id = account_id or uuid.uuid4()
    async with db.uow() as uow:
        await handlers.open_bill_unit(uow, account_id, "EUR", "Europe/Madrid", profile, db.clock.now(), created)
        await uow.commit()
    return account_id


# The first cycle, opened with the bill unit by customer's events.


def customer_account(account_id: uuid.UUID, create_time: datetime | None) -> account_pb2.Account:
    return account_pb2.Account(
        account_id=str(account_id),
        account_number="A-00000042",
        type=account_pb2.ACCOUNT_TYPE_BUSINESS,
        display_name="Acme Distribuciones SL",
        currency_code="EUR",
        time_zone="Europe/Madrid",
        status=account_pb2.ACCOUNT_STATUS_ACTIVE,
        billing_profile=account_pb2.BillingProfile(
            bill_cycle_day=15, frequency=account_pb2.BILLING_FREQUENCY_MONTHLY, payment_terms_days=30
        ),
        create_time=to_timestamp(create_time),
    )


def account_created(account_id: uuid.UUID, create_time: datetime | None, occurred_at: datetime = NOW) -> FakeMsg:
    return created_message(customer_account(account_id, create_time), occurred_at)


async def deliver(db: BillingDb, *msgs: FakeMsg) -> None:
    """One fetched batch, applied as the service's consumer applies it."""
    await process(consumer_for(subscriptions(), stream_name("customer"), db.uow, inbox), *msgs)
    assert all(m.acked for m in msgs), "every event applies"


async def test_account_created_opens_the_first_cycle_from_the_accounts_creation(db: BillingDb) -> None:
    account_id = uuid.uuid4()
    # Created at 00:30 on 1 June in Madrid (22:30 UTC the day before); billing applies it days later.
    db.clock.instant = madrid(2031, 6, 3, 9)
    msg = account_created(account_id, datetime(2031, 5, 31, 22, 30, tzinfo=UTC))
    await deliver(db, msg)

    (cycle,) = await db.cycles(account_id)
    unit = await db.unit(account_id)
    assert (cycle.bill_unit_id, cycle.sequence, cycle.status, cycle.close_time) == (
        unit.bill_unit_id,
        1,
        BillCycleStatus.OPEN,
        None,
    )
    assert (cycle.start_date, cycle.end_date, cycle.time_zone) == (date(2031, 6, 1), date(2031, 6, 15), "Europe/Madrid")
    assert (cycle.start_time, cycle.end_time) == (madrid(2031, 6, 1), madrid(2031, 6, 15))

    published = await db.events()
    assert [subject for subject, _ in published] == [UNIT_CREATED, OPENED]
    assert published[1][1].bill_cycle == proto.cycle_to_pb(cycle)

    # A redelivery, or the same account announced again, opens nothing more.
    await deliver(db, msg.again())
    await deliver(db, account_created(account_id, datetime(2031, 5, 31, 22, 30, tzinfo=UTC)))
    assert len(await db.cycles(account_id)) == 1
    assert len(await db.events()) == 2


async def test_without_a_create_time_the_first_cycle_starts_on_the_events_day(db: BillingDb) -> None:
    account_id = uuid.uuid4()
    await deliver(db, account_created(account_id, None, occurred_at=madrid(2031, 5, 14, 23, 59)))
    (cycle,) = await db.cycles(account_id)
    assert (cycle.start_date, cycle.end_date) == (date(2031, 5, 14), date(2031, 5, 15))


async def test_an_event_that_overtook_account_created_opens_the_first_cycle_too(db: BillingDb) -> None:
    account_id = uuid.uuid4()
    account = customer_account(account_id, madrid(2031, 5, 2, 8))
    account.status = account_pb2.ACCOUNT_STATUS_SUSPENDED
    change = account_pb2.StatusChange(
        status=account_pb2.ACCOUNT_STATUS_SUSPENDED, change_time=to_timestamp(madrid(2031, 5, 3))
    )
    await deliver(
        db,
        status_changed_message(account, change, madrid(2031, 5, 3)),
    )
    await deliver(db, account_created(account_id, madrid(2031, 5, 2, 8)))
    (cycle,) = await db.cycles(account_id)
    assert (cycle.start_date, cycle.end_date) == (date(2031, 5, 2), date(2031, 5, 15))
    assert [subject for subject, _ in await db.events()] == [UNIT_CREATED, OPENED]


# The closer.


async def test_the_closer_closes_a_due_cycle_and_opens_the_next(db: BillingDb) -> None:
    account_id = await open_unit(db, NOW)
    (first,) = await db.cycles(account_id)
    assert first.end_time == madrid(2031, 5, 15)

    db.clock.instant = first.end_time + DELAY - timedelta(seconds=1)
    assert await db.closer().catch_up() == 0, "not before its end plus the late-usage delay"
    assert (await db.cycles(account_id))[0].status is BillCycleStatus.OPEN

    db.clock.instant = first.end_time + DELAY + timedelta(seconds=30)
    assert await db.closer().catch_up() == 1
    closed, opened = await db.cycles(account_id)
    assert (closed.bill_cycle_id, closed.status, closed.close_time) == (
        first.bill_cycle_id,
        BillCycleStatus.CLOSED,
        db.clock.instant,
    )
    assert (opened.sequence, opened.status, opened.close_time) == (2, BillCycleStatus.OPEN, None)
    assert (opened.start_time, opened.end_time) == (first.end_time, madrid(2031, 6, 15))

    published = await db.events(OPENED, CLOSED)
    assert [subject for subject, _ in published] == [OPENED, CLOSED, OPENED]
    closed_event = published[1][1]
    assert closed_event.bill_cycle == proto.cycle_to_pb(closed)
    assert closed_event.bill_cycle.status == bill_cycle_pb2.BILL_CYCLE_STATUS_CLOSED
    assert closed_event.next_bill_cycle == proto.cycle_to_pb(opened)
    assert published[2][1].bill_cycle == proto.cycle_to_pb(opened)

    # A rerun finds nothing to do.
    assert await db.closer().catch_up() == 0
    assert len(await db.events(OPENED, CLOSED)) == 3


async def test_the_background_loop_closes_cycles_and_stops(db: BillingDb) -> None:
    account_id = await open_unit(db, NOW)
    db.clock.instant = madrid(2031, 5, 15) + DELAY
    stop = asyncio.Event()
    running = asyncio.create_task(db.closer().run(stop))
    try:

        async def closed() -> bool | None:
            return True if len(await db.cycles(account_id)) == 2 else None

        await eventually(closed, timeout=10, what="the loop to close the cycle")
    finally:
        stop.set()
        await asyncio.wait_for(running, timeout=5)


async def test_concurrent_closers_close_each_cycle_once(db: BillingDb) -> None:
    """Four closers (replicas) catching up at once on the same database, in small batches so
    their passes interleave: each due cycle is closed by exactly one of them."""
    accounts = [await open_unit(db, NOW + timedelta(days=i % 20, hours=i)) for i in range(24)]
    db.clock.instant = madrid(2031, 9, 20)

    closed_by = await asyncio.gather(*(db.closer(batch_size=3).catch_up() for _ in range(4)))
    assert await db.closer().catch_up() == 0, "they caught up"

    cycles = await db.cycles()
    closed = [c for c in cycles if c.status is BillCycleStatus.CLOSED]
    assert sum(closed_by) == len(closed)
    assert len(closed) >= 24 * 4
    for account_id in accounts:
        mine = [c for c in cycles if c.account_id == account_id]
        assert [c.sequence for c in mine] == list(range(1, len(mine) + 1)), "no sequence twice, none skipped"
        assert [c.status for c in mine] == [BillCycleStatus.CLOSED] * (len(mine) - 1) + [BillCycleStatus.OPEN]
        for previous, current in itertools.pairwise(mine):
            assert current.start_time == previous.end_time
        assert mine[-1].start_time <= db.clock.instant - DELAY < mine[-1].end_time

    closed_events = [event for _, event in await db.events(CLOSED)]
    assert sorted(e.bill_cycle.bill_cycle_id for e in closed_events) == sorted(str(c.bill_cycle_id) for c in closed)
    opened_events = [event for _, event in await db.events(OPENED)]
    assert sorted(e.bill_cycle.bill_cycle_id for e in opened_events) == sorted(str(c.bill_cycle_id) for c in cycles)


async def test_a_cycle_another_closer_holds_is_skipped_not_waited_for(db: BillingDb) -> None:
    held_account, free_account = await open_unit(db, NOW), await open_unit(db, NOW + timedelta(hours=1))
    (held,) = await db.cycles(held_account)
    db.clock.instant = madrid(2031, 5, 15) + DELAY
    async with db.engine.connect() as other:
        # Another replica's pass, mid-transaction, holding the cycle's row.
        await other.execute(
            select(bill_cycles).where(bill_cycles.c.bill_cycle_id == held.bill_cycle_id).with_for_update()
        )
        assert (await asyncio.wait_for(close_due_cycles(db.uow(), DELAY, 10), timeout=5)).closed == 1
        assert [c.status for c in await db.cycles(free_account)] == [BillCycleStatus.CLOSED, BillCycleStatus.OPEN]
        assert [c.status for c in await db.cycles(held_account)] == [BillCycleStatus.OPEN]
        await other.rollback()
    assert await db.closer().catch_up() == 1
    assert [c.status for c in await db.cycles(held_account)] == [BillCycleStatus.CLOSED, BillCycleStatus.OPEN]


async def test_the_database_refuses_a_second_close_or_a_second_open_cycle(db: BillingDb) -> None:
    account_id = await open_unit(db, NOW)
    (stale,) = await db.cycles(account_id)  # read open, before another closer closes it
    unit = await db.unit(account_id)
    db.clock.instant = madrid(2031, 5, 15) + DELAY
    assert await db.closer().catch_up() == 1

    following = stale.close(unit, db.clock.now(), DELAY)
    async with db.uow() as uow:
        with pytest.raises(CycleAlreadyClosed):
            await uow.bill_cycles.save_closed(stale)
    async with db.uow() as uow:
        with pytest.raises(IntegrityError, match="bill_cycles_one_open"):
            await uow.bill_cycles.add(dataclasses.replace(following, bill_cycle_id=uuid.uuid4(), sequence=3))
    (current_open,) = [c for c in await db.cycles(account_id) if c.status is BillCycleStatus.OPEN]
    current_open.close(await db.unit(account_id), madrid(2031, 6, 15) + DELAY, DELAY)
    async with db.uow() as uow:
        await uow.bill_cycles.save_closed(current_open)
        with pytest.raises(IntegrityError, match="bill_cycles_unit_sequence"):
            await uow.bill_cycles.add(following)  # sequence 2 again, now that none is open
    assert len(await db.cycles(account_id)) == 2
    assert len(await db.events(CLOSED)) == 1


async def test_a_clock_jump_closes_one_cycle_per_pass_in_order(db: BillingDb) -> None:
    account_id = await open_unit(db, madrid(2031, 1, 10, 9), BillingProfile(1))
    # The clock jumps four months: to 1 May, past the delay.
    db.clock.instant = madrid(2031, 5, 1) + DELAY
    assert (await close_due_cycles(db.uow(), DELAY, 100)).closed == 1, "one cycle per pass"
    assert await db.closer().catch_up() == 3

    cycles = await db.cycles(account_id)
    assert [(c.sequence, c.start_date, c.end_date, c.status) for c in cycles] == [
        (1, date(2031, 1, 10), date(2031, 2, 1), BillCycleStatus.CLOSED),
        (2, date(2031, 2, 1), date(2031, 3, 1), BillCycleStatus.CLOSED),
        (3, date(2031, 3, 1), date(2031, 4, 1), BillCycleStatus.CLOSED),
        (4, date(2031, 4, 1), date(2031, 5, 1), BillCycleStatus.CLOSED),
        (5, date(2031, 5, 1), date(2031, 6, 1), BillCycleStatus.OPEN),
    ]
    published = await db.events(OPENED, CLOSED)
    assert [(subject, event.bill_cycle.sequence) for subject, event in published] == [
        (OPENED, 1),
        (CLOSED, 1),
        (OPENED, 2),
        (CLOSED, 2),
        (OPENED, 3),
        (CLOSED, 3),
        (OPENED, 4),
        (CLOSED, 4),
        (OPENED, 5),
    ]
    assert [event.next_bill_cycle.sequence for subject, event in published if subject == CLOSED] == [2, 3, 4, 5]


async def test_a_pending_profile_applies_from_the_next_cycle(db: BillingDb) -> None:
    account_id = await open_unit(db, NOW)
    facts = handlers.AccountFacts(account_id, "EUR", "Europe/Madrid", MONTHLY_15)
    quarterly = BillingProfile(1, BillingFrequency.QUARTERLY, 10)
    async with db.uow() as uow:
        assert await handlers.schedule_profile_change(uow, facts, quarterly, madrid(2031, 5, 12))
        await uow.commit()

    db.clock.instant = madrid(2031, 5, 15) + DELAY
    assert await db.closer().catch_up() == 1
    unit = await db.unit(account_id)
    assert (unit.profile, unit.pending_profile) == (quarterly, None)
    _, transition = await db.cycles(account_id)
    assert (transition.start_date, transition.end_date) == (date(2031, 5, 15), date(2031, 8, 1))

    # A change made after a cycle ended (during its late-usage delay) waits for the next close.
    async with db.uow() as uow:
        assert await handlers.schedule_profile_change(uow, facts, MONTHLY_15, madrid(2031, 8, 1, 0, 30))
        await uow.commit()
    db.clock.instant = madrid(2031, 8, 1) + DELAY
    assert await db.closer().catch_up() == 1
    unit = await db.unit(account_id)
    assert (unit.profile, unit.pending_profile) == (quarterly, MONTHLY_15)
    *_, third = await db.cycles(account_id)
    assert (third.start_date, third.end_date) == (date(2031, 8, 1), date(2031, 11, 1))
    db.clock.instant = madrid(2031, 11, 1) + DELAY
    assert await db.closer().catch_up() == 1
    unit = await db.unit(account_id)
    assert (unit.profile, unit.pending_profile) == (MONTHLY_15, None)
    *_, fourth = await db.cycles(account_id)
    assert (fourth.start_date, fourth.end_date) == (date(2031, 11, 1), date(2031, 11, 15))


async def test_a_cycle_that_fails_to_close_does_not_hold_back_the_others(db: BillingDb) -> None:
    broken_account, good_account = await open_unit(db, NOW), await open_unit(db, NOW + timedelta(hours=2))
    async with db.engine.begin() as conn:
        # A unit its domain refuses to load (an unknown time zone): closing its cycle raises.
        await conn.execute(
            update(bill_units).where(bill_units.c.account_id == broken_account).values(time_zone="Mars/Olympus_Mons")
        )
    db.clock.instant = madrid(2031, 5, 15) + DELAY
    assert await db.closer(batch_size=1).catch_up() == 1, "the good one closes, the loop ends"
    assert [c.status for c in await db.cycles(good_account)] == [BillCycleStatus.CLOSED, BillCycleStatus.OPEN]
    assert [c.status for c in await db.cycles(broken_account)] == [BillCycleStatus.OPEN]
    closed_events = [event for _, event in await db.events(CLOSED)]
    assert [e.bill_cycle.account_id for e in closed_events] == [str(good_account)]


# ListBillCycles.


async def test_cycles_are_listed_newest_first_page_by_page(db: BillingDb) -> None:
    account_id = await open_unit(db, madrid(2031, 1, 10, 9), BillingProfile(1))
    other = await open_unit(db, madrid(2031, 1, 10, 9), BillingProfile(1))
    db.clock.instant = madrid(2031, 5, 1) + DELAY
    await db.closer().catch_up()
    servicer, pages, token = BillingServicer(db.uow), [], ""
    while True:
        page = await servicer.ListBillCycles(
            pb.ListBillCyclesRequest(account_id=str(account_id), page_size=2, page_token=token), NO_CONTEXT
        )
        pages.append([c.sequence for c in page.bill_cycles])
        assert all(c.account_id == str(account_id) for c in page.bill_cycles)
        token = page.next_page_token
        if not token:
            break
    assert pages == [[5, 4], [3, 2], [1]]
    everything = await servicer.ListBillCycles(pb.ListBillCyclesRequest(account_id=str(account_id)), NO_CONTEXT)
    assert [c.sequence for c in everything.bill_cycles] == [5, 4, 3, 2, 1]
    assert everything.next_page_token == ""
    assert everything.bill_cycles[0].status == bill_cycle_pb2.BILL_CYCLE_STATUS_OPEN

    first = await servicer.ListBillCycles(pb.ListBillCyclesRequest(account_id=str(account_id), page_size=2), NO_CONTEXT)
    with pytest.raises(InvalidArgument) as refused:
        await servicer.ListBillCycles(
            pb.ListBillCyclesRequest(account_id=str(other), page_token=first.next_page_token), NO_CONTEXT
        )
    assert refused.value.field == "page_token"


@pytest.mark.parametrize(
    ("request_", "field_name"),
    [
        (pb.ListBillCyclesRequest(account_id=""), "account_id"),
        (pb.ListBillCyclesRequest(account_id="nope"), "account_id"),
        (pb.ListBillCyclesRequest(account_id=str(uuid.uuid4()), page_size=-1), "page_size"),
        (pb.ListBillCyclesRequest(account_id=str(uuid.uuid4()), page_token="!!"), "page_token"),
    ],
)
async def test_list_bill_cycles_names_the_bad_field(db: BillingDb, request_: Any, field_name: str) -> None:
    with pytest.raises(InvalidArgument) as refused:
        await BillingServicer(db.uow).ListBillCycles(request_, NO_CONTEXT)
    assert refused.value.field == field_name


async def test_list_bill_cycles_over_grpc(db: BillingDb) -> None:
    account_id = await open_unit(db, NOW)
    async with billing_stub(db.uow) as stub:
        listed = await stub.ListBillCycles(pb.ListBillCyclesRequest(account_id=str(account_id)))
        assert [(c.sequence, c.status) for c in listed.bill_cycles] == [(1, bill_cycle_pb2.BILL_CYCLE_STATUS_OPEN)]
        with pytest.raises(grpc.aio.AioRpcError) as missing:
            await stub.ListBillCycles(pb.ListBillCyclesRequest(account_id=str(uuid.uuid4())))
        assert missing.value.code() == grpc.StatusCode.NOT_FOUND
        with pytest.raises(grpc.aio.AioRpcError) as invalid:
            await stub.ListBillCycles(pb.ListBillCyclesRequest(account_id="x"))
        assert invalid.value.code() == grpc.StatusCode.INVALID_ARGUMENT


async def test_an_unknown_account_has_no_cycles_to_list(db: BillingDb) -> None:
    with pytest.raises(NotFound) as missing:
        await BillingServicer(db.uow).ListBillCycles(pb.ListBillCyclesRequest(account_id=str(uuid.uuid4())), NO_CONTEXT)
    assert missing.value.reason == "ACCOUNT_NOT_FOUND"


# The 0003 migration over units opened before it.


async def test_migration_0003_opens_a_first_cycle_for_existing_units_and_goes_back(
    empty_database: EmptyDatabase,
) -> None:
    url = await empty_database("billing")
    config = alembic_config(MIGRATIONS, url)
    await asyncio.to_thread(command.upgrade, config, "0002")
    conn = await asyncpg.connect(plain_url(url))
    try:
        unit_id, account_id = uuid.uuid4(), uuid.uuid4()
        await conn.execute(
            "insert into bill_units (bill_unit_id, account_id, currency_code, time_zone, bill_cycle_day,"
            " billing_frequency, payment_terms_days, create_time)"
            " values ($1, $2, 'EUR', 'Europe/Madrid', 31, 'quarterly', 30, $3)",
            unit_id,
            account_id,
            datetime(2031, 1, 31, 23, 30, tzinfo=UTC),  # 1 February 00:30 in Madrid
        )
        await asyncio.to_thread(command.upgrade, config, "head")
        (row,) = await conn.fetch("select * from bill_cycles")
        assert (row["bill_unit_id"], row["account_id"], row["sequence"], row["status"]) == (
            unit_id,
            account_id,
            1,
            "open",
        )
        assert (row["start_date"], row["end_date"]) == (date(2031, 2, 1), date(2031, 2, 28))
        assert row["close_time"] is None
        await asyncio.to_thread(command.downgrade, config, "0002")
        assert await conn.fetchval("select to_regclass('bill_cycles')") is None
        assert await conn.fetchval("select count(*) from bill_units") == 1
        await asyncio.to_thread(command.upgrade, config, "head")
    finally:
        await conn.close()


async def test_the_indexes_are_partial_where_they_must_be(db: BillingDb) -> None:
    async with db.engine.connect() as conn:
        rows = (
            await conn.execute(text("select indexname, indexdef from pg_indexes where tablename = 'bill_cycles'"))
        ).all()
    definitions = {row.indexname: row.indexdef for row in rows}
    assert "UNIQUE" in definitions["bill_cycles_one_open"]
    assert "WHERE (status = 'open'::text)" in definitions["bill_cycles_one_open"]
    assert "WHERE (status = 'open'::text)" in definitions["bill_cycles_due"]
    assert "UNIQUE" in definitions["bill_cycles_unit_sequence"]


async def test_the_claim_reads_due_cycles_in_the_index_order_without_sorting_them_all(db: BillingDb) -> None:
    """Cycles end at the same instants (each cycle day's midnight in a time zone): the claim's
    ORDER BY end_time, bill_cycle_id must come from `bill_cycles_due`, or every pass reads and
    sorts every due cycle to take the first few (docs/performance.md, "Seventh round")."""
    end = NOW - timedelta(days=1)
    async with db.engine.begin() as conn:
        await conn.execute(
            text(
                "WITH units AS (INSERT INTO bill_units (bill_unit_id, account_id, currency_code, time_zone,"
                " bill_cycle_day, billing_frequency, payment_terms_days, create_time)"
                " SELECT gen_random_uuid(), gen_random_uuid(), 'EUR', 'Europe/Madrid', 9, 'monthly', 30, :start"
                " FROM generate_series(1, 3000) RETURNING bill_unit_id, account_id)"
                " INSERT INTO bill_cycles (bill_cycle_id, bill_unit_id, account_id, sequence, start_time, end_time,"
                " start_date, end_date, time_zone, status)"
                " SELECT gen_random_uuid(), bill_unit_id, account_id, 1, :start, :end, :start_date, :end_date,"
                " 'Europe/Madrid', 'open' FROM units"
            ),
            {
                "start": end - timedelta(days=30),
                "end": end,
                "start_date": (end - timedelta(days=30)).astimezone(MADRID).date(),
                "end_date": (end - timedelta(microseconds=1)).astimezone(MADRID).date(),
            },
        )
        await conn.execute(text("ANALYZE bill_cycles"))

    statements: list[tuple[str, Any]] = []

    def capture(_conn: Any, _cursor: Any, statement: str, parameters: Any, _context: Any, _many: bool) -> None:
        if "FOR UPDATE" in statement:
            statements.append((statement, parameters))

    sqlalchemy.event.listen(db.engine.sync_engine, "before_cursor_execute", capture)
    try:
        async with db.uow() as uow:
            claimed = await uow.bill_cycles.claim_due(NOW, 100)
    finally:
        sqlalchemy.event.remove(db.engine.sync_engine, "before_cursor_execute", capture)
    assert len(claimed) == 100
    assert [c.bill_cycle_id for c in claimed] == sorted(c.bill_cycle_id for c in claimed)
    [(statement, parameters)] = statements

    conn = await asyncpg.connect(plain_url(db.url))
    try:
        plan = await conn.fetchval("EXPLAIN (FORMAT JSON) " + statement, *parameters)
    finally:
        await conn.close()
    nodes = []
    pending = [json.loads(plan)[0]["Plan"]]
    while pending:
        node = pending.pop()
        nodes.append(node)
        pending.extend(node.get("Plans", []))
    assert any(n.get("Index Name") == "bill_cycles_due" for n in nodes), nodes
    assert not any("Sort" in n["Node Type"] for n in nodes), nodes
