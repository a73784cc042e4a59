"""The lifecycle suite's own arithmetic (tests/e2e/test_lifecycle.py): every figure the suite expects
is computed here from the catalog's prices and the documented rules, in Decimal, independently of
the services — the cycle calendar in the account's time zone, cumulative rounding of metered usage,
day proration of recurring fees, tax per tax code, the bill statement and the allocation of
payments (oldest due date first)."""

from __future__ import annotations

import calendar
from collections import defaultdict
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from decimal import ROUND_HALF_UP, Decimal
from zoneinfo import ZoneInfo

CENT = Decimal("0.01")
ZERO = Decimal(0)


def cents(amount: Decimal) -> Decimal:
    """EUR's minor unit, halves away from zero: the one rounding rule (docs/charging.md)."""
    return amount.quantize(CENT, rounding=ROUND_HALF_UP)


# -- calendar -------------------------------------------------------------------------------------


def local_midnight(day: date, zone: ZoneInfo) -> datetime:
    """The UTC instant a local day starts (none of the suite's zones skips a midnight)."""
    return datetime(day.year, day.month, day.day, tzinfo=zone).astimezone(UTC)


def _boundary(year: int, month: int, billing_day: int) -> date:
    """The billing day of a month, clamped to the month's last day (31 -> 28 Feb)."""
    return date(year, month, min(billing_day, calendar.monthrange(year, month)[1]))


def _next_month(day: date) -> tuple[int, int]:
    return (day.year + 1, 1) if day.month == 12 else (day.year, day.month + 1)


def monthly_cycles(first_day: date, billing_day: int) -> Iterator[tuple[date, date]]:
    """Local `[start, end)` dates of monthly cycles: the first from the day the account opened to
    the first boundary after it (a short cycle), then one month each, clamped month by month."""
    end = _boundary(first_day.year, first_day.month, billing_day)
    if end <= first_day:
        end = _boundary(*_next_month(first_day), billing_day)
    start = first_day
    while True:
        yield start, end
        start, end = end, _boundary(*_next_month(end), billing_day)


def prorated(fee: Decimal, active_from: date, cycle: tuple[date, date]) -> Decimal:
    """A recurring fee for the whole local days from `active_from` to the cycle's end."""
    start, end = cycle
    return cents(fee * (end - active_from).days / (end - start).days)


# -- usage ----------------------------------------------------------------------------------------


def graduated(tiers: Sequence[tuple[Decimal | None, Decimal]]) -> Callable[[Decimal], Decimal]:
    """The exact price of `units` under graduated tiers of (up to, unit price); None is unbounded."""

    def price(units: Decimal) -> Decimal:
        total, floor = ZERO, ZERO
        for up_to, unit_price in tiers:
            ceiling = units if up_to is None else min(units, up_to)
            if ceiling > floor:
                total += (ceiling - floor) * unit_price
            if up_to is None or units <= up_to:
                break
            floor = up_to
        return total

    return price


def per_unit(unit_price: Decimal) -> Callable[[Decimal], Decimal]:
    return lambda units: units * unit_price


@dataclass
class Meter:
    """One metered charge of one purchase in one cycle, rated as charging does: an event's charge is
    the rounded price of the cycle's usage after it less the rounded price before it; an event
    priced at zero makes no charge (its units still count). Keeps what is not billed yet."""

    price: Callable[[Decimal], Decimal]
    used: Decimal = ZERO
    unbilled_quantity: Decimal = ZERO
    unbilled_amount: Decimal = ZERO

    def rate(self, quantity: int) -> Decimal:
        before, self.used = self.used, self.used + quantity
        amount = cents(self.price(self.used)) - cents(self.price(before))
        if amount:
            self.unbilled_quantity += quantity
            self.unbilled_amount += amount
        return amount

    def bill(self) -> tuple[Decimal, Decimal]:
        """(quantity, amount) of the charges not billed yet, now billed."""
        taken = (self.unbilled_quantity, self.unbilled_amount)
        self.unbilled_quantity = self.unbilled_amount = ZERO
        return taken


# -- bills ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Line:
    offer: str
    charge: str
    tax_code: str
    quantity: Decimal
    amount: Decimal
    period: tuple[date, date]


@dataclass
class ExpectedBill:
    """A bill as the rules make it: lines ordered by (period, offer, charge, tax code), tax per tax
    code on the sum of its lines, rounded half up; the statement is filled in by `Book.issue`."""

    lines: list[Line]
    rates: Mapping[str, Decimal]
    issue_date: date
    due_date: date
    previous_balance: Decimal = ZERO
    payments_received: Decimal = ZERO
    paid: Decimal = ZERO

    def __post_init__(self) -> None:
        self.lines = sorted(self.lines, key=lambda x: (x.period, x.offer, x.charge, x.tax_code))

    @property
    def subtotal(self) -> Decimal:
        return sum((line.amount for line in self.lines), ZERO)

    @property
    def taxes(self) -> dict[str, tuple[Decimal, Decimal]]:
        """tax code -> (taxable amount, tax)."""
        taxable: dict[str, Decimal] = defaultdict(Decimal)
        for line in self.lines:
            taxable[line.tax_code] += line.amount
        return {code: (base, cents(base * self.rates[code])) for code, base in sorted(taxable.items())}

    @property
    def tax_total(self) -> Decimal:
        return sum((tax for _, tax in self.taxes.values()), ZERO)

    @property
    def total(self) -> Decimal:
        return self.subtotal + self.tax_total

    @property
    def amount_due(self) -> Decimal:
        return self.previous_balance + self.total

    @property
    def open_amount(self) -> Decimal:
        return self.total - self.paid


@dataclass
class Book:
    """One account as billing and balance see it: its bills in issue order, the payments received
    since its last bill, and what it was charged but not billed yet."""

    bills: list[ExpectedBill] = field(default_factory=list)
    payments: list[Decimal] = field(default_factory=list)
    payments_since_bill: Decimal = ZERO

    def issue(self, bill: ExpectedBill) -> ExpectedBill:
        bill.previous_balance = sum((b.open_amount for b in self.bills), ZERO)
        bill.payments_received, self.payments_since_bill = self.payments_since_bill, ZERO
        self.bills.append(bill)
        return bill

    def pay(self, amount: Decimal) -> None:
        """Allocated to the open bills, oldest due date first (then issue date, then number)."""
        self.payments.append(amount)
        self.payments_since_bill += amount
        left = amount
        for bill in sorted(self.bills, key=lambda b: (b.due_date, b.issue_date)):
            part = min(left, bill.open_amount)
            bill.paid += part
            left -= part
        assert left == 0, "the suite pays no more than is billed"

    def balance(self, unbilled: Decimal) -> Decimal:
        """Balance's total: everything billed (charges, late fees, taxes) and not billed yet, less
        the payments."""
        return sum((b.total for b in self.bills), ZERO) + unbilled - sum(self.payments, ZERO)


def day_after(day: date, days: int) -> date:
    return day + timedelta(days=days)
