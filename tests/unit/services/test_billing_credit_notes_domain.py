"""Credit notes, bill statements, unit prices and tier bands as plain domain rules
(docs/billing.md, "What a bill says", "Credit notes")."""

from __future__ import annotations

import uuid
from datetime import UTC, date, datetime
from decimal import Decimal

import pytest
from evolutivo.billing.v1 import events_pb2
from evolutivo_billing.adapters import events
from evolutivo_billing.domain.bills import (
    Bill,
    BillLine,
    BillStatus,
    BillTax,
    BillTrigger,
    Charge,
    LineKey,
    Period,
    Statement,
    Tier,
    line_unit_price,
    sum_tiers,
)
from evolutivo_billing.domain.credit_notes import (
    Credited,
    CreditLineRequest,
    CreditNote,
    CreditNoteAllocated,
    CreditNoteAllocations,
)
from evolutivo_billing.domain.payments import Allocation, InvalidAllocation
from evolutivo_runtime.errors import FailedPrecondition, InvalidArgument
from evolutivo_runtime.money import from_money
from hypothesis import given
from hypothesis import strategies as st

NOW = datetime(2031, 6, 15, 10, tzinfo=UTC)
TODAY = date(2031, 6, 15)


def line(number: int, amount: str, tax_code: str = "standard") -> BillLine:
    key = LineKey(date(2031, 5, 15), date(2031, 6, 15), "api_pro", f"charge_{number}", tax_code)
    return BillLine(number, key, Decimal(1), Decimal(amount), (), 1)


def bill(*lines: BillLine, rates: dict[str, str] | None = None, paid: str = "0") -> Bill:
    rates = rates or {"standard": "0.21"}
    taxable: dict[str, Decimal] = {}
    for item in lines:
        taxable[item.tax_code] = taxable.get(item.tax_code, Decimal(0)) + item.amount
    taxes = [
        BillTax(
            code, Decimal(rates[code]), base, (base * Decimal(rates[code])).quantize(Decimal("0.01"), "ROUND_HALF_UP")
        )
        for code, base in sorted(taxable.items())
    ]
    subtotal = sum((item.amount for item in lines), Decimal(0))
    tax_total = sum((t.tax_amount for t in taxes), Decimal(0))
    return Bill(
        bill_id=uuid.uuid4(),
        bill_unit_id=uuid.uuid4(),
        account_id=uuid.uuid4(),
        bill_cycle_id=uuid.uuid4(),
        currency_code="EUR",
        period=Period(date(2031, 5, 15), date(2031, 6, 15)),
        issue_date=TODAY,
        due_date=date(2031, 6, 29),
        lines=list(lines),
        taxes=taxes,
        subtotal=subtotal,
        tax_total=tax_total,
        total=subtotal + tax_total,
        create_time=NOW,
        status=BillStatus.PARTIALLY_PAID if Decimal(paid) else BillStatus.ISSUED,
        paid_amount=Decimal(paid),
    )


def note(target: Bill, *lines: CreditLineRequest, whole: bool = False, credited: Credited | None = None) -> CreditNote:
    return CreditNote.for_bill(
        target,
        whole_bill=whole,
        requested=list(lines),
        reason="wrong rate",
        actor="ops",
        request_id=uuid.uuid4(),
        credited=credited or Credited(),
        today=TODAY,
        now=NOW,
    )


def test_a_partial_credit_is_taxed_at_the_bills_rate() -> None:
    target = bill(line(1, "10.00"), line(2, "5.00", "exempt"), rates={"standard": "0.21", "exempt": "0"})
    credit = note(target, CreditLineRequest(2, Decimal("5.00")), CreditLineRequest(1, Decimal("2.50")))
    assert [(c.line_number, c.bill_line_number, c.amount) for c in credit.lines] == [
        (1, 1, Decimal("2.50")),
        (2, 2, Decimal("5.00")),
    ]
    # 2.50 x 0.21 = 0.525 -> 0.53; exempt: 0.
    assert (credit.subtotal, credit.tax_total, credit.total, credit.voids_bill) == (
        Decimal("7.50"),
        Decimal("0.53"),
        Decimal("8.03"),
        False,
    )


def test_refusals_name_the_field() -> None:
    target = bill(line(1, "10.00"))
    cases = [
        ((CreditLineRequest(1, Decimal("10.01")),), "lines[0].amount"),
        ((CreditLineRequest(1, Decimal("0")),), "lines[0].amount"),
        ((CreditLineRequest(1, Decimal("0.001")),), "lines[0].amount"),
        ((CreditLineRequest(1, Decimal("1"), "USD"),), "lines[0].amount.currency_code"),
        ((CreditLineRequest(9, Decimal("1")),), "lines[0].bill_line_number"),
        ((CreditLineRequest(1, Decimal("1")), CreditLineRequest(1, Decimal("1"))), "lines[1].bill_line_number"),
        ((), "lines"),
    ]
    for lines, field in cases:
        with pytest.raises(InvalidArgument) as refused:
            note(target, *lines)
        assert refused.value.field == field
    with pytest.raises(InvalidArgument) as both:
        note(target, CreditLineRequest(1), whole=True)
    assert both.value.field == "lines"


def test_only_issued_bills_are_credited() -> None:
    for status in (BillStatus.DRAFT, BillStatus.VOID):
        target = bill(line(1, "10.00"))
        target.status = status
        with pytest.raises(FailedPrecondition):
            note(target, whole=True)


def test_earlier_credit_notes_limit_what_is_left() -> None:
    target = bill(line(1, "10.00"))
    credited = Credited({1: Decimal("7.00")}, {"standard": Decimal("7.00")})
    with pytest.raises(InvalidArgument):
        note(target, CreditLineRequest(1, Decimal("3.01")), credited=credited)
    rest = note(target, CreditLineRequest(1), credited=credited)
    # Cumulative tax: round(10 x 0.21) - round(7 x 0.21) = 2.10 - 1.47.
    assert (rest.subtotal, rest.tax_total) == (Decimal("3.00"), Decimal("0.63"))


def test_a_full_credit_of_an_unpaid_bill_voids_it_a_paid_one_becomes_credit() -> None:
    unpaid = bill(line(1, "10.00"), line(2, "0.05"))
    full = note(unpaid, whole=True)
    assert (full.total, full.voids_bill) == (unpaid.total, True)
    assert full.allocate_to(unpaid) == unpaid.total
    assert (unpaid.status, unpaid.open_amount, full.unallocated) == (BillStatus.VOID, Decimal(0), Decimal(0))

    part_paid = bill(line(1, "10.00"), paid="5.00")
    refund = note(part_paid, whole=True)
    assert refund.voids_bill is False
    assert refund.allocate_to(part_paid) == Decimal("7.10")
    assert (part_paid.status, part_paid.credited_amount, refund.unallocated) == (
        BillStatus.PAID,
        Decimal("7.10"),
        Decimal("5.00"),
    )


def test_a_notes_allocation_at_issue_is_announced_as_its_first_and_later_ones_follow() -> None:
    part_paid = bill(line(1, "10.00"), paid="5.00")
    refund = note(part_paid, whole=True)
    refund.allocate_to(part_paid)
    (at_issue,) = refund.events  # not numbered here: no CreditNoteIssued
    assert at_issue == CreditNoteAllocated(
        refund.credit_note_id,
        refund.account_id,
        "EUR",
        1,
        (Allocation(part_paid.bill_id, Decimal("7.10")),),
        Decimal("12.10"),
        Decimal("5.00"),
    )
    # A note of a bill that owes nothing is all account credit: its first allocation gives nothing.
    paid = bill(line(1, "10.00"), paid="12.10")
    credit = note(paid, CreditLineRequest(1, Decimal("4.00")))
    assert credit.allocate_to(paid) == 0
    assert credit.events[-1] == CreditNoteAllocated(
        credit.credit_note_id, credit.account_id, "EUR", 1, (), Decimal("4.84"), Decimal("4.84")
    )

    later = CreditNoteAllocations(refund.credit_note_id, refund.account_id, "EUR", refund.total)
    bill_id = uuid.uuid4()
    second = later.allocated(2, [Allocation(bill_id, Decimal("3.63"))], Decimal("1.37"))
    assert later.events == [second]
    subject, message = events.encode(second)
    assert subject == "evolutivo.billing.v1.credit_note.allocated"
    assert isinstance(message, events_pb2.CreditNoteAllocated)
    assert (message.credit_note_id, message.account_id, message.sequence) == (
        str(refund.credit_note_id),
        str(refund.account_id),
        2,
    )
    assert [(a.bill_id, from_money(a.amount)) for a in message.allocations] == [(str(bill_id), Decimal("3.63"))]
    assert (from_money(message.credit_note_amount), from_money(message.unallocated_amount)) == (
        Decimal("12.10"),
        Decimal("1.37"),
    )
    assert message.unallocated_amount.currency_code == "EUR"
    with pytest.raises(InvalidAllocation, match=r"exceed its amount 12\.10"):  # more than the note
        later.allocated(3, [Allocation(bill_id, Decimal("12.00"))], Decimal("1.37"))
    assert later.events == [second]


@given(st.lists(st.integers(min_value=1, max_value=99_999), min_size=1, max_size=6), st.data())
def test_credit_notes_of_every_line_in_pieces_add_up_to_the_bill(cents: list[int], data: st.DataObject) -> None:
    """However a bill is credited in pieces, the notes never exceed it and crediting all of it
    gives back its total to the cent."""
    target = bill(*(line(i, str(Decimal(c) / 100)) for i, c in enumerate(cents, start=1)))
    credited_lines: dict[int, Decimal] = {}
    taxable = Decimal(0)
    total = Decimal(0)
    for number, amount in ((bl.line_number, bl.amount) for bl in target.lines):
        first = Decimal(data.draw(st.integers(min_value=1, max_value=int(amount * 100)))) / 100
        for piece in (first, amount - first):
            if piece <= 0:
                continue
            credit = note(
                target,
                CreditLineRequest(number, piece),
                credited=Credited(dict(credited_lines), {"standard": taxable}),
            )
            credited_lines[number] = credited_lines.get(number, Decimal(0)) + piece
            taxable += piece
            total += credit.total
            assert total <= target.total
    assert total == target.total


def test_the_statement_adds_up() -> None:
    target = bill(line(1, "10.00"))
    target.statement = Statement(Decimal("20.00"), Decimal("30.00"), Decimal("5.00"))
    target.credit_applied = Decimal("2.00")
    assert target.amount_due == Decimal("20.00") + Decimal("12.10") - Decimal("2.00")
    assert target.trigger is BillTrigger.CYCLE


def charge(quantity: str, unrounded: str | None, *tiers: Tier) -> Charge:
    return Charge(
        uuid.uuid4(),
        uuid.uuid4(),
        "usage",
        "evt",
        "api_pro",
        1,
        "api_calls",
        "standard",
        Decimal(quantity),
        Decimal(unrounded or "0").quantize(Decimal("0.01")),
        "EUR",
        NOW,
        None,
        unrounded_amount=Decimal(unrounded) if unrounded is not None else None,
        tiers=tiers,
    )


def test_a_line_has_a_unit_price_only_when_all_its_charges_share_one() -> None:
    assert line_unit_price([charge("3", "0.30"), charge("7", "0.7")]) == Decimal("0.1")
    assert line_unit_price([charge("3", "0.30"), charge("1", "0.2")]) is None
    assert line_unit_price([charge("3", "1")]) is None, "1/3 has no exact price"
    assert line_unit_price([charge("3", None)]) is None
    one_band = Tier(0, Decimal(5), Decimal("0.2"), Decimal(0), Decimal(1))
    assert line_unit_price([charge("5", "1", one_band)]) == Decimal("0.2")
    with_fee = Tier(0, Decimal(5), Decimal("0.2"), Decimal(2), Decimal(3))
    assert line_unit_price([charge("5", "3", with_fee)]) is None


def test_tier_bands_are_summed_per_band() -> None:
    low = Tier(0, Decimal(10), Decimal(1), Decimal(0), Decimal(10))
    high = Tier(1, Decimal(4), Decimal("0.5"), Decimal(0), Decimal(2))
    more_high = Tier(1, Decimal(6), Decimal("0.5"), Decimal(0), Decimal(3))
    assert sum_tiers([charge("14", "12", low, high), charge("6", "3", more_high)]) == (
        low,
        Tier(1, Decimal(10), Decimal("0.5"), Decimal(0), Decimal(5)),
    )
