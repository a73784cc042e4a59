"""Payments allocated to bills against a real, migrated database: balance's PaymentRecorded and
PaymentReversed applied through the service's consumer (oldest due first, part and full payments,
overpayment kept as credit and applied to the next bill issued, redeliveries allocating nothing
twice, reversals re-opening what they paid), the overdue marker (once per bill), the billing
summary's open amounts and the 0005 migration."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

import asyncpg
import pytest
from alembic import command
from evolutivo.balance.v1 import events_pb2 as balance_events
from evolutivo.balance.v1 import payment_pb2
from evolutivo.billing.v1 import billing_service_pb2 as pb
from evolutivo.billing.v1 import events_pb2
from evolutivo.charging.v1 import events_pb2 as charging_events
from evolutivo.charging.v1 import usage_pb2
from evolutivo_billing.adapters import events
from evolutivo_billing.adapters.orm import bills, credit_notes, outbox, payment_allocations, payments
from evolutivo_billing.adapters.orm import inbox as inbox_table
from evolutivo_billing.domain.bills import Bill, BillStatus, TaxRates
from evolutivo_billing.domain.credit_notes import CreditLineRequest
from evolutivo_billing.domain.model import BillingProfile
from evolutivo_billing.entrypoints.app import MIGRATIONS
from evolutivo_billing.entrypoints.consumers import subscriptions
from evolutivo_billing.entrypoints.cycle_closer import CycleCloser
from evolutivo_billing.entrypoints.grpc_api import BillingServicer
from evolutivo_billing.service_layer import credit_notes as credit_note_use_cases
from evolutivo_billing.service_layer import handlers
from evolutivo_billing.service_layer.bills import BillPolicy
from evolutivo_billing.service_layer.credit_notes import CreditNoteRequest
from evolutivo_billing.service_layer.unit_of_work import BillingUnitOfWork
from evolutivo_runtime.db import plain_url
from evolutivo_runtime.messaging.streams import stream_name
from evolutivo_runtime.migrations import alembic_config
from evolutivo_runtime.money import from_money, to_money
from evolutivo_runtime.timestamps import to_timestamp
from google.protobuf.message import Message
from sqlalchemy import func, select, text
from support.databases import EmptyDatabase, MigratedDatabase, ServiceDb
from support.jetstream import FakeMsg, consumer_for, message, process

MADRID = ZoneInfo("Europe/Madrid")
DELAY = timedelta(hours=1)
NO_CONTEXT: Any = None
# Billing day 15, due 5 days after issue; 21% standard tax.
PROFILE = BillingProfile(15, payment_terms_days=5)
POLICY = BillPolicy(TaxRates({"standard": Decimal("0.21")}))

PAID = "evolutivo.billing.v1.bill.paid"
PARTIALLY_PAID = "evolutivo.billing.v1.bill.partially_paid"
OVERDUE = "evolutivo.billing.v1.bill.overdue"
ALLOCATED = "evolutivo.billing.v1.payment.allocated"
NOTE_ISSUED = "evolutivo.billing.v1.credit_note.issued"
NOTE_ALLOCATED = "evolutivo.billing.v1.credit_note.allocated"
_EVENT_TYPES: dict[str, type[Message]] = {
    "evolutivo.billing.v1.PaymentAllocated": events_pb2.PaymentAllocated,
    "evolutivo.billing.v1.CreditNoteIssued": events_pb2.CreditNoteIssued,
    "evolutivo.billing.v1.CreditNoteAllocated": events_pb2.CreditNoteAllocated,
    "evolutivo.billing.v1.BillPaid": events_pb2.BillPaid,
    "evolutivo.billing.v1.BillPartiallyPaid": events_pb2.BillPartiallyPaid,
    "evolutivo.billing.v1.BillOverdue": events_pb2.BillOverdue,
}


def madrid(year: int, month: int, day: int, hour: int = 0, minute: int = 0) -> datetime:
    return datetime(year, month, day, hour, minute, tzinfo=MADRID).astimezone(UTC)


NOW = madrid(2031, 5, 10, 12)
# Bill 1 (cycle 10-15 May) is issued 15 May, due 20 May; bill 2 (15 May-15 Jun) issued 15 Jun, due 20 Jun.
FIRST_CLOSE = madrid(2031, 5, 15) + DELAY
SECOND_CLOSE = madrid(2031, 6, 15) + DELAY


class BillingDb(ServiceDb):
    def uow(self) -> BillingUnitOfWork:
        return BillingUnitOfWork(self.sessions, outbox, self.clock, events.encode)

    def closer(self) -> CycleCloser:
        return CycleCloser(self.uow, DELAY, check_seconds=0.05, batch_size=2, policy=POLICY)

    async def bills(self, account_id: uuid.UUID) -> list[Bill]:
        """The account's bills, oldest first."""
        async with self.uow() as uow:
            return list(reversed(await uow.bills.list_for_account(account_id, None, 1000)))

    async def events(self, *subjects: str) -> list[tuple[str, Any]]:
        return [
            (row.subject, _EVENT_TYPES[row.event_type].FromString(row.payload))
            for row in await self.rows(select(outbox).order_by(outbox.c.seq))
            if row.subject in subjects
        ]

    async def credit(self, account_id: uuid.UUID) -> Decimal:
        total = await self.scalar(
            select(func.coalesce(func.sum(payments.c.unallocated), 0)).where(payments.c.account_id == account_id)
        )
        return Decimal(total).normalize() if total else Decimal(0)


@pytest.fixture
async def db(migrated_database: MigratedDatabase) -> AsyncIterator[BillingDb]:
    async with BillingDb.open(await migrated_database("billing", MIGRATIONS), NOW, pool_size=8) as database:
        yield database


async def deliver(db: BillingDb, service: str, *msgs: FakeMsg) -> None:
    """One fetched batch of a service's stream (charging or balance), applied as billing's consumer does."""
    await process(consumer_for(subscriptions(), stream_name(service), db.uow, inbox_table), *msgs)
    assert all(m.acked for m in msgs), "every event applies"


async def open_unit(db: BillingDb) -> uuid.UUID:
    account_id = uuid.uuid4()
    async with db.uow() as uow:
        await handlers.open_bill_unit(uow, account_id, "EUR", "Europe/Madrid", PROFILE, db.clock.now(), NOW)
        await uow.commit()
    return account_id


async def charge(db: BillingDb, account_id: uuid.UUID, amount: str, at: datetime) -> None:
    """A charge of `amount` (taxed 21%) in the account's open cycle."""
    async with db.uow() as uow:
        unit = await uow.bill_units.for_account(account_id)
        assert unit is not None
        cycle = await uow.bill_cycles.open_for_unit(unit.bill_unit_id)
        assert cycle is not None
    rated = usage_pb2.RatedCharge(
        charge_id=str(uuid.uuid4()),
        account_id=str(account_id),
        kind=usage_pb2.CHARGE_KIND_USAGE,
        event_id=f"evt-{uuid.uuid4().hex[:10]}",
        purchase_id=str(uuid.uuid4()),
        charge_offer_code="api_pro",
        charge_offer_version=1,
        charge_code="api_calls",
        tax_code="standard",
        quantity="1",
        amount=to_money(Decimal(amount), "EUR"),
        unrounded_amount=amount,
        event_time=to_timestamp(at),
        rate_time=to_timestamp(at),
        bill_cycle_id=str(cycle.bill_cycle_id),
    )
    event = charging_events.ChargesCreated(charges=[rated], currency_code="EUR")
    await deliver(db, "charging", message("evolutivo.charging.v1.charges.created", event, NOW))


async def close(db: BillingDb, at: datetime) -> None:
    db.clock.instant = at
    await db.closer().catch_up()


def payment(account_id: uuid.UUID, amount: str, payment_id: uuid.UUID | None = None) -> payment_pb2.Payment:
    return payment_pb2.Payment(
        payment_id=str(payment_id or uuid.uuid4()),
        account_id=str(account_id),
        balance_group_id=str(uuid.uuid4()),
        amount=to_money(Decimal(amount), "EUR"),
        method=payment_pb2.PAYMENT_METHOD_TYPE_BANK_TRANSFER,
        reference=f"ref-{uuid.uuid4().hex[:8]}",
        received_time=to_timestamp(NOW),
        state=payment_pb2.PAYMENT_STATE_RECORDED,
    )


def recorded(p: payment_pb2.Payment) -> FakeMsg:
    return message("evolutivo.balance.v1.payment.recorded", balance_events.PaymentRecorded(payment=p), NOW)


def reversed_(p: payment_pb2.Payment) -> FakeMsg:
    r = payment_pb2.Payment()
    r.CopyFrom(p)
    r.state = payment_pb2.PAYMENT_STATE_REVERSED
    return message("evolutivo.balance.v1.payment.reversed", balance_events.PaymentReversed(payment=r), NOW)


def states(found: list[Bill]) -> list[tuple[BillStatus, Decimal, Decimal]]:
    return [(b.status, b.paid_amount, b.open_amount) for b in found]


async def two_bills(db: BillingDb) -> uuid.UUID:
    """An account with bill 1 of 12.10 (due 20 May) and bill 2 of 24.20 (due 20 Jun), both issued."""
    account_id = await open_unit(db)
    await charge(db, account_id, "10.00", madrid(2031, 5, 11))
    await close(db, FIRST_CLOSE)
    await charge(db, account_id, "20.00", madrid(2031, 6, 1))
    await close(db, SECOND_CLOSE)
    db.clock.instant = madrid(2031, 6, 16)
    return account_id


async def test_a_full_payment_pays_the_bill(db: BillingDb) -> None:
    account_id = await open_unit(db)
    await charge(db, account_id, "10.00", madrid(2031, 5, 11))
    await close(db, FIRST_CLOSE)
    await deliver(db, "balance", recorded(payment(account_id, "12.10")))

    (bill,) = await db.bills(account_id)
    assert (bill.status, bill.paid_amount, bill.open_amount) == (BillStatus.PAID, Decimal("12.10"), Decimal(0))
    ((subject, event),) = await db.events(PAID, PARTIALLY_PAID)
    assert subject == PAID and event.bill.bill_id == str(bill.bill_id)
    assert from_money(event.bill.paid_amount) == Decimal("12.10") and from_money(event.bill.open_amount) == 0
    summary = await BillingServicer(db.uow).GetBillingSummary(
        pb.GetBillingSummaryRequest(account_id=str(account_id)), NO_CONTEXT
    )
    assert list(summary.open_bills) == []
    assert await db.credit(account_id) == 0


async def test_payments_go_oldest_due_first_part_payments_leave_bills_partly_paid(db: BillingDb) -> None:
    account_id = await two_bills(db)
    await deliver(db, "balance", recorded(payment(account_id, "20.00")))  # 12.10 on bill 1, 7.90 on bill 2

    assert states(await db.bills(account_id)) == [
        (BillStatus.PAID, Decimal("12.10"), Decimal(0)),
        (BillStatus.PARTIALLY_PAID, Decimal("7.90"), Decimal("16.30")),
    ]
    assert [s for s, _ in await db.events(PAID, PARTIALLY_PAID)] == [PAID, PARTIALLY_PAID]
    summary = await BillingServicer(db.uow).GetBillingSummary(
        pb.GetBillingSummaryRequest(account_id=str(account_id)), NO_CONTEXT
    )
    (open_bill,) = summary.open_bills
    assert (from_money(open_bill.total), from_money(open_bill.open_amount)) == (Decimal("24.20"), Decimal("16.30"))


async def test_an_overpayment_is_credit_applied_to_the_next_bill_when_issued(db: BillingDb) -> None:
    account_id = await open_unit(db)
    await charge(db, account_id, "10.00", madrid(2031, 5, 11))
    await close(db, FIRST_CLOSE)
    db.clock.instant = madrid(2031, 5, 16)
    await deliver(db, "balance", recorded(payment(account_id, "20.00")))
    assert states(await db.bills(account_id)) == [(BillStatus.PAID, Decimal("12.10"), Decimal(0))]
    assert await db.credit(account_id) == Decimal("7.9")

    await charge(db, account_id, "20.00", madrid(2031, 6, 1))
    await close(db, SECOND_CLOSE)  # bill 2, 24.20, takes the 7.90 of credit as it is issued
    assert states(await db.bills(account_id))[1] == (BillStatus.PARTIALLY_PAID, Decimal("7.90"), Decimal("16.30"))
    assert await db.credit(account_id) == 0
    assert await db.count(payment_allocations) == 2

    await deliver(db, "balance", recorded(payment(account_id, "30.00")))  # 16.30 pays bill 2, 13.70 is credit
    await close(db, madrid(2031, 7, 15) + DELAY)  # bill 3 is zero: it owes nothing, the credit stays
    await charge(db, account_id, "5.00", madrid(2031, 7, 20))
    await close(db, madrid(2031, 8, 15) + DELAY)  # bill 4, 6.05, is paid from the credit
    found = await db.bills(account_id)
    assert [b.status for b in found] == [BillStatus.PAID, BillStatus.PAID, BillStatus.ISSUED, BillStatus.PAID]
    assert found[2].total == 0
    assert await db.credit(account_id) == Decimal("7.65")


async def test_a_redelivered_payment_allocates_nothing_twice(db: BillingDb) -> None:
    account_id = await two_bills(db)
    p = payment(account_id, "5.00")
    first = recorded(p)
    await deliver(db, "balance", first)
    await deliver(db, "balance", first.again())  # the same message: the inbox skips it
    await deliver(db, "balance", recorded(p))  # the same payment in another event: billing has it
    assert states(await db.bills(account_id))[0] == (BillStatus.PARTIALLY_PAID, Decimal("5.00"), Decimal("7.10"))
    assert await db.count(payment_allocations) == 1
    assert len(await db.events(PAID, PARTIALLY_PAID)) == 1


async def test_a_reversal_reopens_what_the_payment_paid_and_drops_its_credit(db: BillingDb) -> None:
    account_id = await two_bills(db)
    db.clock.instant = madrid(2031, 6, 16)  # bill 1 is past due, bill 2 is not
    kept = payment(account_id, "6.00")
    undone = payment(account_id, "50.00")
    await deliver(db, "balance", recorded(kept), recorded(undone))
    assert states(await db.bills(account_id)) == [
        (BillStatus.PAID, Decimal("12.10"), Decimal(0)),
        (BillStatus.PAID, Decimal("24.20"), Decimal(0)),
    ]
    assert await db.credit(account_id) == Decimal("19.7")

    reversal = reversed_(undone)
    await deliver(db, "balance", reversal)
    await deliver(db, "balance", reversal.again(), reversed_(undone))  # once only
    assert states(await db.bills(account_id)) == [
        (BillStatus.OVERDUE, Decimal("6.00"), Decimal("6.10")),  # its due date has passed
        (BillStatus.ISSUED, Decimal(0), Decimal("24.20")),
    ]
    assert await db.credit(account_id) == 0
    assert await db.count(payment_allocations) == 1
    (overdue,) = await db.events(OVERDUE)  # it went overdue on being re-opened
    assert overdue[1].bill.bill_number == "F-2031-000001"

    # A reversal that overtakes its payment: the payment then allocates nothing.
    early = payment(account_id, "100.00")
    await deliver(db, "balance", reversed_(early))
    await deliver(db, "balance", recorded(early))
    assert states(await db.bills(account_id))[1] == (BillStatus.ISSUED, Decimal(0), Decimal("24.20"))
    assert await db.credit(account_id) == 0


def allocated(event: Any) -> tuple[str, int, list[tuple[str, Decimal]], Decimal, Decimal]:
    """A PaymentAllocated as (payment, sequence, [(bill, amount)], payment amount, unallocated)."""
    return (
        event.payment_id,
        event.sequence,
        [(a.bill_id, from_money(a.amount)) for a in event.allocations],
        from_money(event.payment_amount),
        from_money(event.unallocated_amount),
    )


async def test_each_allocation_of_a_payment_is_announced_in_sequence(db: BillingDb) -> None:
    account_id = await two_bills(db)
    first, second = await db.bills(account_id)
    p = payment(account_id, "40.00")  # 12.10 on bill 1, 24.20 on bill 2, 3.70 of credit
    message_ = recorded(p)
    await deliver(db, "balance", message_)
    await deliver(db, "balance", message_.again(), recorded(p))  # redelivered: announced once
    ((subject, event),) = await db.events(ALLOCATED)
    assert subject == ALLOCATED
    assert allocated(event) == (
        p.payment_id,
        1,
        [(str(first.bill_id), Decimal("12.10")), (str(second.bill_id), Decimal("24.20"))],
        Decimal("40.00"),
        Decimal("3.70"),
    )
    assert event.account_id == str(account_id)
    assert event.payment_amount.currency_code == event.unallocated_amount.currency_code == "EUR"

    # A payment no bill takes is announced too, with nothing allocated.
    spare = payment(account_id, "1.00")
    spare.received_time.CopyFrom(to_timestamp(NOW + timedelta(minutes=1)))  # credit is taken oldest received first
    await deliver(db, "balance", recorded(spare))
    assert allocated((await db.events(ALLOCATED))[-1][1]) == (spare.payment_id, 1, [], Decimal("1.00"), Decimal("1.00"))

    # The next bill takes the credit: each payment it takes credit from announces its next allocation.
    await charge(db, account_id, "3.00", madrid(2031, 7, 1))
    await close(db, madrid(2031, 7, 15) + DELAY)  # bill 3, 3.63: 3.63 of p's 3.70
    await charge(db, account_id, "1.00", madrid(2031, 7, 20))
    await close(db, madrid(2031, 8, 15) + DELAY)  # bill 4, 1.21: p's last 0.07, then 1.00 of spare, 0.14 open
    third, fourth = (await db.bills(account_id))[2:]
    assert [allocated(e) for _, e in (await db.events(ALLOCATED))[2:]] == [
        (p.payment_id, 2, [(str(third.bill_id), Decimal("3.63"))], Decimal("40.00"), Decimal("0.07")),
        (p.payment_id, 3, [(str(fourth.bill_id), Decimal("0.07"))], Decimal("40.00"), Decimal(0)),
        (spare.payment_id, 2, [(str(fourth.bill_id), Decimal("1.00"))], Decimal("1.00"), Decimal(0)),
    ]
    assert states([third, fourth]) == [
        (BillStatus.PAID, Decimal("3.63"), Decimal(0)),
        (BillStatus.PARTIALLY_PAID, Decimal("1.07"), Decimal("0.14")),
    ]
    assert (
        await db.scalar(select(payments.c.allocation_sequence).where(payments.c.payment_id == uuid.UUID(p.payment_id)))
        == 3
    )


def note_allocated(event: Any) -> tuple[str, int, list[tuple[str, Decimal]], Decimal, Decimal]:
    """A CreditNoteAllocated as (credit note, sequence, [(bill, amount)], note total, unallocated)."""
    return (
        event.credit_note_id,
        event.sequence,
        [(a.bill_id, from_money(a.amount)) for a in event.allocations],
        from_money(event.credit_note_amount),
        from_money(event.unallocated_amount),
    )


async def credit_note(db: BillingDb, bill_id: uuid.UUID, *lines: CreditLineRequest) -> Any:
    """A credit note of the bill: the lines given, or the whole bill."""
    request = CreditNoteRequest(bill_id, not lines, list(lines), "billing error", "ops@example.com", uuid.uuid4())
    return await credit_note_use_cases.create_credit_note(db.uow(), request, POLICY.credit_note_numbering)


async def test_each_allocation_of_a_credit_note_is_announced_in_sequence(db: BillingDb) -> None:
    account_id = await two_bills(db)
    first, second = await db.bills(account_id)
    await deliver(db, "balance", recorded(payment(account_id, "5.00")))  # bill 1: 5.00 paid, 7.10 open

    # At issue, the note's bill takes what it still owes: allocation 1; the rest is account credit.
    whole = await credit_note(db, first.bill_id)  # 12.10
    assert (whole.total, whole.unallocated) == (Decimal("12.10"), Decimal("5.00"))
    (issued, (subject, at_issue)) = await db.events(NOTE_ISSUED, NOTE_ALLOCATED)
    assert (issued[0], subject) == (NOTE_ISSUED, NOTE_ALLOCATED)  # the note first, then its allocation
    assert note_allocated(at_issue) == (
        str(whole.credit_note_id),
        1,
        [(str(first.bill_id), Decimal("7.10"))],
        Decimal("12.10"),
        Decimal("5.00"),
    )
    assert at_issue.account_id == str(account_id)
    assert at_issue.credit_note_amount.currency_code == at_issue.unallocated_amount.currency_code == "EUR"

    # A note of a bill that owes nothing is announced too, with nothing allocated.
    await deliver(db, "balance", recorded(payment(account_id, "24.20")))  # bill 2 paid
    db.clock.instant += timedelta(minutes=1)  # credit is taken oldest issued first
    line = await credit_note(db, second.bill_id, CreditLineRequest(1, Decimal("4.00")))  # 4.84
    assert note_allocated((await db.events(NOTE_ALLOCATED))[-1][1]) == (
        str(line.credit_note_id),
        1,
        [],
        Decimal("4.84"),
        Decimal("4.84"),
    )

    # The next bills take the credit: each note they take credit from announces its next allocation.
    await charge(db, account_id, "3.00", madrid(2031, 7, 1))
    await close(db, madrid(2031, 7, 15) + DELAY)  # bill 3, 3.63: 3.63 of the whole note's 5.00
    await charge(db, account_id, "5.00", madrid(2031, 7, 20))
    await close(db, madrid(2031, 8, 15) + DELAY)  # bill 4, 6.05: the whole note's last 1.37, then 4.68 of the line's
    third, fourth = (await db.bills(account_id))[2:]
    assert [note_allocated(e) for _, e in (await db.events(NOTE_ALLOCATED))[2:]] == [
        (str(whole.credit_note_id), 2, [(str(third.bill_id), Decimal("3.63"))], Decimal("12.10"), Decimal("1.37")),
        (str(whole.credit_note_id), 3, [(str(fourth.bill_id), Decimal("1.37"))], Decimal("12.10"), Decimal(0)),
        (str(line.credit_note_id), 2, [(str(fourth.bill_id), Decimal("4.68"))], Decimal("4.84"), Decimal("0.16")),
    ]
    assert [(b.status, b.credit_applied, b.open_amount) for b in (third, fourth)] == [
        (BillStatus.PAID, Decimal("3.63"), Decimal(0)),
        (BillStatus.PAID, Decimal("6.05"), Decimal(0)),
    ]
    assert len(await db.events(ALLOCATED)) == 2  # the payments had no credit left: nothing more
    sequences = await db.rows(select(credit_notes.c.credit_note_id, credit_notes.c.allocation_sequence))
    assert {row.credit_note_id: row.allocation_sequence for row in sequences} == {
        whole.credit_note_id: 3,
        line.credit_note_id: 2,
    }


async def test_a_payment_whose_reversal_came_first_announces_an_empty_allocation_once(db: BillingDb) -> None:
    account_id = await two_bills(db)
    early = payment(account_id, "100.00")
    await deliver(db, "balance", reversed_(early))
    assert await db.events(ALLOCATED) == []
    await deliver(db, "balance", recorded(early))
    await deliver(db, "balance", recorded(early))  # the same payment in another event: nothing more
    ((_, event),) = await db.events(ALLOCATED)
    assert allocated(event) == (early.payment_id, 1, [], Decimal("100.00"), Decimal(0))


async def test_bills_past_due_are_marked_overdue_once(db: BillingDb) -> None:
    account_id = await two_bills(db)
    db.clock.instant = madrid(2031, 5, 20, 23, 59)  # bill 1's due date, in Madrid: not yet
    assert await db.closer().mark_overdue() == 0
    db.clock.instant = madrid(2031, 5, 21)
    await deliver(db, "balance", recorded(payment(account_id, "2.10")))
    assert await db.closer().mark_overdue() == 1
    assert await db.closer().mark_overdue() == 0
    db.clock.instant = madrid(2031, 6, 21)  # bill 2 is past due too
    assert await db.closer().mark_overdue() == 1
    assert [b.status for b in await db.bills(account_id)] == [BillStatus.OVERDUE, BillStatus.OVERDUE]
    assert [e.bill.bill_number for _, e in await db.events(OVERDUE)] == ["F-2031-000001", "F-2031-000002"]

    summary = await BillingServicer(db.uow).GetBillingSummary(
        pb.GetBillingSummaryRequest(account_id=str(account_id)), NO_CONTEXT
    )
    assert [b.overdue for b in summary.open_bills] == [True, True]
    assert from_money(summary.overdue_total) == Decimal("34.20")  # 10.00 + 24.20

    await deliver(db, "balance", recorded(payment(account_id, "10.00")))  # a paid overdue bill is PAID
    assert [b.status for b in await db.bills(account_id)] == [BillStatus.PAID, BillStatus.OVERDUE]
    assert await db.closer().mark_overdue() == 0
    assert len(await db.events(OVERDUE)) == 2


async def test_a_payment_for_an_unknown_account_is_retried(db: BillingDb) -> None:
    msg = recorded(payment(uuid.uuid4(), "1.00"))
    await process(consumer_for(subscriptions(), stream_name("balance"), db.uow, inbox_table), msg)
    assert msg.naked and not msg.acked
    assert await db.count(payments) == 0


async def test_migration_0005_goes_back_and_forth(empty_database: EmptyDatabase) -> None:
    url = await empty_database("billing")
    config = alembic_config(MIGRATIONS, url)
    await asyncio.to_thread(command.upgrade, config, "head")
    await asyncio.to_thread(command.downgrade, config, "0004")
    conn = await asyncpg.connect(plain_url(url))
    try:
        for table in ("payments", "payment_allocations"):
            assert await conn.fetchval(f"select to_regclass('{table}')") is None
        assert (
            await conn.fetchval(
                "select count(*) from information_schema.columns"
                " where table_name = 'bills' and column_name = 'paid_amount'"
            )
            == 0
        )
        await asyncio.to_thread(command.upgrade, config, "head")
        assert await conn.fetchval("select count(*) from payment_allocations") == 0
    finally:
        await conn.close()


async def test_migration_0013_goes_back_and_forth_and_counts_existing_notes_as_announced(db: BillingDb) -> None:
    account_id = await two_bills(db)
    first, _ = await db.bills(account_id)
    await deliver(db, "balance", recorded(payment(account_id, "5.00")))
    note = await credit_note(db, first.bill_id)  # 7.10 to the bill, 5.00 of credit
    await charge(db, account_id, "3.00", madrid(2031, 7, 1))
    await close(db, madrid(2031, 7, 15) + DELAY)  # takes some of the note's credit: its allocation 2
    sequence = select(credit_notes.c.allocation_sequence).where(credit_notes.c.credit_note_id == note.credit_note_id)
    assert await db.scalar(sequence) == 2
    await db.engine.dispose()  # no pooled connection in the way of the migrations
    config = alembic_config(MIGRATIONS, db.url)
    await asyncio.to_thread(command.downgrade, config, "0012")
    conn = await asyncpg.connect(plain_url(db.url))
    try:
        column = (
            "select count(*) from information_schema.columns"
            " where table_name = 'credit_notes' and column_name = 'allocation_sequence'"
        )
        assert await conn.fetchval(column) == 0
        await asyncio.to_thread(command.upgrade, config, "head")
        assert await conn.fetchval(column) == 1
    finally:
        await conn.close()
    # A note billing had before 0013 made its allocation at issue: it counts as announced (1).
    assert await db.scalar(sequence) == 1


async def test_a_note_inserted_by_a_replica_before_0013_counts_as_announced(db: BillingDb) -> None:
    """During a rolling deploy, billing replicas still on the version before migration 0013 insert
    credit notes without naming allocation_sequence (nor announcing their allocation at issue): the
    column's default counts that allocation as announced, so the next bill taking the note's credit
    announces number 2, never a number 1 the ERP gateway would take for the note's own bill."""
    account_id = await two_bills(db)
    first, _ = await db.bills(account_id)
    await deliver(db, "balance", recorded(payment(account_id, "5.00")))
    note = await credit_note(db, first.bill_id)  # 7.10 to its bill, 5.00 of credit
    async with db.engine.begin() as conn:  # what an insert that does not name the column leaves
        await conn.execute(text("UPDATE credit_notes SET allocation_sequence = DEFAULT"))
    sequence = select(credit_notes.c.allocation_sequence).where(credit_notes.c.credit_note_id == note.credit_note_id)
    assert await db.scalar(sequence) == 1
    await charge(db, account_id, "3.00", madrid(2031, 7, 1))
    await close(db, madrid(2031, 7, 15) + DELAY)  # bill 3, 3.63, all of it from the note's credit
    third = (await db.bills(account_id))[2]
    assert [note_allocated(e) for _, e in await db.events(NOTE_ALLOCATED)][1:] == [
        (str(note.credit_note_id), 2, [(str(third.bill_id), Decimal("3.63"))], Decimal("12.10"), Decimal("1.37"))
    ]


async def test_a_fresh_database_has_the_payment_tables(db: BillingDb) -> None:
    assert await db.count(payments) == await db.count(payment_allocations) == await db.count(bills) == 0
