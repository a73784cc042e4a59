"""Bill items (the charges billing receives) and bills. Plain Python: no protobuf, no SQL.

Rules (docs/billing.md, "Unbilled items" and "Bills"):
- A charge becomes one bill item, in the cycle it is billed in: the charge's own cycle while it is
  open, else the bill unit's open cycle. Its period is the cycle its event time falls in (or the
  event's local day when no cycle of the unit holds it), so a late charge keeps its own period.
- A bill's lines group its items per (period, charge offer, charge code, tax code): quantity and
  amount are the sums of the items' (already rounded) quantities and amounts, so the lines add up
  to exactly the sum of the charges.
- Taxes are computed per tax code on the sum of that code's lines, rounded ROUND_HALF_UP to the
  currency's minor unit. A charge without a tax code is taxed as "standard"; a code the rates do
  not know is taxed at the "standard" rate under its own code.
- subtotal = sum of lines, tax_total = sum of taxes, total = subtotal + tax_total.
- Issue date: the cycle end's local date; due date: issue date + the payment terms of the cycle's
  profile. A bill is created DRAFT and issued with its gapless number; a zero-amount bill can be
  suppressed instead (it stays DRAFT, with no number, and still bills its items).
"""

from __future__ import annotations

import enum
import uuid
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from decimal import ROUND_HALF_UP, Decimal, localcontext
from zoneinfo import ZoneInfo

import iso4217
from evolutivo_runtime.ids import new_uuid

from evolutivo_billing.domain.cycles import BillCycle
from evolutivo_billing.domain.model import BillingProfile, BillUnit

STANDARD = "standard"
# Enough significant digits for every sum and product of NUMERIC(38, 9) amounts to be exact.
PRECISION = 80


class InvalidBill(ValueError):
    """A bill or item that breaks its rules (a broken charge, a bill issued twice...)."""


def currency_exponent(code: str) -> int:
    """The ISO 4217 minor unit (EUR 2, JPY 0, BHD 3); InvalidBill for a code without one."""
    try:
        exponent = iso4217.Currency(code).exponent
    except ValueError:
        exponent = None
    if exponent is None:
        raise InvalidBill(f"currency {code!r} has no ISO 4217 minor unit")
    return int(exponent)


def round_money(amount: Decimal, exponent: int) -> Decimal:
    """ROUND_HALF_UP (halves away from zero) to the minor unit."""
    with localcontext() as ctx:
        ctx.prec = PRECISION
        return amount.quantize(Decimal(1).scaleb(-exponent), rounding=ROUND_HALF_UP)


def is_rounded(amount: Decimal, exponent: int) -> bool:
    return round_money(amount, exponent) == amount


@dataclass(frozen=True)
class Tier:
    """One band of tiered pricing: what it priced of a charge, or of a line's charges summed."""

    tier: int
    units: Decimal
    unit_price: Decimal
    flat_fee: Decimal
    # Exact, unrounded.
    amount: Decimal


@dataclass(frozen=True)
class Charge:
    """A charge as charging published it (RatedCharge in ChargesCreated), what billing keeps of it."""

    charge_id: uuid.UUID
    account_id: uuid.UUID
    kind: str
    event_id: str
    charge_offer_code: str
    charge_offer_version: int
    charge_code: str
    tax_code: str
    quantity: Decimal
    amount: Decimal
    currency_code: str
    event_time: datetime
    # The cycle charging rated it into; None when the charge names none.
    bill_cycle_id: uuid.UUID | None
    late: bool = False
    # As charging priced it: the exact amount before rounding (None if unknown) and the tier bands.
    unrounded_amount: Decimal | None = None
    tiers: tuple[Tier, ...] = ()

    @property
    def unit_price(self) -> Decimal | None:
        """The price of one unit, when the charge has one: its only band's (without a flat fee),
        or, untiered, its exact amount over its quantity when that divides exactly."""
        if self.tiers:
            (only, *more) = self.tiers
            return only.unit_price if not more and only.flat_fee == 0 else None
        if self.unrounded_amount is None or self.quantity == 0:
            return None
        with localcontext() as ctx:
            ctx.prec = PRECISION
            price = self.unrounded_amount / self.quantity
            # Only a price that gives back the amount exactly and fits NUMERIC(38, 9)'s scale.
            if price * self.quantity != self.unrounded_amount or price != price.quantize(Decimal("1e-9")):
                return None
            # 2.50 / 25 is 0.10: the price is shown without the amount's trailing zeros.
            return price.normalize()


@dataclass(frozen=True)
class Period:
    """Local dates [start, end) an item's event time falls in."""

    start: date
    end: date

    @classmethod
    def of_cycle(cls, cycle: BillCycle) -> Period:
        return cls(cycle.start_date, cycle.end_date)

    @classmethod
    def of_day(cls, instant: datetime, time_zone: str) -> Period:
        day = instant.astimezone(ZoneInfo(time_zone)).date()
        return cls(day, day + timedelta(days=1))


@dataclass(frozen=True)
class BillItem:
    """A charge received by billing, in the cycle it is billed in. It is unbilled while its cycle
    is open and its `seq` above the cycle's `billed_through_seq` (a bill's lines name the charges
    they sum; nothing is written to the item when it is billed)."""

    charge: Charge
    bill_unit_id: uuid.UUID
    bill_cycle_id: uuid.UUID
    period: Period
    late: bool
    receive_time: datetime
    # The order billing received it in, given when it is stored (None until then).
    seq: int | None = None

    @property
    def charge_id(self) -> uuid.UUID:
        return self.charge.charge_id

    @classmethod
    def place(cls, charge: Charge, unit: BillUnit, target: BillCycle, period: Period, now: datetime) -> BillItem:
        """The charge billed in `target` (an open cycle of `unit`), labelled with `period`. It is
        late when charging said so, or when billing moved it out of the cycle charging rated it
        into (closed, or unknown) to an open cycle that starts after its event time. (A charge
        charging itself put in a later cycle, such as an in-arrears fee, is not late: its period
        says what it is for.)"""
        if charge.account_id != unit.account_id or target.bill_unit_id != unit.bill_unit_id:
            raise InvalidBill(f"charge {charge.charge_id} is not for bill unit {unit.bill_unit_id}")
        if charge.currency_code != unit.currency_code:
            raise InvalidBill(
                f"charge {charge.charge_id} is in {charge.currency_code}, its account bills in {unit.currency_code}"
            )
        if not is_rounded(charge.amount, currency_exponent(unit.currency_code)):
            raise InvalidBill(f"charge {charge.charge_id}: amount {charge.amount} is not rounded to the minor unit")
        if charge.event_time.utcoffset() is None:
            raise InvalidBill(f"charge {charge.charge_id}: event_time must be timezone-aware")
        moved = charge.bill_cycle_id != target.bill_cycle_id
        late = charge.late or (moved and charge.event_time < target.start_time)
        return cls(charge, unit.bill_unit_id, target.bill_cycle_id, period, late, now.astimezone(UTC))


def last_seq(items: Iterable[BillItem]) -> int:
    """The highest `seq` of these stored items: what a bill of them bills their cycle through."""
    seqs = [item.seq for item in items]
    if not seqs or None in seqs:
        raise InvalidBill("a cycle is billed through stored items only")
    return max(s for s in seqs if s is not None)


def effective_tax_code(code: str) -> str:
    """The code a charge is taxed under: its own, "standard" when it has none."""
    return code or STANDARD


@dataclass(frozen=True, order=True)
class LineKey:
    period_start: date
    period_end: date
    charge_offer_code: str
    charge_code: str
    tax_code: str


@dataclass(frozen=True)
class BillLine:
    line_number: int
    key: LineKey
    quantity: Decimal
    amount: Decimal
    # The charges it sums, sorted (empty when read without them: lists, events).
    charge_ids: tuple[uuid.UUID, ...]
    charge_count: int
    # The unit price all its charges share (None when they differ or have none); without one,
    # their tier bands summed per band (informative: exact, the amount sums rounded charges).
    unit_price: Decimal | None = None
    tiers: tuple[Tier, ...] = ()

    @property
    def tax_code(self) -> str:
        return self.key.tax_code

    @property
    def period(self) -> Period:
        return Period(self.key.period_start, self.key.period_end)


def group_lines(items: Iterable[BillItem]) -> list[BillLine]:
    """One line per (period, charge offer, charge code, tax code), in that order, numbered from 1,
    each summing its items' quantities and amounts exactly and keeping their charge ids (sorted)."""
    groups: dict[LineKey, list[BillItem]] = defaultdict(list)
    for item in items:
        c = item.charge
        key = LineKey(
            item.period.start, item.period.end, c.charge_offer_code, c.charge_code, effective_tax_code(c.tax_code)
        )
        groups[key].append(item)
    lines = []
    with localcontext() as ctx:
        ctx.prec = PRECISION
        for number, key in enumerate(sorted(groups), start=1):
            members = groups[key]
            price = line_unit_price([i.charge for i in members])
            lines.append(
                BillLine(
                    number,
                    key,
                    sum((i.charge.quantity for i in members), Decimal(0)),
                    sum((i.charge.amount for i in members), Decimal(0)),
                    tuple(sorted(i.charge_id for i in members)),
                    len(members),
                    price,
                    () if price is not None else sum_tiers([i.charge for i in members]),
                )
            )
    return lines


def line_unit_price(charges: Sequence[Charge]) -> Decimal | None:
    """The unit price of a line: the one all its charges share, None if one has none or they differ."""
    prices = {c.unit_price for c in charges}
    if len(prices) != 1:
        return None
    (price,) = prices
    return price


def sum_tiers(charges: Iterable[Charge]) -> tuple[Tier, ...]:
    """The charges' tier bands summed per (band, unit price, flat fee), in band order."""
    summed: dict[tuple[int, Decimal, Decimal], tuple[Decimal, Decimal]] = {}
    with localcontext() as ctx:
        ctx.prec = PRECISION
        for charge in charges:
            for t in charge.tiers:
                key = (t.tier, t.unit_price, t.flat_fee)
                units, amount = summed.get(key, (Decimal(0), Decimal(0)))
                summed[key] = (units + t.units, amount + t.amount)
    return tuple(Tier(k[0], u, k[1], k[2], a) for k, (u, a) in sorted(summed.items()))


@dataclass(frozen=True)
class TaxRates:
    """Tax rates by tax code (BILLING_TAX_RATES); "standard" is required."""

    rates: Mapping[str, Decimal] = field(default_factory=lambda: {STANDARD: Decimal(0), "exempt": Decimal(0)})

    def __post_init__(self) -> None:
        if STANDARD not in self.rates:
            raise InvalidBill('tax rates must include "standard"')
        for code, rate in self.rates.items():
            if not rate.is_finite() or rate < 0:
                raise InvalidBill(f"tax rate of {code!r} must be a finite decimal, not negative: {rate}")

    def rate(self, code: str) -> Decimal:
        """The rate of a tax code; the standard rate for a code it does not know."""
        return self.rates.get(code, self.rates[STANDARD])

    def knows(self, code: str) -> bool:
        return code in self.rates


@dataclass(frozen=True)
class BillTax:
    tax_code: str
    rate: Decimal
    taxable_amount: Decimal
    tax_amount: Decimal


def compute_taxes(lines: Sequence[BillLine], rates: TaxRates, exponent: int) -> list[BillTax]:
    """One tax per tax code of the lines, sorted by code: the rate on the sum of that code's line
    amounts, rounded ROUND_HALF_UP to the minor unit."""
    taxable: dict[str, Decimal] = defaultdict(Decimal)
    with localcontext() as ctx:
        ctx.prec = PRECISION
        for line in lines:
            taxable[line.tax_code] += line.amount
        return [
            BillTax(code, rates.rate(code), taxable[code], round_money(taxable[code] * rates.rate(code), exponent))
            for code in sorted(taxable)
        ]


class BillTrigger(enum.Enum):
    """What made a bill (docs/billing.md, "Other triggers")."""

    CYCLE = "cycle"
    ON_DEMAND = "on_demand"
    THRESHOLD = "threshold"


@dataclass(frozen=True)
class Statement:
    """Where the account stood when a bill was built (docs/billing.md, "What a bill says"):
    what it still owed on earlier bills, and the payments and credit notes billing received since
    the previous bill was issued (already counted in the previous balance or the account's credit,
    so shown and not added again)."""

    previous_balance: Decimal = Decimal(0)
    payments_received: Decimal = Decimal(0)
    credits: Decimal = Decimal(0)


class BillStatus(enum.Enum):
    DRAFT = "draft"
    ISSUED = "issued"
    PARTIALLY_PAID = "partially_paid"
    PAID = "paid"
    OVERDUE = "overdue"
    VOID = "void"
    WRITTEN_OFF = "written_off"


@dataclass(frozen=True)
class BillNumber:
    """A bill's number, the series it was taken from and its place in it."""

    number: str
    series: str
    sequence: int


@dataclass
class Bill:
    bill_id: uuid.UUID
    bill_unit_id: uuid.UUID
    account_id: uuid.UUID
    bill_cycle_id: uuid.UUID | None
    currency_code: str
    period: Period
    issue_date: date
    due_date: date
    lines: list[BillLine]
    taxes: list[BillTax]
    subtotal: Decimal
    tax_total: Decimal
    total: Decimal
    create_time: datetime
    status: BillStatus = BillStatus.DRAFT
    number: BillNumber | None = None
    issue_time: datetime | None = None
    suppressed: bool = False
    # What payments allocated to it have paid (docs/billing.md, "Payments").
    paid_amount: Decimal = Decimal(0)
    # When it first went OVERDUE (BillOverdue is published then, once).
    overdue_time: datetime | None = None
    trigger: BillTrigger = BillTrigger.CYCLE
    # BillNow's request id.
    request_id: uuid.UUID | None = None
    statement: Statement = field(default_factory=Statement)
    # The account's credit (payments', credit notes') it took when issued.
    credit_applied: Decimal = Decimal(0)
    # What credit notes took off it: on it, or as account credit applied to it.
    credited_amount: Decimal = Decimal(0)
    events: list[object] = field(default_factory=list, compare=False, repr=False)

    @classmethod
    def for_cycle(
        cls,
        unit: BillUnit,
        cycle: BillCycle,
        profile: BillingProfile,
        items: Iterable[BillItem],
        rates: TaxRates,
        now: datetime,
    ) -> Bill:
        """The DRAFT bill of a closed cycle: every item billed in it becomes part of a line.
        `profile` is the profile the cycle ran under (its payment terms give the due date)."""
        return cls.build(unit, cycle, profile, items, rates, now, BillTrigger.CYCLE, cycle.end_date)

    @classmethod
    def build(
        cls,
        unit: BillUnit,
        cycle: BillCycle,
        profile: BillingProfile,
        items: Iterable[BillItem],
        rates: TaxRates,
        now: datetime,
        trigger: BillTrigger,
        issue_date: date,
        request_id: uuid.UUID | None = None,
    ) -> Bill:
        """A DRAFT bill of unbilled items of `cycle`, issued on `issue_date`. A cycle's bill covers
        the cycle; a bill-now or threshold bill, issued while the cycle is open, covers it from its
        start to its issue date (inclusive; the cycle's bill then holds only what came after)."""
        if cycle.bill_unit_id != unit.bill_unit_id:
            raise InvalidBill(f"cycle {cycle.bill_cycle_id} is not a cycle of bill unit {unit.bill_unit_id}")
        collected = list(items)
        for item in collected:
            billed = item.seq is not None and item.seq <= cycle.billed_through_seq
            if item.bill_cycle_id != cycle.bill_cycle_id or billed:
                raise InvalidBill(f"item {item.charge_id} is not an unbilled item of cycle {cycle.bill_cycle_id}")
        if now.utcoffset() is None:
            raise InvalidBill("now must be timezone-aware")
        exponent = currency_exponent(unit.currency_code)
        lines = group_lines(collected)
        taxes = compute_taxes(lines, rates, exponent)
        with localcontext() as ctx:
            ctx.prec = PRECISION
            subtotal = sum((line.amount for line in lines), Decimal(0))
            tax_total = sum((t.tax_amount for t in taxes), Decimal(0))
            total = subtotal + tax_total
        period = Period.of_cycle(cycle)
        if trigger is not BillTrigger.CYCLE:
            period = Period(
                period.start, max(period.start + timedelta(days=1), min(period.end, issue_date + timedelta(days=1)))
            )
        return cls(
            bill_id=new_uuid(),
            bill_unit_id=unit.bill_unit_id,
            account_id=unit.account_id,
            bill_cycle_id=cycle.bill_cycle_id,
            currency_code=unit.currency_code,
            period=period,
            issue_date=issue_date,
            due_date=issue_date + timedelta(days=profile.payment_terms_days),
            lines=lines,
            taxes=taxes,
            subtotal=subtotal,
            tax_total=tax_total,
            total=total,
            create_time=now.astimezone(UTC),
            trigger=trigger,
            request_id=request_id,
        )

    @property
    def amount_due(self) -> Decimal:
        """previous balance + total - credit applied: what the account owed with this bill."""
        return self.statement.previous_balance + self.total - self.credit_applied

    @property
    def is_zero(self) -> bool:
        return self.total == 0

    @property
    def charge_ids(self) -> list[uuid.UUID]:
        return [charge_id for line in self.lines for charge_id in line.charge_ids]

    def issue(self, number: BillNumber, now: datetime) -> None:
        """DRAFT -> ISSUED with its number; records BillIssued."""
        if self.status is not BillStatus.DRAFT or self.suppressed:
            raise InvalidBill(f"bill {self.bill_id} is {self.status.value}, only a draft is issued")
        if now.utcoffset() is None:
            raise InvalidBill("now must be timezone-aware")
        self.status = BillStatus.ISSUED
        self.number = number
        self.issue_time = now.astimezone(UTC)
        self.events.append(BillIssued(self))

    def suppress(self) -> None:
        """A zero-amount bill that is not issued: it stays DRAFT, without a number, for good."""
        if self.status is not BillStatus.DRAFT:
            raise InvalidBill(f"bill {self.bill_id} is {self.status.value}, only a draft is suppressed")
        if not self.is_zero:
            raise InvalidBill(f"bill {self.bill_id} totals {self.total}: only a zero-amount bill is suppressed")
        self.suppressed = True

    @property
    def open_amount(self) -> Decimal:
        """What is still to pay: total - paid_amount - credited_amount."""
        return self.total - self.paid_amount - self.credited_amount

    @property
    def is_open(self) -> bool:
        """Payments are allocated to it: ISSUED, PARTIALLY_PAID or OVERDUE with something to pay."""
        return self.status in OPEN_STATUSES and self.open_amount > 0

    def pay(self, amount: Decimal) -> None:
        """A payment's allocation: paid_amount grows; PAID when nothing is left to pay (also an
        OVERDUE bill), else PARTIALLY_PAID (an OVERDUE bill stays OVERDUE). Records BillPaid or
        BillPartiallyPaid."""
        if not self.is_open:
            raise InvalidBill(f"bill {self.bill_id} is {self.status.value} and owes {self.open_amount}")
        if amount <= 0 or amount > self.open_amount:
            raise InvalidBill(f"bill {self.bill_id} owes {self.open_amount}, it cannot take {amount}")
        self.paid_amount += amount
        if self.open_amount <= 0:
            self.status = BillStatus.PAID
        elif self.status is not BillStatus.OVERDUE:
            # Going OVERDUE is the overdue marker's step (with its BillOverdue), not a payment's.
            self.status = BillStatus.PARTIALLY_PAID
        self.events.append(BillPaid(self) if self.status is BillStatus.PAID else BillPartiallyPaid(self))

    def take_credit(self, amount: Decimal) -> None:
        """A credit note's credit taken off what is still to pay (on this bill, or account credit
        applied to it). Paid in full it is PAID (BillPaid); in part its status stays: a credit is
        not a payment."""
        if not self.is_open:
            raise InvalidBill(f"bill {self.bill_id} is {self.status.value} and owes {self.open_amount}")
        if amount <= 0 or amount > self.open_amount:
            raise InvalidBill(f"bill {self.bill_id} owes {self.open_amount}, it cannot take a credit of {amount}")
        self.credited_amount += amount
        if self.open_amount <= 0:
            self.status = BillStatus.PAID
            self.events.append(BillPaid(self))

    def void(self, amount: Decimal, credit_note_id: uuid.UUID) -> None:
        """VOID through a credit note for all it still owes, when no payment has paid any of it;
        records BillVoided."""
        if self.status not in OPEN_STATUSES or self.paid_amount != 0 or amount != self.open_amount:
            raise InvalidBill(f"bill {self.bill_id} is voided only by a credit note of all it owes, unpaid")
        self.credited_amount += amount
        self.status = BillStatus.VOID
        self.events.append(BillVoided(self, credit_note_id))

    def unpay(self, amount: Decimal, today: date, now: datetime) -> None:
        """A reversed payment's allocation taken back: the bill re-opens, ISSUED, PARTIALLY_PAID or
        OVERDUE as its due date says (BillOverdue if it never went overdue before)."""
        if amount <= 0 or amount > self.paid_amount:
            raise InvalidBill(f"bill {self.bill_id} has paid {self.paid_amount}, {amount} cannot be taken back")
        self.paid_amount -= amount
        if self.status in (*OPEN_STATUSES, BillStatus.PAID):
            self.status = self._settled_status(today)
            if self.status is BillStatus.OVERDUE and self.overdue_time is None:
                self.overdue_time = now.astimezone(UTC)
                self.events.append(BillOverdue(self))

    def mark_overdue(self, today: date, now: datetime) -> bool:
        """ISSUED / PARTIALLY_PAID past its due date with something to pay -> OVERDUE; BillOverdue
        the first time. False when it is not due to go overdue."""
        if self.status not in (BillStatus.ISSUED, BillStatus.PARTIALLY_PAID) or self.open_amount <= 0:
            return False
        if self.due_date >= today:
            return False
        self.status = BillStatus.OVERDUE
        if self.overdue_time is None:
            self.overdue_time = now.astimezone(UTC)
            self.events.append(BillOverdue(self))
        return True

    def _settled_status(self, today: date) -> BillStatus:
        if self.open_amount <= 0:
            return BillStatus.PAID
        if self.due_date < today:
            return BillStatus.OVERDUE
        return BillStatus.PARTIALLY_PAID if self.paid_amount > 0 else BillStatus.ISSUED


# The statuses payments are allocated to (with something still to pay).
OPEN_STATUSES = (BillStatus.ISSUED, BillStatus.PARTIALLY_PAID, BillStatus.OVERDUE)


@dataclass(frozen=True)
class BillIssued:
    bill: Bill


@dataclass(frozen=True)
class BillPaid:
    bill: Bill


@dataclass(frozen=True)
class BillPartiallyPaid:
    bill: Bill


@dataclass(frozen=True)
class BillOverdue:
    bill: Bill


@dataclass(frozen=True)
class BillVoided:
    bill: Bill
    credit_note_id: uuid.UUID


@dataclass(frozen=True, order=True)
class BillListPosition:
    """Where a listing of bills stands (newest first): the sort key of the last bill returned."""

    issue_date: date
    create_time: datetime
    bill_id: uuid.UUID


@dataclass(frozen=True, order=True)
class ItemListPosition:
    """Where a listing of unbilled items stands (oldest first): the last item's sort key."""

    event_time: datetime
    charge_id: uuid.UUID
