"""Use cases of payments: balance's payments allocated to the account's open bills (oldest due
first), the remainder kept as account credit and applied to the next bills issued, reversals
re-opening what a payment paid, and the overdue marker (docs/billing.md, "Payments")."""

from __future__ import annotations

import logging
from datetime import date, datetime
from zoneinfo import ZoneInfo

from prometheus_client import Counter

from evolutivo_billing.adapters.bills_repository import ReceivedPayment
from evolutivo_billing.domain.bills import Bill, BillStatus
from evolutivo_billing.domain.credit_notes import CreditNoteAllocations
from evolutivo_billing.domain.model import BillUnit
from evolutivo_billing.domain.payments import Allocation, Owed, PaymentAllocations, allocate
from evolutivo_billing.service_layer.unit_of_work import BillingUnitOfWork

log = logging.getLogger(__name__)

BILLS_OVERDUE = Counter("evolutivo_billing_bills_overdue_total", "Bills marked overdue")


def _today(unit_time_zone: str, now: datetime) -> date:
    return now.astimezone(ZoneInfo(unit_time_zone)).date()


async def _unit(uow: BillingUnitOfWork, payment: ReceivedPayment) -> BillUnit:
    """The payment's account's bill unit, locked: a payment, a reversal and the bill run issuing
    a bill (which applies the account's credit) for one account take turns on it."""
    unit = await uow.bill_units.for_account(payment.account_id, for_update=True)
    if unit is None:
        raise LookupError(f"billing has no bill unit for account {payment.account_id}")
    if unit.currency_code != payment.currency_code:
        raise ValueError(
            f"payment {payment.payment_id} is in {payment.currency_code}, account {payment.account_id}"
            f" bills in {unit.currency_code}"
        )
    return unit


def _announced(payment: ReceivedPayment) -> PaymentAllocations:
    return PaymentAllocations(payment.payment_id, payment.account_id, payment.currency_code, payment.amount)


async def record_payment(uow: BillingUnitOfWork, payment: ReceivedPayment) -> bool:
    """On PaymentRecorded: the payment is allocated to the account's open bills (ISSUED,
    PARTIALLY_PAID, OVERDUE), oldest due date first, each up to what it owes; what is left is the
    account's credit, kept on the payment. Returns False when billing had the payment already
    (a redelivery, or its reversal came first): nothing is allocated twice.

    The allocation is announced as PaymentAllocated sequence 1, also when it gives nothing to any
    bill, and also for a payment whose reversal came first (nothing allocated, nothing left): the
    ERP gateway waits for it to book the payment as billing allocated it.

    Runs inside the consumer's transaction (the caller commits). The bills are locked in bill_id
    order."""
    unit = await _unit(uow, payment)
    now = uow.clock.now()
    if not await uow.payments.add(payment, now):
        known = await uow.payments.get(payment.payment_id)
        if known is not None and known.reversed:
            # Its reversal came first: the first PaymentRecorded announces the (empty) allocation once.
            sequence = await uow.payments.next_allocation_sequence(payment.payment_id, first_only=True)
            if sequence is not None:
                announced = _announced(known)
                announced.allocated(sequence, (), known.unallocated)
                uow.track(announced)
        return False
    open_bills = await uow.bills.open_for_update(unit.bill_unit_id)
    by_id = {b.bill_id: b for b in open_bills}
    owed = [
        Owed(b.bill_id, b.due_date, b.issue_date, b.number.number if b.number else "", b.open_amount)
        for b in open_bills
    ]
    allocations, left = allocate(payment.amount, owed)
    for allocation in allocations:
        if not await uow.payments.allocate(payment.payment_id, allocation.bill_id, allocation.amount, now):
            raise RuntimeError(f"payment {payment.payment_id} has paid on bill {allocation.bill_id} already")
        bill = by_id[allocation.bill_id]
        bill.pay(allocation.amount)
        await uow.bills.save_payment_state(bill)
        uow.track(bill)
    await uow.payments.set_unallocated(payment.payment_id, left)
    sequence = await uow.payments.next_allocation_sequence(payment.payment_id)
    assert sequence is not None
    announced = _announced(payment)
    announced.allocated(sequence, allocations, left)
    uow.track(announced)
    log.info(
        "payment allocated",
        extra={"payment_id": str(payment.payment_id), "bills": len(allocations), "credit": str(left)},
    )
    return True


async def reverse_payment(uow: BillingUnitOfWork, payment: ReceivedPayment) -> bool:
    """On PaymentReversed: the payment's allocations are removed, re-opening the bills it paid
    (ISSUED, PARTIALLY_PAID or OVERDUE as their due dates say), and its unused credit with them.
    A reversal arriving before its payment records the payment reversed, so the late
    PaymentRecorded allocates nothing. Returns False when it was reversed already.

    Runs inside the consumer's transaction (the caller commits)."""
    unit = await _unit(uow, payment)
    now = uow.clock.now()
    known = await uow.payments.get(payment.payment_id, for_update=True)
    if known is None:
        reversed_first = ReceivedPayment(
            payment.payment_id,
            payment.account_id,
            payment.currency_code,
            payment.amount,
            payment.amount * 0,
            True,
            payment.received_time,
        )
        return await uow.payments.add(reversed_first, now)
    if known.reversed:
        return False
    allocations = await uow.payments.allocations_of(payment.payment_id)
    today = _today(unit.time_zone, now)
    for bill in await uow.bills.many_for_update(allocations.keys()):
        bill.unpay(allocations[bill.bill_id], today, now)
        await uow.bills.save_payment_state(bill)
        uow.track(bill)
    await uow.payments.remove_allocations(payment.payment_id)
    await uow.payments.set_unallocated(payment.payment_id, known.amount * 0, reversed_=True)
    log.info("payment reversed", extra={"payment_id": str(payment.payment_id), "bills": len(allocations)})
    return True


async def apply_credit(uow: BillingUnitOfWork, unit: BillUnit, bill: Bill, now: datetime) -> None:
    """A bill just issued takes the account's credit, in the issuing transaction (the bill unit is
    locked by the caller): the unallocated remainders of its payments, oldest received first, then
    of its credit notes, oldest issued first. What it took is its `credit_applied`.

    Each payment whose credit the bill takes announces it as its next PaymentAllocated (sequence
    2, 3, ...), each credit note as its next CreditNoteAllocated (2, 3, ...: 1 was its allocation
    at issue), so that the ERP moves that much of the payment's or the note's credit onto the
    bill's invoice."""
    if bill.status is not BillStatus.ISSUED or bill.open_amount <= 0:
        return
    for credit in await uow.payments.credits_for_update(bill.account_id):
        if bill.open_amount <= 0:
            break
        if credit.currency_code != bill.currency_code:
            continue
        take = min(credit.unallocated, bill.open_amount)
        if not await uow.payments.allocate(credit.payment_id, bill.bill_id, take, now):
            raise RuntimeError(f"payment {credit.payment_id} has paid on bill {bill.bill_id} already")
        bill.pay(take)
        bill.credit_applied += take
        await uow.payments.set_unallocated(credit.payment_id, credit.unallocated - take)
        sequence = await uow.payments.next_allocation_sequence(credit.payment_id)
        assert sequence is not None
        announced = _announced(credit)
        announced.allocated(sequence, (Allocation(bill.bill_id, take),), credit.unallocated - take)
        uow.track(announced)
    if bill.open_amount > 0:
        for note in await uow.credit_notes.credits_for_update(bill.account_id):
            if bill.open_amount <= 0:
                break
            if note.currency_code != bill.currency_code:
                continue
            take = min(note.unallocated, bill.open_amount)
            await uow.credit_notes.allocate(note.credit_note_id, bill.bill_id, take, now)
            bill.take_credit(take)
            bill.credit_applied += take
            await uow.credit_notes.set_unallocated(note.credit_note_id, note.unallocated - take)
            sequence = await uow.credit_notes.next_allocation_sequence(note.credit_note_id)
            note_announced = CreditNoteAllocations(note.credit_note_id, bill.account_id, note.currency_code, note.total)
            note_announced.allocated(sequence, (Allocation(bill.bill_id, take),), note.unallocated - take)
            uow.track(note_announced)
    await uow.bills.save_payment_state(bill)


async def mark_overdue_bills(uow: BillingUnitOfWork, limit: int) -> int:
    """One pass of the overdue marker: claims up to `limit` ISSUED / PARTIALLY_PAID bills owing
    something whose due date has passed in their account's time zone (FOR UPDATE SKIP LOCKED:
    replicas claim different bills) and marks them OVERDUE, each publishing BillOverdue the first
    time. Time is read from the unit of work's clock. Returns how many it marked."""
    marked = 0
    async with uow:
        now = uow.clock.now()
        for bill, time_zone in await uow.bills.claim_overdue(now, limit):
            if bill.mark_overdue(_today(time_zone, now), now):
                await uow.bills.save_payment_state(bill)
                uow.track(bill)
                marked += 1
        await uow.commit()
    BILLS_OVERDUE.inc(marked)
    if marked:
        log.info("bills marked overdue", extra={"bills": marked})
    return marked
