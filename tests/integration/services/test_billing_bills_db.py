"""Bill items and bills against a real, migrated database: charging's ChargesCreated applied through
the runtime's consumer into unbilled items (once per charge; a charge whose cycle closed goes to
the open cycle, labelled with its own period), the cycle closer billing each closed cycle in the
same transaction (lines, taxes, totals, gapless numbers, BillIssued, zero bills suppressed by
setting), concurrent closers and charges racing them (each bill once, each charge on one bill, no
gap in the numbers), GetBill / ListBills / ListUnbilledItems, the billing summary's open bills and
the 0004 migration."""

from __future__ import annotations

import asyncio
import itertools
import random
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from types import SimpleNamespace
from typing import Any
from zoneinfo import ZoneInfo

import asyncpg
import grpc
import pytest
from alembic import command
from evolutivo.billing.v1 import bill_pb2, events_pb2
from evolutivo.billing.v1 import billing_service_pb2 as pb
from evolutivo.charging.v1 import events_pb2 as charging_events
from evolutivo.charging.v1 import usage_pb2
from evolutivo_billing.adapters import bills_proto, events
from evolutivo_billing.adapters.bills_repository import BillRepository
from evolutivo_billing.adapters.orm import bill_cycles, bill_items, bill_number_series, bills, inbox, outbox
from evolutivo_billing.domain.bills import Bill, BillStatus, Period, TaxRates
from evolutivo_billing.domain.cycles import BillCycle, BillCycleStatus
from evolutivo_billing.domain.model import BillingFrequency, BillingProfile
from evolutivo_billing.domain.numbering import NumberFormat
from evolutivo_billing.entrypoints import cycle_closer
from evolutivo_billing.entrypoints.app import MIGRATIONS
from evolutivo_billing.entrypoints.consumers import subscriptions
from evolutivo_billing.entrypoints.cycle_closer import CycleCloser
from evolutivo_billing.entrypoints.grpc_api import BillingServicer
from evolutivo_billing.service_layer import bills as bills_service
from evolutivo_billing.service_layer import handlers
from evolutivo_billing.service_layer.bills import BillPolicy
from evolutivo_billing.service_layer.unit_of_work import BillingUnitOfWork
from evolutivo_runtime import transient_errors
from evolutivo_runtime.db import plain_url
from evolutivo_runtime.errors import FailedPrecondition, InvalidArgument, NotFound
from evolutivo_runtime.messaging.streams import stream_name
from evolutivo_runtime.migrations import alembic_config
from evolutivo_runtime.money import from_money, to_money
from evolutivo_runtime.timestamps import to_timestamp
from google.protobuf.message import Message
from sqlalchemy import Boolean, Uuid, column, func, select, text
from sqlalchemy.dialects.postgresql import ARRAY
from support.billing import billing_stub
from support.databases import EmptyDatabase, MigratedDatabase, ServiceDb
from support.jetstream import FakeMsg, consumer_for, message, process

MADRID = ZoneInfo("Europe/Madrid")
DELAY = timedelta(hours=1)
NO_CONTEXT: Any = None
MONTHLY_15 = BillingProfile(15, BillingFrequency.MONTHLY, 30)
RATES = TaxRates({"standard": Decimal("0.21"), "reduced": Decimal("0.10"), "exempt": Decimal(0)})
POLICY = BillPolicy(RATES)

ISSUED = "evolutivo.billing.v1.bill.issued"
OPENED = "evolutivo.billing.v1.bill_cycle.opened"
CLOSED = "evolutivo.billing.v1.bill_cycle.closed"
CHARGES_CREATED = "evolutivo.charging.v1.charges.created"
_EVENT_TYPES: dict[str, type[Message]] = {
    "evolutivo.billing.v1.BillUnitCreated": events_pb2.BillUnitCreated,
    "evolutivo.billing.v1.BillCycleOpened": events_pb2.BillCycleOpened,
    "evolutivo.billing.v1.BillCycleClosed": events_pb2.BillCycleClosed,
    "evolutivo.billing.v1.BillIssued": events_pb2.BillIssued,
}


def madrid(year: int, month: int, day: int, hour: int = 0, minute: int = 0) -> datetime:
    """The UTC instant of a Madrid wall-clock time."""
    return datetime(year, month, day, hour, minute, tzinfo=MADRID).astimezone(UTC)


NOW = madrid(2031, 5, 10, 12)
# The first cycle of a unit opened at NOW: 10 May to 15 May; it closes at its end plus the delay.
FIRST_DUE = madrid(2031, 5, 15) + DELAY


class BillingDb(ServiceDb):
    def uow(self) -> BillingUnitOfWork:
        return BillingUnitOfWork(self.sessions, outbox, self.clock, events.encode)

    def closer(self, batch_size: int = 100, policy: BillPolicy = POLICY, passes_at_once: int = 1) -> CycleCloser:
        return CycleCloser(
            self.uow, DELAY, check_seconds=0.05, batch_size=batch_size, policy=policy, passes_at_once=passes_at_once
        )

    async def cycles(self, account_id: uuid.UUID) -> list[BillCycle]:
        async with self.uow() as uow:
            return list(reversed(await uow.bill_cycles.list_for_account(account_id, None, 1000)))

    async def bills(self, account_id: uuid.UUID) -> list[Bill]:
        """The account's bills, oldest first, with their lines' charge ids."""
        async with self.uow() as uow:
            listed = await uow.bills.list_for_account(account_id, None, 1000)
            found = [await uow.bills.get(b.bill_id) for b in reversed(listed)]
        return [b for b in found if b is not None]

    async def all_bills(self) -> list[Any]:
        return await self.rows(select(bills).order_by(bills.c.number_sequence))

    async def items(self) -> list[Any]:
        """Every bill item, with `bill_id` the bill whose line names it (None while unbilled),
        after checking that this is what its cycle says: billed when the cycle is closed or billed
        through its seq, and then on exactly one bill."""
        kept = [c for c in bill_items.c if c.name not in ("bill_id", "bill_line_number")]
        rows = await self.rows(
            text(
                f"SELECT {', '.join(f'i.{c.name}' for c in kept)},"
                " (c.status <> 'open' OR i.seq <= c.billed_through_seq) AS billed,"
                " array(SELECT l.bill_id FROM bill_lines AS l WHERE i.charge_id = ANY(l.charge_ids)) AS bills"
                " FROM bill_items AS i JOIN bill_cycles AS c USING (bill_cycle_id)"
            ).columns(*kept, column("billed", Boolean), column("bills", ARRAY(Uuid)))
        )
        for row in rows:
            assert len(row.bills) == (1 if row.billed else 0), f"item {row.charge_id}: its cycle and the lines agree"
        return [SimpleNamespace(**row._asdict(), bill_id=row.bills[0] if row.bills else None) for row in rows]

    async def events(self, *subjects: str) -> list[tuple[str, Any]]:
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
    db: BillingDb, created: datetime = NOW, profile: BillingProfile = MONTHLY_15, currency: str = "EUR"
) -> uuid.UUID:
    """An account's bill unit and first cycle, as the AccountCreated handler opens them."""
    account_id = uuid.uuid4()
    async with db.uow() as uow:
        await handlers.open_bill_unit(uow, account_id, currency, "Europe/Madrid", profile, db.clock.now(), created)
        await uow.commit()
    return account_id


# ChargesCreated, as charging publishes it, delivered through the consumer.


def rated(
    account_id: uuid.UUID,
    cycle_id: uuid.UUID | str,
    amount: str,
    at: datetime,
    code: str = "api_calls",
    tax: str = "standard",
    quantity: str = "1",
    offer: str = "api_pro",
    late: bool = False,
    currency: str = "EUR",
) -> usage_pb2.RatedCharge:
    return usage_pb2.RatedCharge(
        charge_id=str(uuid.uuid4()),
        account_id=str(account_id),
        kind=usage_pb2.CHARGE_KIND_USAGE,
        event_id=f"evt-{uuid.uuid4().hex[:10]}",
        purchase_id=str(uuid.uuid4()),
        charge_offer_code=offer,
        charge_offer_version=1,
        charge_code=code,
        tax_code=tax,
        quantity=quantity,
        amount=to_money(Decimal(amount), currency),
        unrounded_amount=amount,
        event_time=to_timestamp(at),
        rate_time=to_timestamp(at),
        bill_cycle_id=str(cycle_id),
        late=late,
    )


def charges_created(*charges: usage_pb2.RatedCharge, currency: str = "EUR") -> FakeMsg:
    event = charging_events.ChargesCreated(charges=charges, currency_code=currency)
    return message(CHARGES_CREATED, event, NOW)


async def deliver(db: BillingDb, *msgs: FakeMsg, must_apply: bool = True) -> None:
    """One fetched batch of charging's stream, applied as the service's consumer applies it."""
    await process(consumer_for(subscriptions(), stream_name("charging"), db.uow, inbox), *msgs)
    if must_apply:
        assert all(m.acked for m in msgs), "every event applies"


def amounts(bill: Bill) -> tuple[Decimal, Decimal, Decimal]:
    return bill.subtotal, bill.tax_total, bill.total


# Unbilled items.


async def test_charges_become_unbilled_items_once_and_are_listed(db: BillingDb) -> None:
    account_id = await open_unit(db)
    (cycle,) = await db.cycles(account_id)
    charges = [rated(account_id, cycle.bill_cycle_id, f"0.{i}5", madrid(2031, 5, 11, i)) for i in range(1, 4)]
    msg = charges_created(*charges)
    await deliver(db, msg)

    servicer = BillingServicer(db.uow)
    pages, token = [], ""
    while True:
        page = await servicer.ListUnbilledItems(
            pb.ListUnbilledItemsRequest(account_id=str(account_id), page_size=2, page_token=token), NO_CONTEXT
        )
        pages.append([i.charge_id for i in page.items])
        token = page.next_page_token
        if not token:
            break
    assert pages == [[charges[0].charge_id, charges[1].charge_id], [charges[2].charge_id]], "oldest event first"
    first = (
        await servicer.ListUnbilledItems(pb.ListUnbilledItemsRequest(account_id=str(account_id)), NO_CONTEXT)
    ).items[0]
    assert (first.bill_cycle_id, first.rated_bill_cycle_id, first.late, first.bill_id) == (
        str(cycle.bill_cycle_id),
        str(cycle.bill_cycle_id),
        False,
        "",
    )
    assert (first.kind, first.charge_offer_code, first.charge_code, first.tax_code, first.quantity) == (
        "usage",
        "api_pro",
        "api_calls",
        "standard",
        "1",
    )
    assert from_money(first.amount) == Decimal("0.15")
    assert (first.period_start_date.day, first.period_end_date.day) == (10, 15)

    # A redelivery is skipped by the inbox; the same charges in another event insert nothing more.
    await deliver(db, msg.again())
    extra = rated(account_id, cycle.bill_cycle_id, "1.00", madrid(2031, 5, 12))
    await deliver(db, charges_created(*charges, extra))
    assert sorted(row.charge_id for row in await db.items()) == sorted(
        uuid.UUID(c.charge_id) for c in [*charges, extra]
    )


async def test_a_charge_for_an_account_billing_does_not_know_is_retried(db: BillingDb) -> None:
    msg = charges_created(rated(uuid.uuid4(), uuid.uuid4(), "1.00", NOW))
    await deliver(db, msg, must_apply=False)
    assert msg.naked and not msg.acked
    assert await db.items() == []
    # As is one in another currency than the account's.
    account_id = await open_unit(db)
    (cycle,) = await db.cycles(account_id)
    dollars = charges_created(rated(account_id, cycle.bill_cycle_id, "1.00", NOW, currency="USD"), currency="USD")
    await deliver(db, dollars, must_apply=False)
    assert dollars.naked and await db.items() == []


async def test_a_charge_whose_cycle_closed_goes_to_the_open_cycle_with_its_own_period(db: BillingDb) -> None:
    account_id = await open_unit(db)
    (first,) = await db.cycles(account_id)
    db.clock.instant = FIRST_DUE
    await db.closer().catch_up()
    _, second = await db.cycles(account_id)

    # Charging had not yet learnt the cycle closed: rated into it, not late.
    into_closed = rated(account_id, first.bill_cycle_id, "2.00", madrid(2031, 5, 12))
    # A cycle billing does not know, with a time in the open cycle: just in the open cycle.
    unknown_now = rated(account_id, uuid.uuid4(), "3.00", madrid(2031, 5, 20))
    # Before the unit's first cycle: the open cycle, labelled with its own day.
    before_all = rated(account_id, uuid.uuid4(), "4.00", madrid(2031, 5, 1, 10), late=True)
    await deliver(db, charges_created(into_closed, unknown_now, before_all))

    rows = {str(row.charge_id): row for row in await db.items()}
    assert {r.bill_cycle_id for r in rows.values()} == {second.bill_cycle_id}
    placed = rows[into_closed.charge_id]
    assert (placed.late, placed.rated_bill_cycle_id) == (True, first.bill_cycle_id)
    assert (placed.period_start_date, placed.period_end_date) == (date(2031, 5, 10), date(2031, 5, 15))
    inside = rows[unknown_now.charge_id]
    assert (inside.late, inside.period_start_date, inside.period_end_date) == (
        False,
        date(2031, 5, 15),
        date(2031, 6, 15),
    )
    early = rows[before_all.charge_id]
    assert (early.late, early.period_start_date, early.period_end_date) == (True, date(2031, 5, 1), date(2031, 5, 2))


# The bill of a closing cycle.


async def test_closing_a_cycle_issues_its_bill(db: BillingDb) -> None:
    account_id = await open_unit(db)
    (cycle,) = await db.cycles(account_id)
    charges = [
        rated(account_id, cycle.bill_cycle_id, "0.75", madrid(2031, 5, 11), quantity="1500"),
        rated(account_id, cycle.bill_cycle_id, "0.15", madrid(2031, 5, 12), quantity="100"),
        rated(account_id, cycle.bill_cycle_id, "2.00", madrid(2031, 5, 12), code="sms", tax="reduced", quantity="40"),
        rated(account_id, cycle.bill_cycle_id, "9.99", madrid(2031, 5, 13), offer="support", code="fee", tax="exempt"),
    ]
    await deliver(db, charges_created(*charges))

    db.clock.instant = FIRST_DUE + timedelta(minutes=3)
    assert await db.closer().catch_up() == 1
    (bill,) = await db.bills(account_id)
    assert (bill.status, bill.number and bill.number.number, bill.bill_cycle_id) == (
        BillStatus.ISSUED,
        "F-2031-000001",
        cycle.bill_cycle_id,
    )
    assert (bill.period, bill.issue_date, bill.due_date) == (
        Period(date(2031, 5, 10), date(2031, 5, 15)),
        date(2031, 5, 15),
        date(2031, 6, 14),
    )
    assert bill.issue_time == bill.create_time == db.clock.instant
    assert [
        (line.line_number, line.key.charge_offer_code, line.key.charge_code, line.tax_code, line.quantity, line.amount)
        for line in bill.lines
    ] == [
        (1, "api_pro", "api_calls", "standard", Decimal(1600), Decimal("0.90")),
        (2, "api_pro", "sms", "reduced", Decimal(40), Decimal("2.00")),
        (3, "support", "fee", "exempt", Decimal(1), Decimal("9.99")),
    ]
    assert bill.lines[0].charge_ids == tuple(sorted(uuid.UUID(c.charge_id) for c in charges[:2]))
    assert [(t.tax_code, t.taxable_amount, t.tax_amount) for t in bill.taxes] == [
        ("exempt", Decimal("9.99"), Decimal(0)),
        ("reduced", Decimal("2.00"), Decimal("0.20")),
        ("standard", Decimal("0.90"), Decimal("0.19")),  # 0.189
    ]
    assert amounts(bill) == (Decimal("12.89"), Decimal("0.39"), Decimal("13.28"))

    # Announced after the cycle's roll-over, without charge ids.
    published = await db.events(CLOSED, OPENED, ISSUED)
    assert [subject for subject, _ in published] == [OPENED, CLOSED, OPENED, ISSUED]
    issued = published[-1][1]
    assert issued.bill == bills_proto.bill_to_pb(bill, with_charge_ids=False)
    assert from_money(issued.bill.total) == Decimal("13.28")

    # Its charges are billed: nothing left unbilled; GetBill traces each line to them.
    servicer = BillingServicer(db.uow)
    unbilled = await servicer.ListUnbilledItems(pb.ListUnbilledItemsRequest(account_id=str(account_id)), NO_CONTEXT)
    assert list(unbilled.items) == []
    got = (await servicer.GetBill(pb.GetBillRequest(bill_id=str(bill.bill_id)), NO_CONTEXT)).bill
    assert got == bills_proto.bill_to_pb(bill)
    assert sorted(i for line in got.lines for i in line.charge_ids) == sorted(c.charge_id for c in charges)
    listed = await servicer.ListBills(pb.ListBillsRequest(account_id=str(account_id)), NO_CONTEXT)
    assert [b.bill_number for b in listed.bills] == ["F-2031-000001"]
    assert listed.bills[0].status == bill_pb2.BILL_STATUS_ISSUED
    assert list(listed.bills[0].lines[0].charge_ids) == [] and listed.bills[0].lines[0].charge_count == 2

    # A rerun bills nothing more.
    assert await db.closer().catch_up() == 0
    assert len(await db.all_bills()) == 1


async def test_a_late_charge_goes_on_the_next_bill_labelled_with_its_own_period(db: BillingDb) -> None:
    account_id = await open_unit(db)
    (first,) = await db.cycles(account_id)
    await deliver(db, charges_created(rated(account_id, first.bill_cycle_id, "5.00", madrid(2031, 5, 12))))
    db.clock.instant = FIRST_DUE
    await db.closer().catch_up()
    _, second = await db.cycles(account_id)

    # Usage of 14 May arriving after the first bill: charging rates it into the first cycle (not
    # knowing yet it closed) or, knowing, into the open one flagged late. Both land on bill 2.
    late_unknowing = rated(account_id, first.bill_cycle_id, "1.00", madrid(2031, 5, 14, 20))
    late_knowing = rated(account_id, second.bill_cycle_id, "0.50", madrid(2031, 5, 14, 21), late=True)
    current = rated(account_id, second.bill_cycle_id, "3.00", madrid(2031, 6, 1))
    await deliver(db, charges_created(late_unknowing, late_knowing, current))

    db.clock.instant = madrid(2031, 6, 15) + DELAY
    assert await db.closer().catch_up() == 1
    first_bill, second_bill = await db.bills(account_id)
    assert amounts(first_bill) == (Decimal("5.00"), Decimal("1.05"), Decimal("6.05"))
    assert (second_bill.number and second_bill.number.number, second_bill.period) == (
        "F-2031-000002",
        Period(date(2031, 5, 15), date(2031, 6, 15)),
    )
    assert [(line.period, line.amount, line.charge_count) for line in second_bill.lines] == [
        (Period(date(2031, 5, 10), date(2031, 5, 15)), Decimal("1.50"), 2),  # the late ones, their own period
        (Period(date(2031, 5, 15), date(2031, 6, 15)), Decimal("3.00"), 1),
    ]
    assert amounts(second_bill) == (Decimal("4.50"), Decimal("0.95"), Decimal("5.45"))  # 0.945 rounds up


async def test_the_due_date_follows_the_payment_terms_of_the_cycle_billed(db: BillingDb) -> None:
    account_id = await open_unit(db)
    facts = handlers.AccountFacts(account_id, "EUR", "Europe/Madrid", MONTHLY_15)
    async with db.uow() as uow:
        # Changed during the cycle: in force from the next cycle, so not for this cycle's bill.
        await handlers.schedule_profile_change(
            uow, facts, BillingProfile(15, payment_terms_days=7), madrid(2031, 5, 12)
        )
        await uow.commit()
    db.clock.instant = FIRST_DUE
    await db.closer().catch_up()
    db.clock.instant = madrid(2031, 6, 15) + DELAY
    await db.closer().catch_up()
    first, second = await db.bills(account_id)
    assert (first.issue_date, first.due_date) == (date(2031, 5, 15), date(2031, 6, 14))
    assert (second.issue_date, second.due_date) == (date(2031, 6, 15), date(2031, 6, 22))


async def test_a_bill_of_tens_of_thousands_of_charges(db: BillingDb) -> None:
    """More charges on one line than PostgreSQL takes parameters in one statement (32767)."""
    account_id = await open_unit(db)
    (cycle,) = await db.cycles(account_id)
    count = 33_000
    for start in range(0, count, 5_500):
        await deliver(
            db,
            charges_created(
                *(
                    rated(account_id, cycle.bill_cycle_id, "0.01", madrid(2031, 5, 11) + timedelta(seconds=i))
                    for i in range(start, start + 5_500)
                )
            ),
        )
    db.clock.instant = FIRST_DUE
    assert await db.closer().catch_up() == 1
    (bill,) = await db.bills(account_id)
    (line,) = bill.lines
    assert (line.charge_count, len(line.charge_ids), line.quantity, line.amount) == (
        count,
        count,
        Decimal(count),
        Decimal("330.00"),
    )
    assert amounts(bill) == (Decimal("330.00"), Decimal("69.30"), Decimal("399.30"))
    got = await BillingServicer(db.uow).GetBill(pb.GetBillRequest(bill_id=str(bill.bill_id)), NO_CONTEXT)
    assert len(got.bill.lines[0].charge_ids) == count
    ((_, issued),) = await db.events(ISSUED)
    assert issued.bill.lines[0].charge_count == count and len(issued.SerializeToString()) < 2_000


# Zero-amount bills.


async def test_zero_bills_are_issued_unless_suppressed_and_suppression_leaves_no_gap(db: BillingDb) -> None:
    empty, cancelled, owing = [await open_unit(db, NOW + timedelta(minutes=i)) for i in range(3)]
    cancelled_cycle, owing_cycle = (await db.cycles(cancelled))[0], (await db.cycles(owing))[0]
    plus = rated(cancelled, cancelled_cycle.bill_cycle_id, "1.00", madrid(2031, 5, 11))
    minus = rated(cancelled, cancelled_cycle.bill_cycle_id, "-1.00", madrid(2031, 5, 12))
    await deliver(
        db, charges_created(plus, minus, rated(owing, owing_cycle.bill_cycle_id, "1.00", madrid(2031, 5, 11)))
    )

    suppressing = BillPolicy(RATES, suppress_zero_bills=True)
    db.clock.instant = FIRST_DUE
    assert await db.closer(policy=suppressing).catch_up() == 3
    (empty_bill,), (cancelled_bill,), (owing_bill,) = [await db.bills(a) for a in (empty, cancelled, owing)]
    for zero in (empty_bill, cancelled_bill):
        assert (zero.status, zero.suppressed, zero.number, zero.issue_time, zero.total) == (
            BillStatus.DRAFT,
            True,
            None,
            None,
            Decimal(0),
        )
    # Its charges are on it all the same (none left to bill again).
    assert sorted(cancelled_bill.charge_ids) == sorted([uuid.UUID(plus.charge_id), uuid.UUID(minus.charge_id)])
    assert (owing_bill.status, owing_bill.number and owing_bill.number.number) == (BillStatus.ISSUED, "F-2031-000001")
    assert [e.bill.account_id for _, e in await db.events(ISSUED)] == [str(owing)]

    # By default a zero bill is issued and numbered like any other.
    db.clock.instant = madrid(2031, 6, 15) + DELAY
    assert await db.closer().catch_up() == 3
    numbers = sorted(b.bill_number for b in await db.all_bills() if b.bill_number)
    assert numbers == ["F-2031-000001", "F-2031-000002", "F-2031-000003", "F-2031-000004"]
    (_, second_empty) = await db.bills(empty)
    assert (second_empty.status, second_empty.total, second_empty.lines, second_empty.taxes) == (
        BillStatus.ISSUED,
        Decimal(0),
        [],
        [],
    )


# Exactly once, gapless.


@pytest.mark.parametrize("passes_at_once", [1, 3])
async def test_concurrent_closers_issue_each_bill_once_with_gapless_numbers(db: BillingDb, passes_at_once: int) -> None:
    """Four closers (replicas) catching up at once, in small batches so their passes interleave,
    across a new year (two number series), each running one pass or three at once (which take the
    series only to number, after their units): every closed cycle has exactly one bill, every
    charge is on exactly one bill, and each series is numbered 1..n without a gap or a repeat."""
    rng = random.Random(6)
    accounts = [await open_unit(db, NOW + timedelta(days=i % 20, hours=i)) for i in range(16)]
    expected: dict[str, Decimal] = {}
    for account_id in accounts:
        (cycle,) = await db.cycles(account_id)
        charges = [
            rated(account_id, cycle.bill_cycle_id, f"{rng.randint(-50, 900) / 100:.2f}", cycle.start_time)
            for _ in range(rng.randint(0, 4))
        ]
        expected.update({c.charge_id: from_money(c.amount) for c in charges})
        if charges:
            await deliver(db, charges_created(*charges))
    db.clock.instant = madrid(2032, 3, 1)

    closers = [db.closer(batch_size=3, passes_at_once=passes_at_once) for _ in range(4)]
    closed_by = await asyncio.gather(*(closer.catch_up() for closer in closers))
    assert await db.closer().catch_up() == 0, "they caught up"

    all_bills = await db.all_bills()
    async with db.engine.connect() as conn:
        closed = (await conn.execute(select(bill_cycles.c.bill_cycle_id).where(bill_cycles.c.status == "closed"))).all()
    assert sum(closed_by) == len(closed) == len(all_bills) >= 16 * 9
    assert {b.bill_cycle_id for b in all_bills} == {c.bill_cycle_id for c in closed}, "one bill per closed cycle"
    for series, numbered in itertools.groupby(
        sorted(all_bills, key=lambda b: b.number_series), lambda b: b.number_series
    ):
        sequences = sorted(b.number_sequence for b in numbered)
        assert sequences == list(range(1, len(sequences) + 1)), f"series {series} has no gap and no repeat"
    assert {b.number_series for b in all_bills} == {"F-2031", "F-2032"}
    async with db.engine.connect() as conn:
        counters = dict(
            (await conn.execute(select(bill_number_series.c.series_key, bill_number_series.c.last_number))).all()
        )
    assert counters == {
        "F-2031": sum(1 for b in all_bills if b.number_series == "F-2031"),
        "F-2032": sum(1 for b in all_bills if b.number_series == "F-2032"),
    }
    for b in all_bills:
        assert b.bill_number == f"{b.number_series}-{b.number_sequence:06d}"
        assert b.issue_date.year == int(b.number_series[2:])

    items = await db.items()
    assert all(row.bill_id is not None for row in items), "every charge billed"
    assert sorted(str(row.charge_id) for row in items) == sorted(expected)
    assert sum((b.subtotal for b in all_bills), Decimal(0)) == sum(expected.values(), Decimal(0))


async def test_a_failing_pass_among_passes_at_once_fails_the_catch_up_with_its_own_error(
    db: BillingDb, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Passes at once run as a task group: one that raises (the database went away) ends the
    others and the catch-up raises its error as it is (the closer's loop logs it and retries)."""
    await open_unit(db)
    db.clock.instant = FIRST_DUE

    async def broken(*_: Any, **__: Any) -> Any:
        raise ConnectionError("the database went away")

    monkeypatch.setattr(cycle_closer, "close_due_cycles", broken)
    with pytest.raises(ConnectionError, match="went away"):
        await db.closer(passes_at_once=3).catch_up()
    monkeypatch.undo()
    assert await db.closer(passes_at_once=3).catch_up() == 1, "the next catch-up closes the cycle"


async def test_a_bill_rolled_back_gives_its_number_back(db: BillingDb, monkeypatch: pytest.MonkeyPatch) -> None:
    accounts = [await open_unit(db, NOW + timedelta(minutes=i)) for i in range(5)]
    broken = accounts[2]
    add, add_many = BillRepository.add, BillRepository.add_many

    async def failing_add(self: BillRepository, bill: Bill) -> None:
        await add(self, bill)  # its number is taken and the bill written...
        if bill.account_id == broken:
            raise RuntimeError("the disk is full")  # ...then the savepoint rolls it back

    async def failing_add_many(self: BillRepository, bills_: Any) -> None:
        # The set-based pass: all five numbers taken and bills written, then rolled back together;
        # the pass falls back to closing its cycles one by one, where only the broken one fails.
        await add_many(self, bills_)
        if any(bill.account_id == broken for bill in bills_):
            raise RuntimeError("the disk is full")

    monkeypatch.setattr(BillRepository, "add", failing_add)
    monkeypatch.setattr(BillRepository, "add_many", failing_add_many)
    db.clock.instant = FIRST_DUE
    assert await db.closer().catch_up() == 4
    assert [c.status for c in await db.cycles(broken)] == [BillCycleStatus.OPEN], "not closed without its bill"
    assert sorted(b.number_sequence for b in await db.all_bills()) == [1, 2, 3, 4]

    monkeypatch.setattr(BillRepository, "add", add)
    monkeypatch.setattr(BillRepository, "add_many", add_many)
    assert await db.closer().catch_up() == 1
    (late_bill,) = await db.bills(broken)
    assert late_bill.number is not None and late_bill.number.number == "F-2031-000005"


@pytest.mark.parametrize("passes_at_once", [1, 2])
async def test_charges_racing_the_closers_are_each_billed_once(db: BillingDb, passes_at_once: int) -> None:
    """ChargesCreated for the closing cycles applied by three consumers while two closers close
    them (about half the charges make it before their cycle's bill): each charge
    lands either in its cycle before the bill or in the next cycle (late), never in a billed one,
    and once everything is billed each is on exactly one bill."""
    accounts = [await open_unit(db, NOW + timedelta(minutes=i)) for i in range(24)]
    firsts = {a: (await db.cycles(a))[0] for a in accounts}
    db.clock.instant = FIRST_DUE
    messages = [
        charges_created(
            *(rated(a, firsts[a].bill_cycle_id, "0.10", madrid(2031, 5, 14, 22)) for a in accounts[i % 4 :: 4])
        )
        for i in range(40)
    ]

    async def feed(share: list[FakeMsg]) -> None:
        for msg in share:
            await deliver(db, msg)

    # Three consumers (replicas) and two closers (one cycle per pass) at once: the closers wait
    # for cycles the consumers hold, so every first cycle is billed when they are done.
    await asyncio.gather(
        *(feed(messages[i::3]) for i in range(3)),
        db.closer(batch_size=1, passes_at_once=passes_at_once).catch_up(),
        db.closer(batch_size=1, passes_at_once=passes_at_once).catch_up(),
    )
    first_bills = {b.bill_cycle_id: b for b in await db.all_bills()}
    assert set(first_bills) == {c.bill_cycle_id for c in firsts.values()}
    items = await db.items()
    for row in items:
        first = firsts[row.account_id]
        if row.bill_id is not None:
            assert (row.bill_cycle_id, row.late) == (first.bill_cycle_id, False)
            assert first_bills[first.bill_cycle_id].bill_id == row.bill_id
        else:
            assert row.bill_cycle_id != first.bill_cycle_id and row.late, "after its cycle's bill: the next, late"

    db.clock.instant = madrid(2031, 6, 15) + DELAY
    await db.closer().catch_up()
    items = await db.items()
    assert len(items) == 40 * 6 and all(row.bill_id is not None for row in items)
    assert sum((b.subtotal for b in await db.all_bills()), Decimal(0)) == Decimal("24.00")


@pytest.mark.parametrize("passes_at_once", [1, 2])
async def test_a_cycle_held_by_the_charges_consumer_is_waited_for_not_skipped(
    db: BillingDb, passes_at_once: int
) -> None:
    """The consumer share-locks the cycle it adds items to: a closer skips it (SKIP LOCKED) but,
    finding it due, waits for it instead of leaving it open until the next check (with passes at
    once, the first line waits)."""
    account_id = await open_unit(db)
    (cycle,) = await db.cycles(account_id)
    db.clock.instant = FIRST_DUE
    async with db.uow() as holder:
        held = await holder.bill_cycles.get(cycle.bill_cycle_id, for_share=True)
        assert held is not None
        closing = asyncio.create_task(db.closer(passes_at_once=passes_at_once).catch_up())
        await asyncio.sleep(0.5)
        assert not closing.done(), "it waits for the consumer's transaction"
        await holder.commit()
    assert await asyncio.wait_for(closing, timeout=10) == 1
    assert len(await db.bills(account_id)) == 1


# The billing summary.


async def test_the_summary_lists_issued_bills_and_flags_the_overdue(db: BillingDb) -> None:
    account_id = await open_unit(db, profile=BillingProfile(15, payment_terms_days=5))
    (cycle,) = await db.cycles(account_id)
    await deliver(db, charges_created(rated(account_id, cycle.bill_cycle_id, "10.00", madrid(2031, 5, 11))))
    db.clock.instant = FIRST_DUE
    await db.closer().catch_up()  # bill 1: 12.10, due 20 May; the next cycle's bill will be zero
    db.clock.instant = madrid(2031, 6, 15) + DELAY
    await db.closer().catch_up()

    servicer = BillingServicer(db.uow)
    db.clock.instant = madrid(2031, 5, 20, 23, 59)
    summary = await servicer.GetBillingSummary(pb.GetBillingSummaryRequest(account_id=str(account_id)), NO_CONTEXT)
    (open_bill,) = summary.open_bills  # the zero bill owes nothing
    assert (open_bill.bill_number, open_bill.overdue) == ("F-2031-000001", False)
    assert from_money(open_bill.total) == from_money(open_bill.open_amount) == Decimal("12.10")
    assert (open_bill.due_date.month, open_bill.due_date.day) == (5, 20)
    assert from_money(summary.overdue_total) == 0

    db.clock.instant = madrid(2031, 5, 21)  # the due date has passed in Madrid
    summary = await servicer.GetBillingSummary(pb.GetBillingSummaryRequest(account_id=str(account_id)), NO_CONTEXT)
    assert [b.overdue for b in summary.open_bills] == [True]
    assert from_money(summary.overdue_total) == Decimal("12.10")


# The API.


async def test_bills_are_listed_newest_first_page_by_page(db: BillingDb) -> None:
    account_id, other = await open_unit(db), await open_unit(db)
    db.clock.instant = madrid(2031, 9, 15) + DELAY
    await db.closer().catch_up()
    servicer, pages, token = BillingServicer(db.uow), [], ""
    while True:
        page = await servicer.ListBills(
            pb.ListBillsRequest(account_id=str(account_id), page_size=2, page_token=token), NO_CONTEXT
        )
        pages.append([(b.issue_date.month, b.issue_date.day) for b in page.bills])
        assert all(b.account_id == str(account_id) for b in page.bills)
        token = page.next_page_token
        if not token:
            break
    assert pages == [[(9, 15), (8, 15)], [(7, 15), (6, 15)], [(5, 15)]]
    first = await servicer.ListBills(pb.ListBillsRequest(account_id=str(account_id), page_size=2), NO_CONTEXT)
    with pytest.raises(InvalidArgument) as refused:
        await servicer.ListBills(
            pb.ListBillsRequest(account_id=str(other), page_token=first.next_page_token), NO_CONTEXT
        )
    assert refused.value.field == "page_token"


@pytest.mark.parametrize(
    ("method", "request_", "field_name"),
    [
        ("GetBill", pb.GetBillRequest(bill_id="nope"), "bill_id"),
        ("ListBills", pb.ListBillsRequest(account_id=""), "account_id"),
        ("ListBills", pb.ListBillsRequest(account_id=str(uuid.uuid4()), page_size=-1), "page_size"),
        ("ListBills", pb.ListBillsRequest(account_id=str(uuid.uuid4()), page_token="!!"), "page_token"),
        ("ListUnbilledItems", pb.ListUnbilledItemsRequest(account_id="x"), "account_id"),
        ("ListUnbilledItems", pb.ListUnbilledItemsRequest(account_id=str(uuid.uuid4()), page_token="!!"), "page_token"),
    ],
)
async def test_bill_rpcs_name_the_bad_field(db: BillingDb, method: str, request_: Any, field_name: str) -> None:
    with pytest.raises(InvalidArgument) as refused:
        await getattr(BillingServicer(db.uow), method)(request_, NO_CONTEXT)
    assert refused.value.field == field_name


async def test_unknown_bills_and_accounts_are_not_found_over_grpc(db: BillingDb) -> None:
    async with billing_stub(db.uow) as stub:
        for call in (
            stub.GetBill(pb.GetBillRequest(bill_id=str(uuid.uuid4()))),
            stub.ListBills(pb.ListBillsRequest(account_id=str(uuid.uuid4()))),
            stub.ListUnbilledItems(pb.ListUnbilledItemsRequest(account_id=str(uuid.uuid4()))),
        ):
            with pytest.raises(grpc.aio.AioRpcError) as missing:
                await call
            assert missing.value.code() == grpc.StatusCode.NOT_FOUND
        account_id = await open_unit(db)
        assert list((await stub.ListBills(pb.ListBillsRequest(account_id=str(account_id)))).bills) == []
    with pytest.raises(NotFound) as missing_bill:
        await BillingServicer(db.uow).GetBill(pb.GetBillRequest(bill_id=str(uuid.uuid4())), NO_CONTEXT)
    assert missing_bill.value.reason == "BILL_NOT_FOUND"


# The database's own guards.


async def test_the_database_refuses_a_second_bill_for_a_cycle_and_totals_that_do_not_add_up(db: BillingDb) -> None:
    account_id = await open_unit(db)
    db.clock.instant = FIRST_DUE
    await db.closer().catch_up()
    (row,) = await db.all_bills()
    async with db.engine.connect() as conn:
        copy = {k: v for k, v in row._mapping.items()}
        for change in (
            {
                "bill_id": uuid.uuid4(),
                "bill_number": None,
                "number_series": None,
                "number_sequence": None,
                "status": "draft",
                "issue_time": None,
            },
            {"bill_id": uuid.uuid4(), "bill_cycle_id": None, "bill_number": "X-1", "total": Decimal(1)},
            {
                "bill_id": uuid.uuid4(),
                "bill_cycle_id": None,
                "bill_number": "X-2",
                "number_sequence": 99,
                "suppressed": True,
            },
        ):
            with pytest.raises(Exception) as refused:
                async with conn.begin():
                    await conn.execute(bills.insert().values(**{**copy, **change}))
            assert "bills_" in str(refused.value)
    assert len(await db.bills(account_id)) == 1


async def test_migration_0004_goes_back_and_forth(empty_database: EmptyDatabase) -> None:
    url = await empty_database("billing")
    config = alembic_config(MIGRATIONS, url)
    await asyncio.to_thread(command.upgrade, config, "head")
    await asyncio.to_thread(command.downgrade, config, "0003")
    conn = await asyncpg.connect(plain_url(url))
    try:
        for table in ("bills", "bill_lines", "bill_taxes", "bill_items", "bill_number_series"):
            assert await conn.fetchval(f"select to_regclass('{table}')") is None
        await asyncio.to_thread(command.upgrade, config, "head")
        indexes = dict(await conn.fetch("select indexname, indexdef from pg_indexes where tablename = 'bill_items'"))
        assert "(bill_cycle_id, seq)" in indexes["bill_items_unbilled"]
        assert await conn.fetchval("select count(*) from bill_number_series") == 0
    finally:
        await conn.close()


async def test_a_fresh_database_has_every_table(db: BillingDb) -> None:
    async with db.engine.connect() as conn:
        for table in (bills, bill_items, bill_number_series):
            assert await conn.scalar(select(func.count()).select_from(table)) == 0
        assert await conn.scalar(text("select count(*) from bill_lines")) == 0
    assert NumberFormat().series(date(2031, 1, 1)) == "F-2031"


async def test_charges_racing_bill_now_calls_are_each_billed_once(db: BillingDb) -> None:
    """ChargesCreated for accounts' open cycles applied by three consumers while bill now calls
    bill the same accounts again and again: a bill now holds the open cycle against the consumers
    (they add their items before it reads or after it commits), so each charge is on exactly one
    bill or still unbilled, never on two and never skipped by the cycle's billed_through_seq; the
    cycles' own bills then take the rest."""
    accounts = [await open_unit(db, NOW + timedelta(minutes=i)) for i in range(6)]
    firsts = {a: (await db.cycles(a))[0] for a in accounts}
    messages = [
        charges_created(
            *(
                rated(a, firsts[a].bill_cycle_id, "0.10", madrid(2031, 5, 12, 10) + timedelta(seconds=i))
                for a in accounts
            )
        )
        for i in range(30)
    ]

    async def feed(share: list[FakeMsg]) -> None:
        for msg in share:
            await deliver(db, msg)

    async def bill_now_repeatedly(account_id: uuid.UUID) -> int:
        issued = 0
        for _ in range(8):
            try:
                await bills_service.bill_now(db.uow(), account_id, uuid.uuid4(), POLICY)
                issued += 1
            except FailedPrecondition:
                pass  # nothing unbilled at that moment
            await asyncio.sleep(0)
        return issued

    counts = await asyncio.gather(
        *(feed(messages[i::3]) for i in range(3)), *(bill_now_repeatedly(a) for a in accounts)
    )
    assert sum(c for c in counts if c is not None) > 0, "some bills were issued during the race"
    items = await db.items()  # checks every item's cycle and the bills' lines agree
    assert len(items) == 6 * 30
    on_demand = sum((b.subtotal for b in await db.all_bills()), Decimal(0))
    unbilled = sum((row.amount for row in items if row.bill_id is None), Decimal(0))
    assert on_demand + unbilled == Decimal("18.00")
    db.clock.instant = FIRST_DUE
    await db.closer().catch_up()
    items = await db.items()
    assert all(row.bill_id is not None for row in items)
    assert sum((b.subtotal for b in await db.all_bills()), Decimal(0)) == Decimal("18.00")


async def test_bill_now_waits_for_a_held_cycle_only_up_to_its_lock_timeout(db: BillingDb) -> None:
    """A closer billing the cycle (here: a transaction holding it as the closer does) keeps BillNow
    waiting at most BILLING_BILL_NOW_LOCK_TIMEOUT_SECONDS: then the call fails with the lock
    timeout (answered ABORTED over gRPC, transient_errors), having changed nothing; its retry with the
    same request id bills once the cycle is free."""
    account_id = await open_unit(db)
    (cycle,) = await db.cycles(account_id)
    await deliver(db, charges_created(rated(account_id, cycle.bill_cycle_id, "2.50", madrid(2031, 5, 12, 10))))
    request_id = uuid.uuid4()
    impatient = BillPolicy(RATES, bill_now_lock_timeout=0.3)
    async with db.uow() as holder:
        held = await holder.bill_cycles.open_for_unit(cycle.bill_unit_id, for_update=True)
        assert held is not None
        started = asyncio.get_running_loop().time()
        with pytest.raises(Exception) as refused:  # which one: asserted below
            # Without the limit it would wait for the holder for ever: 30 s says it did not stop.
            await asyncio.wait_for(bills_service.bill_now(db.uow(), account_id, request_id, impatient), 30)
        waited = asyncio.get_running_loop().time() - started
        await holder.rollback()
    answer = transient_errors.retryable(refused.value)
    assert answer is not None and (answer.code, answer.reason) == (grpc.StatusCode.ABORTED, "LOCK_TIMEOUT")
    assert waited >= 0.3
    assert await db.bills(account_id) == []
    (unbilled,) = await db.items()
    assert unbilled.bill_id is None
    bill = await bills_service.bill_now(db.uow(), account_id, request_id, impatient)
    assert bill.subtotal == Decimal("2.50")
    assert [b.bill_id for b in await db.bills(account_id)] == [bill.bill_id]
