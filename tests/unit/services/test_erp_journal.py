"""General-ledger postings and journals: every event balances on its own, so every journal does."""

from __future__ import annotations

import csv
import io
import json
from decimal import Decimal

import pytest
from evolutivo_erp_gateway.domain import journal as gl
from hypothesis import given
from hypothesis import strategies as st

CENT = Decimal("0.01")
amounts = st.integers(min_value=-50_000, max_value=500_000).map(lambda cents: Decimal(cents) * CENT)
positive = st.integers(min_value=1, max_value=500_000).map(lambda cents: Decimal(cents) * CENT)
offers = st.sampled_from(["MOBILE", "FIBER", "TV", "ROAMING"])
lines = st.lists(st.tuples(offers, amounts), min_size=1, max_size=8)
rates = st.sampled_from([Decimal("0"), Decimal("0.10"), Decimal("0.21")])


def taxed(bill_lines: list[tuple[str, Decimal]], rate: Decimal) -> tuple[Decimal, Decimal]:
    subtotal = sum((amount for _, amount in bill_lines), Decimal(0))
    tax = (subtotal * rate).quantize(CENT)
    return tax, subtotal + tax


events = st.one_of(
    st.tuples(st.just("bill"), lines, rates),
    st.tuples(st.just("credit_note"), lines, rates),
    st.tuples(st.just("payment"), positive),
    st.tuples(st.just("reversal"), positive),
    st.tuples(st.just("write_off"), positive),
)


def postings_of(event: tuple[object, ...]) -> list[gl.Posting]:
    kind = event[0]
    if kind in ("bill", "credit_note"):
        bill_lines, rate = event[1], event[2]
        assert isinstance(bill_lines, list) and isinstance(rate, Decimal)
        tax, total = taxed(bill_lines, rate)
        make = gl.bill_postings if kind == "bill" else gl.credit_note_postings
        return make(bill_lines, tax, total)
    amount = event[1]
    assert isinstance(amount, Decimal)
    return {
        "payment": gl.payment_postings,
        "reversal": gl.payment_reversal_postings,
        "write_off": gl.write_off_postings,
    }[str(kind)](amount)


@given(st.lists(events, max_size=30))
def test_any_journal_balances_debits_equal_credits(evts: list[tuple[object, ...]]) -> None:
    postings = [p for e in evts for p in postings_of(e)]
    journal = gl.journal("EUR", postings, {"receivable": "430", "revenue": "700", "revenue:TV": "705"})
    assert journal.debit_total == journal.credit_total
    for line in journal.lines:
        # Each account on one side only, never both, never a zero line.
        assert (line.debit > 0) != (line.credit > 0)
        assert min(line.debit, line.credit) == 0


@given(lines, rates)
def test_a_bill_owes_its_total_earns_its_lines_per_offer_and_owes_its_tax(
    bill_lines: list[tuple[str, Decimal]], rate: Decimal
) -> None:
    tax, total = taxed(bill_lines, rate)
    postings = gl.bill_postings(bill_lines, tax, total)
    by_key = {(p.role, p.charge_offer_code): p.amount for p in postings}
    assert by_key.get(("receivable", ""), Decimal(0)) == total
    assert by_key.get(("tax", ""), Decimal(0)) == -tax
    for offer in {o for o, _ in bill_lines}:
        expected = sum((a for o, a in bill_lines if o == offer), Decimal(0))
        assert by_key.get(("revenue", offer), Decimal(0)) == -expected


def test_a_bill_whose_total_is_not_its_parts_is_refused() -> None:
    with pytest.raises(gl.UnbalancedPostings):
        gl.bill_postings([("MOBILE", Decimal("10.00"))], Decimal("2.10"), Decimal("12.11"))


def test_a_credit_note_reverses_a_bill() -> None:
    bill = gl.bill_postings([("MOBILE", Decimal("10.00"))], Decimal("2.10"), Decimal("12.10"))
    note = gl.credit_note_postings([("MOBILE", Decimal("10.00"))], Decimal("2.10"), Decimal("12.10"))
    assert gl.journal("EUR", bill + note, {}).lines == []


def test_journal_lines_name_the_mapped_accounts_and_revenue_per_offer() -> None:
    postings = gl.bill_postings(
        [("MOBILE", Decimal("10.00")), ("TV", Decimal("5.00"))], Decimal("3.15"), Decimal("18.15")
    ) + gl.payment_postings(Decimal("18.15"))
    accounts = {"receivable": "430", "revenue": "700", "revenue:TV": "705", "tax": "477", "cash": "572"}
    journal = gl.journal("EUR", postings, accounts)
    assert [(x.role, x.charge_offer_code, x.account, x.debit, x.credit) for x in journal.lines] == [
        ("cash", "", "572", Decimal("18.15"), Decimal(0)),
        ("revenue", "MOBILE", "700", Decimal(0), Decimal("10.00")),
        ("revenue", "TV", "705", Decimal(0), Decimal("5.00")),
        ("tax", "", "477", Decimal(0), Decimal("3.15")),
    ]
    rows = list(csv.reader(io.StringIO(journal.to_csv())))
    assert rows[0] == ["role", "charge_offer_code", "account", "debit", "credit", "currency_code"]
    assert rows[1] == ["cash", "", "572", "18.15", "0", "EUR"]
    document = json.loads(journal.to_json())
    assert document["debit_total"] == document["credit_total"] == "18.15"
    assert len(document["lines"]) == 4
