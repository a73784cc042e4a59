"""Bill now, threshold and trial bills, the bill's statement, credit notes and void, and gapless
numbering across all of them, against a real, migrated PostgreSQL (docs/billing.md, "Other
triggers", "What a bill says", "Credit notes"); and payments racing for one account."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from evolutivo.balance.v1 import events_pb2 as balance_events
from evolutivo.balance.v1 import payment_pb2
from evolutivo.billing.v1 import events_pb2
from evolutivo.charging.v1 import events_pb2 as charging_events
from evolutivo.charging.v1 import usage_pb2
from evolutivo_billing.adapters import events
from evolutivo_billing.adapters.orm import bill_number_series, bills, credit_note_number_series, outbox
from evolutivo_billing.adapters.orm import inbox as inbox_table
from evolutivo_billing.domain.bills import Bill, BillStatus, BillTrigger, TaxRates
from evolutivo_billing.domain.credit_notes import CreditLineRequest
from evolutivo_billing.domain.model import BillingProfile
from evolutivo_billing.entrypoints.app import MIGRATIONS
from evolutivo_billing.entrypoints.consumers import subscriptions
from evolutivo_billing.entrypoints.cycle_closer import CycleCloser
from evolutivo_billing.service_layer import bills as bill_use_cases
from evolutivo_billing.service_layer import credit_notes, handlers
from evolutivo_billing.service_layer.bills import BillPolicy
from evolutivo_billing.service_layer.credit_notes import CreditNoteRequest
from evolutivo_billing.service_layer.unit_of_work import BillingUnitOfWork
from evolutivo_runtime.clock import FixedClock
from evolutivo_runtime.db import create_engine, session_factory
from evolutivo_runtime.errors import FailedPrecondition, InvalidArgument
from evolutivo_runtime.messaging.streams import stream_name
from evolutivo_runtime.money import to_money
from evolutivo_runtime.timestamps import to_timestamp
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker
from support.jetstream import consumer_for, message, process

MADRID = ZoneInfo("Europe/Madrid")
DELAY = timedelta(hours=1)
PROFILE = BillingProfile(15, payment_terms_days=10)
POLICY = BillPolicy(TaxRates({"standard": Decimal("0.21"), "exempt": Decimal("0")}))


def madrid(year: int, month: int, day: int, hour: int = 0) -> datetime:
    return datetime(year, month, day, hour, tzinfo=MADRID).astimezone(UTC)


NOW = madrid(2031, 5, 10, 12)
# The first cycle (10-15 May) closes at 15 May 01:00 local.
FIRST_CLOSE = madrid(2031, 5, 15) + DELAY


@dataclass
class Db:
    engine: AsyncEngine
    sessions: async_sessionmaker[AsyncSession]
    clock: FixedClock

    def uow(self) -> BillingUnitOfWork:
        return BillingUnitOfWork(self.sessions, outbox, self.clock, events.encode)

    def closer(self) -> CycleCloser:
        return CycleCloser(self.uow, DELAY, check_seconds=0.05, batch_size=10, policy=POLICY)

    async def bills(self, account_id: uuid.UUID) -> list[Bill]:
        async with self.uow() as uow:
            found = list(reversed(await uow.bills.list_for_account(account_id, None, 1000)))
            return [b for b in [await uow.bills.get(b.bill_id) for b in found] if b is not None]

    async def scalar(self, query: Any) -> Any:
        async with self.engine.connect() as conn:
            return await conn.scalar(query)

    async def count(self, table: Any) -> int:
        return int(await self.scalar(select(func.count()).select_from(table)) or 0)

    async def subjects(self) -> list[str]:
        async with self.engine.connect() as conn:
            return [row.subject for row in await conn.execute(select(outbox.c.subject).order_by(outbox.c.seq))]

    async def events_of(self, subject: str, kind: type[Any]) -> list[Any]:
        async with self.engine.connect() as conn:
            rows = await conn.execute(
                select(outbox.c.payload).where(outbox.c.subject == subject).order_by(outbox.c.seq)
            )
            return [kind.FromString(row.payload) for row in rows]


@pytest.fixture
async def db(migrated_database: Callable[[str, Path], Awaitable[str]]) -> AsyncIterator[Db]:
    url = await migrated_database("billing_triggers", MIGRATIONS)
    engine = create_engine(url, pool_size=8)
    try:
        yield Db(engine, session_factory(engine), FixedClock(NOW))
    finally:
        await engine.dispose()


async def open_unit(db: Db, threshold: str | None = None) -> uuid.UUID:
    account_id = uuid.uuid4()
    async with db.uow() as uow:
        await handlers.open_bill_unit(
            uow,
            account_id,
            "EUR",
            "Europe/Madrid",
            PROFILE,
            db.clock.now(),
            NOW,
            Decimal(threshold) if threshold else None,
        )
        await uow.commit()
    return account_id


def rated(account_id: uuid.UUID, amount: str, quantity: str = "1", **extra: Any) -> usage_pb2.RatedCharge:
    return usage_pb2.RatedCharge(
        charge_id=str(uuid.uuid4()),
        account_id=str(account_id),
        kind=usage_pb2.CHARGE_KIND_USAGE,
        event_id=f"evt-{uuid.uuid4().hex[:10]}",
        charge_offer_code="api_pro",
        charge_offer_version=1,
        charge_code="api_calls",
        tax_code="standard",
        quantity=quantity,
        amount=to_money(Decimal(amount), "EUR"),
        unrounded_amount=extra.pop("unrounded_amount", amount),
        event_time=to_timestamp(NOW),
        **extra,
    )


async def charge(db: Db, *charges: usage_pb2.RatedCharge) -> None:
    consumer = consumer_for(subscriptions(), stream_name("charging"), db.uow, inbox_table)
    event = charging_events.ChargesCreated(charges=list(charges), currency_code="EUR")
    msg = message("evolutivo.charging.v1.charges.created", event, db.clock.now())
    await process(consumer, msg)
    assert msg.acked, "the charges apply"


def payment_msg(account_id: uuid.UUID, amount: str) -> Any:
    p = payment_pb2.Payment(
        payment_id=str(uuid.uuid4()),
        account_id=str(account_id),
        balance_group_id=str(uuid.uuid4()),
        amount=to_money(Decimal(amount), "EUR"),
        method=payment_pb2.PAYMENT_METHOD_TYPE_BANK_TRANSFER,
        reference=f"ref-{uuid.uuid4().hex[:8]}",
        received_time=to_timestamp(NOW),
        state=payment_pb2.PAYMENT_STATE_RECORDED,
    )
    return message("evolutivo.balance.v1.payment.recorded", balance_events.PaymentRecorded(payment=p), NOW)


async def pay(db: Db, account_id: uuid.UUID, amount: str) -> None:
    consumer = consumer_for(subscriptions(), stream_name("balance"), db.uow, inbox_table)
    msg = payment_msg(account_id, amount)
    await process(consumer, msg)
    assert msg.acked


async def bill_now(db: Db, account_id: uuid.UUID, request_id: uuid.UUID | None = None) -> Bill:
    return await bill_use_cases.bill_now(db.uow(), account_id, request_id or uuid.uuid4(), POLICY)


async def credit(db: Db, bill_id: uuid.UUID, *lines: CreditLineRequest, whole: bool = False, **kw: Any) -> Any:
    request = CreditNoteRequest(
        bill_id,
        whole,
        list(lines),
        kw.get("reason", "billing error"),
        kw.get("actor", "ops@example.com"),
        kw.get("request_id", uuid.uuid4()),
    )
    return await credit_notes.create_credit_note(db.uow(), request, POLICY.credit_note_numbering)


async def test_bill_now_bills_the_unbilled_items_once_per_request_and_the_cycle_goes_on(db: Db) -> None:
    account = await open_unit(db)
    await charge(db, rated(account, "10.00", "4", unrounded_amount="10"), rated(account, "5.00", "2"))
    db.clock.instant = NOW + timedelta(hours=1)
    request_id = uuid.uuid4()

    first = await bill_now(db, account, request_id)
    again = await bill_now(db, account, request_id)

    assert again.bill_id == first.bill_id
    assert (first.status, first.trigger, first.number and first.number.number) == (
        BillStatus.ISSUED,
        BillTrigger.ON_DEMAND,
        "F-2031-000001",
    )
    assert (first.subtotal, first.tax_total, first.total) == (Decimal("15.00"), Decimal("3.15"), Decimal("18.15"))
    (line,) = first.lines
    # Both charges were priced at 2.50 a unit.
    assert (line.quantity, line.unit_price) == (Decimal(6), Decimal("2.5"))
    assert (first.issue_date, first.due_date) == (
        NOW.astimezone(MADRID).date(),
        NOW.astimezone(MADRID).date() + timedelta(days=10),
    )
    assert await db.count(bills) == 1
    assert await db.scalar(select(bill_number_series.c.last_number)) == 1

    # The cycle goes on: its bill only holds what came after.
    await charge(db, rated(account, "7.00"))
    db.clock.instant = FIRST_CLOSE
    await db.closer().catch_up()
    on_demand, cycle_bill = await db.bills(account)
    assert on_demand.bill_id == first.bill_id
    assert (cycle_bill.trigger, cycle_bill.subtotal) == (BillTrigger.CYCLE, Decimal("7.00"))
    assert cycle_bill.number is not None and cycle_bill.number.number == "F-2031-000002"
    # Its statement: the bill-now bill is still owed, nothing paid or credited since.
    assert cycle_bill.statement.previous_balance == Decimal("18.15")
    assert cycle_bill.amount_due == Decimal("18.15") + cycle_bill.total
    assert await db.subjects() == [
        "evolutivo.billing.v1.bill_unit.created",
        "evolutivo.billing.v1.bill_cycle.opened",
        "evolutivo.billing.v1.bill.issued",
        "evolutivo.billing.v1.bill_cycle.closed",
        "evolutivo.billing.v1.bill_cycle.opened",
        "evolutivo.billing.v1.bill.issued",
    ]


async def test_bill_now_with_nothing_unbilled_is_refused_and_takes_no_number(db: Db) -> None:
    account = await open_unit(db)
    with pytest.raises(FailedPrecondition):
        await bill_now(db, account)
    assert await db.count(bills) == 0
    assert await db.scalar(select(func.coalesce(func.max(bill_number_series.c.last_number), 0))) == 0


async def test_tier_bands_of_a_line_whose_charges_have_no_single_price(db: Db) -> None:
    account = await open_unit(db)
    tiers = [
        usage_pb2.TierLine(tier=0, units="10", unit_price="1", flat_fee="0", amount="10"),
        usage_pb2.TierLine(tier=1, units="5", unit_price="0.5", flat_fee="0", amount="2.5"),
    ]
    await charge(
        db,
        rated(account, "12.50", "15", unrounded_amount="12.5", tiers=tiers),
        rated(
            account,
            "1.00",
            "2",
            unrounded_amount="1",
            tiers=[usage_pb2.TierLine(tier=1, units="2", unit_price="0.5", flat_fee="0", amount="1")],
        ),
    )
    bill = await bill_now(db, account)
    (line,) = bill.lines
    assert line.unit_price is None
    assert [(t.tier, t.units, t.unit_price, t.amount) for t in line.tiers] == [
        (0, Decimal(10), Decimal(1), Decimal(10)),
        (1, Decimal(7), Decimal("0.5"), Decimal("3.5")),
    ]
    assert line.amount == Decimal("13.50")


async def test_a_threshold_bill_is_issued_once_per_crossing(db: Db) -> None:
    account = await open_unit(db, threshold="100")
    await charge(db, rated(account, "60.00"))
    assert await db.closer().bill_thresholds() == 0

    await charge(db, rated(account, "40.00"))
    await charge(db, rated(account, "1.00"))  # still over: no second mark, no second bill
    assert await db.closer().bill_thresholds() == 1
    assert await db.closer().bill_thresholds() == 0
    (first,) = await db.bills(account)
    assert (first.trigger, first.subtotal, first.status) == (
        BillTrigger.THRESHOLD,
        Decimal("101.00"),
        BillStatus.ISSUED,
    )

    # Below the threshold again until the next crossing.
    await charge(db, rated(account, "30.00"))
    assert await db.closer().bill_thresholds() == 0
    await charge(db, rated(account, "80.00"))
    assert await db.closer().bill_thresholds() == 1
    # Both bills were made at the same (fixed) instant, so the listing's order between them is not
    # defined: the numbers, not their order, are the point.
    numbers = sorted(b.number.number for b in await db.bills(account) if b.number)
    assert numbers == ["F-2031-000001", "F-2031-000002"]
    # The cycle goes on: its bill holds nothing of the threshold bills' items.
    db.clock.instant = FIRST_CLOSE
    await db.closer().catch_up()
    *_, cycle_bill = await db.bills(account)
    assert (cycle_bill.trigger, cycle_bill.total) == (BillTrigger.CYCLE, Decimal(0))


async def test_a_threshold_mark_whose_items_the_cycle_billed_issues_nothing(db: Db) -> None:
    account = await open_unit(db, threshold="50")
    await charge(db, rated(account, "60.00"))
    db.clock.instant = FIRST_CLOSE
    await db.closer().catch_up()  # the cycle's bill takes the items first
    assert await db.closer().bill_thresholds() == 0
    (only,) = await db.bills(account)
    assert only.trigger is BillTrigger.CYCLE


async def test_a_threshold_bill_of_a_cycle_a_consumer_holds_waits_for_the_next_pass(db: Db) -> None:
    """The threshold biller skips a unit whose open cycle a ChargesCreated transaction holds (it
    would otherwise wait for share locks that may keep coming, holding up the pass): the mark
    stays, and the next pass bills it."""
    account = await open_unit(db, threshold="50")
    await charge(db, rated(account, "60.00"))
    async with db.uow() as consumer:  # a consumer adding items to the cycle, not yet committed
        unit = await consumer.bill_units.for_account(account)
        assert unit is not None
        assert await consumer.bill_cycles.open_for_unit(unit.bill_unit_id, for_share=True) is not None
        assert await asyncio.wait_for(db.closer().bill_thresholds(), 10) == 0
        await consumer.rollback()
    assert await db.bills(account) == []
    assert await db.closer().bill_thresholds() == 1
    (bill,) = await db.bills(account)
    assert (bill.trigger, bill.subtotal) == (BillTrigger.THRESHOLD, Decimal("60.00"))


async def test_the_trial_bill_changes_nothing_and_takes_no_number(db: Db) -> None:
    account = await open_unit(db)
    await charge(db, rated(account, "10.00"))
    before = (await db.count(outbox), await db.count(bill_number_series))

    preview = await bill_use_cases.preview_bill(db.uow(), account, POLICY)

    assert (preview.status, preview.number, preview.total) == (BillStatus.DRAFT, None, Decimal("12.10"))
    assert (await db.count(outbox), await db.count(bill_number_series)) == before
    assert await db.count(bills) == 0
    unbilled, _ = await bill_use_cases.list_unbilled_items(db.uow(), account, 10, None)
    assert len(unbilled) == 1
    issued = await bill_now(db, account)
    assert issued.number is not None and issued.number.number == "F-2031-000001"
    assert issued.total == preview.total


async def test_credit_notes_never_credit_more_than_was_billed_and_refusals_name_the_field(db: Db) -> None:
    account = await open_unit(db)
    await charge(db, rated(account, "10.00"))
    bill = await bill_now(db, account)

    with pytest.raises(InvalidArgument) as too_much:
        await credit(db, bill.bill_id, CreditLineRequest(1, Decimal("10.01")))
    assert too_much.value.field == "lines[0].amount"
    with pytest.raises(InvalidArgument) as no_line:
        await credit(db, bill.bill_id, CreditLineRequest(2, Decimal("1")))
    assert no_line.value.field == "lines[0].bill_line_number"
    with pytest.raises(InvalidArgument) as unrounded:
        await credit(db, bill.bill_id, CreditLineRequest(1, Decimal("1.005")))
    assert unrounded.value.field == "lines[0].amount"
    with pytest.raises(InvalidArgument) as no_reason:
        await credit(db, bill.bill_id, CreditLineRequest(1, Decimal("1")), reason=" ")
    assert no_reason.value.field == "reason"
    assert await db.count(credit_note_number_series) == 0, "a refused note takes no number"

    request_id = uuid.uuid4()
    first = await credit(db, bill.bill_id, CreditLineRequest(1, Decimal("4.00")), request_id=request_id)
    again = await credit(db, bill.bill_id, CreditLineRequest(1, Decimal("4.00")), request_id=request_id)
    assert again.credit_note_id == first.credit_note_id
    assert (first.number.number, first.subtotal, first.tax_total, first.total) == (
        "CN-2031-000001",
        Decimal("4.00"),
        Decimal("0.84"),
        Decimal("4.84"),
    )
    assert first.voids_bill is False
    # What is left of the line: 6.00.
    with pytest.raises(InvalidArgument) as over:
        await credit(db, bill.bill_id, CreditLineRequest(1, Decimal("6.01")))
    assert over.value.field == "lines[0].amount"
    (after,) = await db.bills(account)
    assert (after.credited_amount, after.open_amount, after.status) == (
        Decimal("4.84"),
        Decimal("7.26"),
        BillStatus.ISSUED,
    )

    # The rest of the line voids the unpaid bill; both notes add up to its total.
    rest = await credit(db, bill.bill_id, CreditLineRequest(1))
    assert rest.voids_bill and rest.total == Decimal("7.26")
    (void,) = await db.bills(account)
    assert (void.status, void.open_amount) == (BillStatus.VOID, Decimal(0))
    assert first.total + rest.total == bill.total
    (voided,) = await db.events_of("evolutivo.billing.v1.bill.voided", events_pb2.BillVoided)
    assert voided.credit_note_id == str(rest.credit_note_id)
    issued = await db.events_of("evolutivo.billing.v1.credit_note.issued", events_pb2.CreditNoteIssued)
    assert [e.credit_note.credit_note_number for e in issued] == ["CN-2031-000001", "CN-2031-000002"]
    with pytest.raises(FailedPrecondition):
        await credit(db, bill.bill_id, whole=True)


async def test_a_credit_note_of_a_paid_bill_is_account_credit_on_the_next_bill(db: Db) -> None:
    account = await open_unit(db)
    await charge(db, rated(account, "100.00"))
    bill = await bill_now(db, account)
    db.clock.instant = NOW + timedelta(hours=1)
    await pay(db, account, "121.00")
    (paid,) = await db.bills(account)
    assert paid.status is BillStatus.PAID

    note = await credit(db, bill.bill_id, whole=True)
    assert (note.voids_bill, note.total, note.unallocated) == (False, Decimal("121.00"), Decimal("121.00"))

    await charge(db, rated(account, "50.00"))
    db.clock.instant = FIRST_CLOSE
    await db.closer().catch_up()
    _, following = await db.bills(account)
    assert (following.total, following.credit_applied, following.status) == (
        Decimal("60.50"),
        Decimal("60.50"),
        BillStatus.PAID,
    )
    assert following.statement.payments_received == Decimal("121.00")
    assert following.statement.credits == Decimal("121.00")
    assert following.statement.previous_balance == Decimal(0)
    assert following.amount_due == Decimal(0)
    async with db.uow() as uow:
        assert await uow.credit_notes.credit_total(account) == Decimal("60.50")


async def test_a_draft_bill_cannot_be_credited(db: Db) -> None:
    account = await open_unit(db)
    policy = BillPolicy(POLICY.tax_rates, suppress_zero_bills=True)
    db.clock.instant = FIRST_CLOSE
    await CycleCloser(db.uow, DELAY, 0.05, 10, policy).catch_up()
    (draft,) = await db.bills(account)
    assert draft.suppressed
    with pytest.raises(FailedPrecondition):
        await credit(db, draft.bill_id, whole=True)


async def test_numbers_stay_gapless_across_bill_now_threshold_and_concurrent_cycle_runs(db: Db) -> None:
    accounts = [await open_unit(db, threshold="500") for _ in range(6)]
    for account in accounts:
        await charge(db, rated(account, "10.00"))
    # Three bill-now calls (one retried) race two closers billing every cycle.
    db.clock.instant = FIRST_CLOSE
    retried = uuid.uuid4()
    results = await asyncio.gather(
        bill_now(db, accounts[0], retried),
        bill_now(db, accounts[0], retried),
        bill_now(db, accounts[1]),
        bill_now(db, accounts[2]),
        db.closer().catch_up(),
        db.closer().catch_up(),
        return_exceptions=True,
    )
    # A bill-now that found its items already billed by the cycle is refused: nothing to bill.
    assert all(not isinstance(r, BaseException) or isinstance(r, FailedPrecondition) for r in results), results
    await charge(db, rated(accounts[3], "600.00"))
    await db.closer().bill_thresholds()
    async with db.engine.connect() as conn:
        rows = (await conn.execute(select(bills.c.number_series, bills.c.number_sequence, bills.c.trigger))).all()
    sequences = sorted(row.number_sequence for row in rows if row.number_sequence is not None)
    assert sequences == list(range(1, len(sequences) + 1))
    assert await db.scalar(select(bill_number_series.c.last_number)) == len(sequences)
    # Every account has its cycle bill; the retried request made one bill at most.
    by_trigger = [row.trigger for row in rows]
    assert by_trigger.count("cycle") == len(accounts)
    assert by_trigger.count("threshold") == 1
    assert by_trigger.count("on_demand") <= 3


async def test_two_payments_racing_for_one_account_never_over_allocate(db: Db) -> None:
    account = await open_unit(db)
    await charge(db, rated(account, "10.00"))
    await bill_now(db, account)
    db.clock.instant = NOW + timedelta(hours=2)
    await charge(db, rated(account, "20.00"))
    await bill_now(db, account)
    # Two consumers (two sessions), each with one payment, applied at once.
    first = consumer_for(subscriptions(), stream_name("balance"), db.uow, inbox_table)
    second = consumer_for(subscriptions(), stream_name("balance"), db.uow, inbox_table)
    a, b = payment_msg(account, "20.00"), payment_msg(account, "20.00")
    await asyncio.gather(process(first, a), process(second, b))
    assert a.acked and b.acked
    older, newer = await db.bills(account)
    assert (older.paid_amount, older.status) == (Decimal("12.10"), BillStatus.PAID)
    assert (newer.paid_amount, newer.status) == (Decimal("24.20"), BillStatus.PAID)
    async with db.uow() as uow:
        # 40.00 paid, 36.30 owed: 3.70 is left as credit, to the cent.
        assert await uow.payments.credit_total(account) == Decimal("3.70")
