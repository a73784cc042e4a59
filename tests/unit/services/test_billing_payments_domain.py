"""Payment allocation (oldest due first, never more than a bill owes nor than the payment) and the
bill's paid / partially paid / overdue states."""

from __future__ import annotations

import uuid
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal

import pytest
from evolutivo.balance.v1 import events_pb2 as balance_events
from evolutivo.billing.v1 import bill_pb2, events_pb2
from evolutivo_billing.adapters import events
from evolutivo_billing.domain.bills import (
    Bill,
    BillIssued,
    BillNumber,
    BillOverdue,
    BillPaid,
    BillPartiallyPaid,
    BillStatus,
    InvalidBill,
    Period,
)
from evolutivo_billing.domain.payments import (
    Allocation,
    InvalidAllocation,
    InvalidPayment,
    Owed,
    PaymentAllocated,
    PaymentAllocations,
    allocate,
)
from evolutivo_billing.entrypoints.app import definition
from evolutivo_billing.entrypoints.consumers import subscriptions
from evolutivo_runtime.money import from_money
from hypothesis import given
from hypothesis import strategies as st

NOW = datetime(2031, 6, 1, 10, tzinfo=UTC)


def owed(due: date, amount: str, number: str = "") -> Owed:
    return Owed(uuid.uuid4(), due, due - timedelta(days=30), number, Decimal(amount))


def test_allocates_oldest_due_first_and_keeps_the_rest_as_credit() -> None:
    late = owed(date(2031, 5, 20), "30.00", "F-2")
    early = owed(date(2031, 4, 20), "50.00", "F-1")
    allocations, credit = allocate(Decimal("60.00"), [late, early])
    paid = [(a.bill_id, a.amount) for a in allocations]
    assert paid == [(early.bill_id, Decimal("50.00")), (late.bill_id, Decimal(10))]
    assert credit == 0
    allocations, credit = allocate(Decimal("100.00"), [late, early])
    assert [a.amount for a in allocations] == [Decimal("50.00"), Decimal("30.00")]
    assert credit == Decimal("20.00")


def test_no_open_bill_keeps_it_all_as_credit_and_bills_owing_nothing_take_nothing() -> None:
    assert allocate(Decimal("5"), []) == ([], Decimal("5"))
    allocations, credit = allocate(Decimal("5"), [owed(date(2031, 1, 1), "0")])
    assert (allocations, credit) == ([], Decimal("5"))
    with pytest.raises(InvalidPayment):
        allocate(Decimal("-1"), [])


def test_same_due_date_orders_by_issue_then_number() -> None:
    due = date(2031, 5, 1)
    second = Owed(uuid.uuid4(), due, date(2031, 4, 1), "F-2", Decimal("10"))
    first = Owed(uuid.uuid4(), due, date(2031, 4, 1), "F-1", Decimal("10"))
    allocations, _ = allocate(Decimal("15"), [second, first])
    assert [(a.bill_id, a.amount) for a in allocations] == [(first.bill_id, Decimal(10)), (second.bill_id, Decimal(5))]


_cents = st.integers(min_value=0, max_value=10_000_000).map(lambda c: Decimal(c).scaleb(-2))


@given(
    payment=_cents,
    bills=st.lists(st.tuples(st.dates(min_value=date(2030, 1, 1), max_value=date(2032, 1, 1)), _cents), max_size=12),
)
def test_allocations_never_exceed_the_payment_nor_a_bill_and_add_up(
    payment: Decimal, bills: list[tuple[date, Decimal]]
) -> None:
    open_bills = [Owed(uuid.uuid4(), due, due, "", amount) for due, amount in bills]
    by_id = {b.bill_id: b for b in open_bills}
    allocations, credit = allocate(payment, open_bills)
    assert all(0 < a.amount <= by_id[a.bill_id].open_amount for a in allocations)
    assert len({a.bill_id for a in allocations}) == len(allocations)
    assert credit >= 0
    assert sum((a.amount for a in allocations), Decimal(0)) + credit == payment
    # Oldest due first: a bill is only paid once every bill due before it is paid in full.
    paid = {a.bill_id: a.amount for a in allocations}
    for bill in open_bills:
        if paid.get(bill.bill_id, 0) < bill.open_amount:
            assert all(
                paid.get(o.bill_id, 0) == 0 for o in open_bills if o.due_date > bill.due_date and o.open_amount > 0
            )
    if credit > 0:
        assert all(paid.get(b.bill_id, 0) == b.open_amount for b in open_bills)


def bill(total: str = "100.00", due: date = date(2031, 6, 10), status: BillStatus = BillStatus.ISSUED) -> Bill:
    amount = Decimal(total)
    return Bill(
        bill_id=uuid.uuid4(),
        bill_unit_id=uuid.uuid4(),
        account_id=uuid.uuid4(),
        bill_cycle_id=uuid.uuid4(),
        currency_code="EUR",
        period=Period(date(2031, 5, 1), date(2031, 6, 1)),
        issue_date=date(2031, 6, 1),
        due_date=due,
        lines=[],
        taxes=[],
        subtotal=amount,
        tax_total=Decimal(0),
        total=amount,
        create_time=NOW,
        status=status,
        number=BillNumber("F-2031-000001", "F-2031", 1),
        issue_time=NOW,
    )


def status(b: Bill) -> BillStatus:
    """The bill's status, read afresh (not narrowed by earlier asserts)."""
    return b.status


def test_a_part_payment_then_the_rest_pay_the_bill() -> None:
    b = bill()
    b.pay(Decimal("40.00"))
    assert (b.status, b.paid_amount, b.open_amount) == (BillStatus.PARTIALLY_PAID, Decimal("40.00"), Decimal("60.00"))
    b.pay(Decimal("60.00"))
    assert (b.status, b.open_amount) == (BillStatus.PAID, Decimal(0))
    assert [type(e) for e in b.events] == [BillPartiallyPaid, BillPaid]
    with pytest.raises(InvalidBill):
        b.pay(Decimal("1"))


def test_a_bill_never_takes_more_than_it_owes() -> None:
    with pytest.raises(InvalidBill):
        bill().pay(Decimal("100.01"))
    with pytest.raises(InvalidBill):
        bill(status=BillStatus.DRAFT).pay(Decimal("1"))


def test_overdue_once_then_paid_then_reopened_overdue_without_a_second_event() -> None:
    b = bill()
    assert not b.mark_overdue(date(2031, 6, 10), NOW)  # due today: not yet
    assert b.mark_overdue(date(2031, 6, 11), NOW)
    assert b.status is BillStatus.OVERDUE and b.overdue_time == NOW
    assert not b.mark_overdue(date(2031, 6, 12), NOW)  # once
    b.pay(Decimal("30"))
    assert b.status is BillStatus.OVERDUE  # partly paid, still overdue
    b.pay(Decimal("70"))
    assert status(b) is BillStatus.PAID  # a paid overdue bill is PAID
    b.unpay(Decimal("70"), date(2031, 6, 12), NOW)
    assert (status(b), b.open_amount) == (BillStatus.OVERDUE, Decimal("70"))
    assert [type(e) for e in b.events] == [BillOverdue, BillPartiallyPaid, BillPaid]


def test_a_reversal_reopens_as_the_due_date_says() -> None:
    b = bill()
    b.pay(Decimal("100"))
    b.unpay(Decimal("60"), date(2031, 6, 1), NOW)
    assert b.status is BillStatus.PARTIALLY_PAID
    b.unpay(Decimal("40"), date(2031, 6, 1), NOW)
    assert (status(b), b.paid_amount) == (BillStatus.ISSUED, Decimal(0))
    with pytest.raises(InvalidBill):
        b.unpay(Decimal("1"), date(2031, 6, 1), NOW)
    b.pay(Decimal("100"))
    b.unpay(Decimal("100"), date(2031, 7, 1), NOW)
    assert status(b) is BillStatus.OVERDUE and isinstance(b.events[-1], BillOverdue)


@pytest.mark.parametrize(
    ("event_type", "subject", "message_type"),
    [
        (BillPaid, "evolutivo.billing.v1.bill.paid", events_pb2.BillPaid),
        (BillPartiallyPaid, "evolutivo.billing.v1.bill.partially_paid", events_pb2.BillPartiallyPaid),
        (BillOverdue, "evolutivo.billing.v1.bill.overdue", events_pb2.BillOverdue),
    ],
)
def test_payment_events_carry_the_bill_with_what_is_paid_and_open(
    event_type: type[BillPaid], subject: str, message_type: type[events_pb2.BillPaid]
) -> None:
    b = bill()
    b.pay(Decimal("25.50"))
    encoded_subject, message = events.encode(event_type(b))
    assert encoded_subject == subject
    assert isinstance(message, message_type)
    assert message.bill.status == bill_pb2.BILL_STATUS_PARTIALLY_PAID
    assert from_money(message.bill.paid_amount) == Decimal("25.50")
    assert from_money(message.bill.open_amount) == Decimal("74.50")
    assert isinstance(BillIssued(b), BillIssued)


def test_consumes_payments_from_balance_with_its_own_durable() -> None:
    sub = subscriptions()[2]
    assert (sub.durable, sub.stream, sub.subjects) == (
        "billing",
        "EVOLUTIVO_BALANCE",
        ["evolutivo.balance.v1.payment.recorded", "evolutivo.balance.v1.payment.reversed"],
    )
    assert sub.handlers["evolutivo.balance.v1.PaymentRecorded"].message_type is balance_events.PaymentRecorded
    assert sub.handlers["evolutivo.balance.v1.PaymentReversed"].message_type is balance_events.PaymentReversed
    assert definition().name == "billing"


def test_a_payments_allocations_are_announced_and_encoded_for_its_subject() -> None:
    payment_id, account_id, bill_id = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
    payment = PaymentAllocations(payment_id, account_id, "EUR", Decimal("40.00"))
    first = payment.allocated(1, [Allocation(bill_id, Decimal("36.30"))], Decimal("3.70"))
    none = payment.allocated(2, [], Decimal("3.70"))
    assert payment.events == [first, none]
    assert first == PaymentAllocated(
        payment_id, account_id, "EUR", 1, (Allocation(bill_id, Decimal("36.30")),), Decimal("40.00"), Decimal("3.70")
    )
    subject, message = events.encode(first)
    assert subject == "evolutivo.billing.v1.payment.allocated"
    assert isinstance(message, events_pb2.PaymentAllocated)
    assert (message.payment_id, message.account_id, message.sequence) == (str(payment_id), str(account_id), 1)
    assert [(a.bill_id, from_money(a.amount)) for a in message.allocations] == [(str(bill_id), Decimal("36.30"))]
    assert (from_money(message.payment_amount), from_money(message.unallocated_amount)) == (
        Decimal("40.00"),
        Decimal("3.70"),
    )
    assert message.unallocated_amount.currency_code == "EUR"


@pytest.mark.parametrize(
    ("sequence", "amounts", "unallocated"),
    [
        (0, ["1.00"], "0"),  # numbered from 1
        (1, ["0"], "1.00"),  # a bill gets more than zero
        (1, ["30.00", "20.00"], "0"),  # more than the payment
        (1, ["1.00"], "-1.00"),  # negative credit
    ],
)
def test_an_impossible_allocation_is_refused(sequence: int, amounts: list[str], unallocated: str) -> None:
    payment = PaymentAllocations(uuid.uuid4(), uuid.uuid4(), "EUR", Decimal("40.00"))
    with pytest.raises(InvalidAllocation, match=str(payment.payment_id)):
        payment.allocated(sequence, [Allocation(uuid.uuid4(), Decimal(a)) for a in amounts], Decimal(unallocated))
    assert payment.events == []
