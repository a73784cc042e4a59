"""Bills, pure: items placed in cycles, lines grouped per (period, offer, charge, tax code), taxes per
tax code rounded half up, totals that add up (hypothesis: the lines sum to the charges for any set
of charges), issue and due dates, DRAFT -> ISSUED and suppression, bill numbers and the settings."""

from __future__ import annotations

import uuid
from dataclasses import replace
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from zoneinfo import ZoneInfo

import pytest
from evolutivo_billing.domain.bills import (
    Bill,
    BillIssued,
    BillItem,
    BillNumber,
    BillStatus,
    Charge,
    InvalidBill,
    Period,
    TaxRates,
    compute_taxes,
    currency_exponent,
    group_lines,
    last_seq,
    round_money,
)
from evolutivo_billing.domain.cycles import BillCycle, BillCycleStatus, InvalidBillCycle
from evolutivo_billing.domain.model import BillingProfile, BillUnit
from evolutivo_billing.domain.numbering import InvalidNumberFormat, NumberFormat
from evolutivo_billing.settings import BillingSettings
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

MADRID = ZoneInfo("Europe/Madrid")
NOW = datetime(2031, 6, 15, 1, 0, tzinfo=UTC)
PROFILE = BillingProfile(15, payment_terms_days=30)
MAY = Period(date(2031, 5, 15), date(2031, 6, 15))
APRIL = Period(date(2031, 4, 15), date(2031, 5, 15))


def madrid(year: int, month: int, day: int, hour: int = 0) -> datetime:
    return datetime(year, month, day, hour, tzinfo=MADRID).astimezone(UTC)


def unit(currency: str = "EUR") -> BillUnit:
    return BillUnit.open(uuid.uuid4(), currency, "Europe/Madrid", PROFILE, madrid(2031, 4, 20))


def cycle_of(u: BillUnit) -> BillCycle:
    return BillCycle(
        bill_cycle_id=uuid.uuid4(),
        bill_unit_id=u.bill_unit_id,
        account_id=u.account_id,
        sequence=2,
        start_time=madrid(2031, 5, 15),
        end_time=madrid(2031, 6, 15),
        start_date=MAY.start,
        end_date=MAY.end,
        time_zone="Europe/Madrid",
    )


def charge(
    u: BillUnit,
    amount: str,
    offer: str = "api_pro",
    code: str = "api_calls",
    tax: str = "standard",
    quantity: str = "1",
    at: datetime | None = None,
    cycle_id: uuid.UUID | None = None,
    late: bool = False,
) -> Charge:
    return Charge(
        charge_id=uuid.uuid4(),
        account_id=u.account_id,
        kind="usage",
        event_id=f"e-{uuid.uuid4().hex[:8]}",
        charge_offer_code=offer,
        charge_offer_version=1,
        charge_code=code,
        tax_code=tax,
        quantity=Decimal(quantity),
        amount=Decimal(amount),
        currency_code=u.currency_code,
        event_time=at or madrid(2031, 5, 20, 10),
        bill_cycle_id=cycle_id,
        late=late,
    )


def item(u: BillUnit, c: BillCycle, ch: Charge, period: Period = MAY) -> BillItem:
    return BillItem.place(ch, u, c, period, NOW)


# Placing a charge.


def test_an_item_is_late_when_charging_says_so_or_billing_moves_it_past_its_time() -> None:
    u = unit()
    c = cycle_of(u)
    assert not item(u, c, charge(u, "1.00", cycle_id=c.bill_cycle_id)).late
    assert item(u, c, charge(u, "1.00", cycle_id=c.bill_cycle_id, late=True)).late
    # Rated into a cycle that closed (or billing does not know): moved to the open cycle.
    moved = item(u, c, charge(u, "1.00", at=madrid(2031, 5, 1), cycle_id=uuid.uuid4()), APRIL)
    assert moved.late and moved.period == APRIL
    assert moved.bill_cycle_id == c.bill_cycle_id and moved.receive_time == NOW
    # Moved, but its time is in the open cycle: not late.
    assert not item(u, c, charge(u, "1.00", cycle_id=uuid.uuid4())).late
    # Put in this cycle by charging with an earlier time (an in-arrears fee): its period says so.
    arrears = item(u, c, charge(u, "1.00", at=madrid(2031, 4, 15), cycle_id=c.bill_cycle_id), APRIL)
    assert not arrears.late and arrears.period == APRIL


def test_a_charge_in_another_currency_or_not_rounded_is_refused() -> None:
    u = unit()
    c = cycle_of(u)
    with pytest.raises(InvalidBill, match="USD"):
        item(u, c, replace(charge(u, "1.00"), currency_code="USD"))
    with pytest.raises(InvalidBill, match="minor unit"):
        item(u, c, charge(u, "0.005"))
    with pytest.raises(InvalidBill, match="not for bill unit"):
        item(u, c, replace(charge(u, "1.00"), account_id=uuid.uuid4()))
    yen = unit("JPY")
    assert item(yen, cycle_of(yen), charge(yen, "15")).charge.amount == Decimal(15)
    with pytest.raises(InvalidBill):
        item(yen, cycle_of(yen), charge(yen, "15.5"))


def test_a_day_period_is_the_events_local_day() -> None:
    # 23:30 UTC on 31 May is 1 June in Madrid.
    assert Period.of_day(datetime(2031, 5, 31, 23, 30, tzinfo=UTC), "Europe/Madrid") == Period(
        date(2031, 6, 1), date(2031, 6, 2)
    )


# Lines.


def test_lines_group_per_period_offer_charge_and_tax_code() -> None:
    u = unit()
    c = cycle_of(u)
    a1 = item(u, c, charge(u, "0.75", quantity="1500"))
    a2 = item(u, c, charge(u, "0.15", quantity="100"))
    sms = item(u, c, charge(u, "2.00", code="sms", tax="reduced", quantity="40"))
    no_code = item(u, c, charge(u, "1.10", tax=""))  # taxed as standard: joins a1 and a2
    late = item(u, c, charge(u, "0.30", quantity="200", at=madrid(2031, 5, 2)), APRIL)
    other_offer = item(u, c, charge(u, "5.00", offer="storage", code="gb"))

    lines = group_lines([a1, sms, late, a2, other_offer, no_code])
    assert [(line.line_number, line.period, line.key.charge_offer_code, line.key.charge_code) for line in lines] == [
        (1, APRIL, "api_pro", "api_calls"),
        (2, MAY, "api_pro", "api_calls"),
        (3, MAY, "api_pro", "sms"),
        (4, MAY, "storage", "gb"),
    ]
    late_line, api, sms_line, storage = lines
    assert (late_line.quantity, late_line.amount, late_line.charge_ids) == (
        Decimal(200),
        Decimal("0.30"),
        (late.charge_id,),
    )
    assert (api.tax_code, api.quantity, api.amount, api.charge_count) == ("standard", Decimal(1601), Decimal("2.00"), 3)
    assert api.charge_ids == tuple(sorted([a1.charge_id, a2.charge_id, no_code.charge_id]))
    assert (sms_line.tax_code, sms_line.amount) == ("reduced", Decimal("2.00"))
    assert storage.amount == Decimal("5.00")
    assert group_lines([]) == []


# Taxes.


def test_round_money_is_half_up_away_from_zero_at_the_minor_unit() -> None:
    assert round_money(Decimal("0.105"), 2) == Decimal("0.11")
    assert round_money(Decimal("0.104999"), 2) == Decimal("0.10")
    assert round_money(Decimal("-0.105"), 2) == Decimal("-0.11")
    assert round_money(Decimal("2.5"), 0) == Decimal(3)
    assert round_money(Decimal("0.0005"), 3) == Decimal("0.001")
    assert [currency_exponent(c) for c in ("EUR", "JPY", "BHD")] == [2, 0, 3]
    with pytest.raises(InvalidBill):
        currency_exponent("XAU")


def test_tax_is_per_code_on_the_sum_of_its_lines_not_per_line() -> None:
    u = unit()
    c = cycle_of(u)
    # Two lines of 0.10 at 25%: 0.025 each would round to 0.03 + 0.03; on their sum 0.20 it is 0.05.
    lines = group_lines([item(u, c, charge(u, "0.10", code="a")), item(u, c, charge(u, "0.10", code="b"))])
    rates = TaxRates({"standard": Decimal("0.25")})
    (tax,) = compute_taxes(lines, rates, 2)
    assert (tax.tax_code, tax.rate, tax.taxable_amount, tax.tax_amount) == (
        "standard",
        Decimal("0.25"),
        Decimal("0.20"),
        Decimal("0.05"),
    )


def test_an_unknown_tax_code_is_taxed_at_the_standard_rate_under_its_own_code() -> None:
    u = unit()
    c = cycle_of(u)
    rates = TaxRates({"standard": Decimal("0.21"), "exempt": Decimal(0)})
    lines = group_lines(
        [
            item(u, c, charge(u, "10.00", tax="exempt")),
            item(u, c, charge(u, "10.00", tax="mystery")),
            item(u, c, charge(u, "0.50", tax="")),
        ]
    )
    taxes = compute_taxes(lines, rates, 2)
    assert [(t.tax_code, t.rate, t.taxable_amount, t.tax_amount) for t in taxes] == [
        ("exempt", Decimal(0), Decimal("10.00"), Decimal("0.00")),
        ("mystery", Decimal("0.21"), Decimal("10.00"), Decimal("2.10")),
        ("standard", Decimal("0.21"), Decimal("0.50"), Decimal("0.11")),  # 0.105 rounds up
    ]
    assert not rates.knows("mystery")


def test_tax_rates_need_standard_and_sane_rates() -> None:
    with pytest.raises(InvalidBill, match="standard"):
        TaxRates({"reduced": Decimal("0.1")})
    with pytest.raises(InvalidBill):
        TaxRates({"standard": Decimal("-0.1")})
    with pytest.raises(InvalidBill):
        TaxRates({"standard": Decimal("NaN")})
    assert TaxRates().rates == {"standard": Decimal(0), "exempt": Decimal(0)}


# The bill.


def test_a_cycles_bill_adds_up_and_is_dated_from_the_cycle_end_and_payment_terms() -> None:
    u = unit()
    c = cycle_of(u)
    items = [
        item(u, c, charge(u, "0.75")),
        item(u, c, charge(u, "0.15")),
        item(u, c, charge(u, "3.00", code="sms", tax="reduced")),
        item(u, c, charge(u, "-0.40")),  # a volume credit
    ]
    rates = TaxRates({"standard": Decimal("0.21"), "reduced": Decimal("0.10")})
    bill = Bill.for_cycle(u, c, BillingProfile(15, payment_terms_days=10), items, rates, NOW)
    assert (bill.status, bill.number, bill.issue_time, bill.suppressed) == (BillStatus.DRAFT, None, None, False)
    assert (bill.bill_cycle_id, bill.account_id, bill.currency_code, bill.period) == (
        c.bill_cycle_id,
        u.account_id,
        "EUR",
        MAY,
    )
    assert (bill.issue_date, bill.due_date) == (date(2031, 6, 15), date(2031, 6, 25))
    assert [line.amount for line in bill.lines] == [Decimal("0.50"), Decimal("3.00")]
    assert [(t.tax_code, t.tax_amount) for t in bill.taxes] == [
        ("reduced", Decimal("0.30")),
        ("standard", Decimal("0.11")),
    ]
    assert (bill.subtotal, bill.tax_total, bill.total) == (Decimal("3.50"), Decimal("0.41"), Decimal("3.91"))
    assert sorted(bill.charge_ids) == sorted(i.charge_id for i in items)
    assert not bill.events


def test_a_bill_takes_only_unbilled_items_of_its_cycle() -> None:
    u = unit()
    c = cycle_of(u)
    other_cycle = replace(c, bill_cycle_id=uuid.uuid4())
    with pytest.raises(InvalidBill):
        Bill.for_cycle(u, c, PROFILE, [item(u, other_cycle, charge(u, "1.00"))], TaxRates(), NOW)
    # The cycle is billed through seq 7 (a bill now took its items up to there): item 7 is billed,
    # item 8 is not.
    billed_through = replace(c, billed_through_seq=7)
    with pytest.raises(InvalidBill):
        Bill.for_cycle(u, billed_through, PROFILE, [replace(item(u, c, charge(u, "1.00")), seq=7)], TaxRates(), NOW)
    bill = Bill.for_cycle(u, billed_through, PROFILE, [replace(item(u, c, charge(u, "1.00")), seq=8)], TaxRates(), NOW)
    assert bill.subtotal == Decimal("1.00")
    with pytest.raises(InvalidBill):
        Bill.for_cycle(unit(), c, PROFILE, [], TaxRates(), NOW)


def test_a_cycle_is_billed_through_ever_higher_stored_items_while_it_is_open() -> None:
    u = unit()
    c = cycle_of(u)
    stored = [replace(item(u, c, charge(u, "1.00")), seq=n) for n in (4, 9, 6)]
    assert last_seq(stored) == 9
    with pytest.raises(InvalidBill):
        last_seq([*stored, item(u, c, charge(u, "1.00"))])  # not stored: no seq
    with pytest.raises(InvalidBill):
        last_seq([])
    c.bill_through(9)
    assert c.billed_through_seq == 9
    with pytest.raises(InvalidBillCycle):
        c.bill_through(9)  # not past where it stands
    closed = replace(c, status=BillCycleStatus.CLOSED)
    with pytest.raises(InvalidBillCycle):
        closed.bill_through(12)  # a closed cycle's own bill took its items


def test_issuing_numbers_the_draft_once_and_records_bill_issued() -> None:
    u = unit()
    bill = Bill.for_cycle(u, cycle_of(u), PROFILE, [], TaxRates(), NOW)
    number = BillNumber("F-2031-000007", "F-2031", 7)
    bill.issue(number, NOW + timedelta(minutes=5))
    assert (bill.status, bill.number, bill.issue_time) == (BillStatus.ISSUED, number, NOW + timedelta(minutes=5))
    assert bill.events == [BillIssued(bill)]
    with pytest.raises(InvalidBill):
        bill.issue(number, NOW)
    with pytest.raises(InvalidBill):
        bill.suppress()


def test_only_a_zero_draft_is_suppressed_and_it_is_never_issued() -> None:
    u = unit()
    c = cycle_of(u)
    owing = Bill.for_cycle(u, c, PROFILE, [item(u, c, charge(u, "1.00"))], TaxRates(), NOW)
    with pytest.raises(InvalidBill, match="zero"):
        owing.suppress()
    # Charges that cancel out make a zero bill too.
    zero = Bill.for_cycle(
        u, c, PROFILE, [item(u, c, charge(u, "1.00")), item(u, c, charge(u, "-1.00"))], TaxRates(), NOW
    )
    assert zero.is_zero and len(zero.charge_ids) == 2
    zero.suppress()
    assert (zero.status, zero.suppressed, zero.events) == (BillStatus.DRAFT, True, [])
    with pytest.raises(InvalidBill):
        zero.issue(BillNumber("F-2031-000001", "F-2031", 1), NOW)


# Hypothesis: whatever the charges, the lines sum to them and the totals add up.

_AMOUNTS = st.integers(min_value=-(10**9), max_value=10**11).map(lambda cents: Decimal(cents).scaleb(-2))
_QUANTITIES = st.decimals(min_value=Decimal("0.000000000001"), max_value=Decimal(10**12), places=12)
_CHARGES = st.lists(
    st.tuples(
        _AMOUNTS,
        _QUANTITIES,
        st.sampled_from(["api_pro", "storage", "sms_pack"]),
        st.sampled_from(["calls", "gb", "fee"]),
        st.sampled_from(["standard", "reduced", "exempt", "", "unknown"]),
        st.booleans(),  # late: from the previous cycle
    ),
    max_size=60,
)
_RATES = st.fixed_dictionaries(
    {
        "standard": st.decimals(min_value=0, max_value=1, places=4),
        "reduced": st.decimals(min_value=0, max_value=1, places=4),
        "exempt": st.just(Decimal(0)),
    }
)


@settings(max_examples=300, deadline=None)
@given(_CHARGES, _RATES, st.sampled_from(["EUR", "JPY", "BHD"]))
def test_the_lines_sum_to_the_charges_and_the_totals_add_up(
    charges: list[tuple[Decimal, Decimal, str, str, str, bool]], rates: dict[str, Decimal], currency: str
) -> None:
    u = unit(currency)
    c = cycle_of(u)
    exponent = currency_exponent(currency)
    items = [
        item(
            u,
            c,
            charge(u, str(round_money(amount, exponent)), offer, code, tax, str(quantity)),
            APRIL if late else MAY,
        )
        for amount, quantity, offer, code, tax, late in charges
    ]
    bill = Bill.for_cycle(u, c, PROFILE, items, TaxRates(rates), NOW)

    assert sum((line.amount for line in bill.lines), Decimal(0)) == sum((i.charge.amount for i in items), Decimal(0))
    assert sum((line.quantity for line in bill.lines), Decimal(0)) == sum(
        (i.charge.quantity for i in items), Decimal(0)
    )
    # Every charge on exactly one line.
    assert sorted(bill.charge_ids) == sorted(i.charge_id for i in items)
    assert sum(line.charge_count for line in bill.lines) == len(items)
    assert [line.line_number for line in bill.lines] == list(range(1, len(bill.lines) + 1))
    assert len({line.key for line in bill.lines}) == len(bill.lines)
    # Totals add up, each amount at the minor unit.
    assert bill.subtotal == sum((line.amount for line in bill.lines), Decimal(0))
    assert bill.tax_total == sum((t.tax_amount for t in bill.taxes), Decimal(0))
    assert bill.total == bill.subtotal + bill.tax_total
    for tax in bill.taxes:
        assert tax.taxable_amount == sum(
            (line.amount for line in bill.lines if line.tax_code == tax.tax_code), Decimal(0)
        )
        assert tax.tax_amount == round_money(tax.taxable_amount * tax.rate, exponent)
        assert abs(tax.tax_amount - tax.taxable_amount * tax.rate) <= Decimal(1).scaleb(-exponent) / 2
    for amount in [bill.subtotal, bill.tax_total, bill.total, *(line.amount for line in bill.lines)]:
        assert round_money(amount, exponent) == amount
    assert {t.tax_code for t in bill.taxes} == {line.tax_code for line in bill.lines}


# Numbers.


def test_the_default_number_format_and_its_yearly_series() -> None:
    numbering = NumberFormat()
    assert numbering.template == "F-{year}-{seq:06d}"
    first = numbering.number(date(2031, 12, 31), 1)
    assert (first.number, first.series, first.sequence) == ("F-2031-000001", "F-2031", 1)
    assert numbering.number(date(2032, 1, 1), 42).number == "F-2032-000042"
    assert numbering.series(date(2032, 1, 1)) == "F-2032"
    assert numbering.render(date(2031, 1, 1), 1234567) == "F-2031-1234567", "wider than the padding: kept whole"
    with pytest.raises(InvalidNumberFormat):
        numbering.number(date(2031, 1, 1), 0)


@pytest.mark.parametrize(
    ("template", "number", "series"),
    [
        ("{seq:05d}/{year}", "00007/2031", "2031"),
        ("INV{year}{seq:04d}", "INV20310007", "INV2031"),
        ("{seq}", "7", ""),
        ("A-{seq:03d}", "A-007", "A"),
    ],
)
def test_configurable_formats_and_their_series(template: str, number: str, series: str) -> None:
    n = NumberFormat(template).number(date(2031, 3, 1), 7)
    assert (n.number, n.series) == (number, series)


@pytest.mark.parametrize(
    "template",
    ["F-{year}", "F-{seq}-{seq}", "F-{month}-{seq}", "F-{seq:x<}{year:%Y}", "F-{seq!r}", "F-{seq", "{seq:s}"],
)
def test_a_bad_number_format_is_refused(template: str) -> None:
    with pytest.raises(InvalidNumberFormat):
        NumberFormat(template)


# Settings.


def test_bill_settings_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    defaults = BillingSettings()
    assert defaults.tax_rates == {"standard": Decimal(0), "exempt": Decimal(0)}
    assert (defaults.number_format, defaults.suppress_zero_bills) == ("F-{year}-{seq:06d}", False)

    monkeypatch.setenv("BILLING_TAX_RATES", '{"standard": "0.21", "reduced": "0.10", "exempt": "0"}')
    monkeypatch.setenv("BILLING_NUMBER_FORMAT", "INV-{year}/{seq:05d}")
    monkeypatch.setenv("BILLING_SUPPRESS_ZERO_BILLS", "true")
    configured = BillingSettings()
    assert configured.tax_rates == {"standard": Decimal("0.21"), "reduced": Decimal("0.10"), "exempt": Decimal(0)}
    assert (configured.number_format, configured.suppress_zero_bills) == ("INV-{year}/{seq:05d}", True)


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("BILLING_TAX_RATES", '{"reduced": "0.10"}'),
        ("BILLING_TAX_RATES", '{"standard": "-1"}'),
        ("BILLING_TAX_RATES", '{"standard": "abc"}'),
        ("BILLING_NUMBER_FORMAT", "F-{year}"),
    ],
)
def test_bad_bill_settings_stop_the_service_at_start(monkeypatch: pytest.MonkeyPatch, name: str, value: str) -> None:
    monkeypatch.setenv(name, value)
    with pytest.raises(ValidationError):
        BillingSettings()
