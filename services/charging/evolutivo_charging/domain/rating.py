"""Rating: what a usage event costs. Pure functions; docs/charging.md gives the rules.

Rating happens in two steps so a caller can lock exactly the usage counters it needs:

1. `plan` decides, from what charging knows (the account, its purchases, the catalog versions,
   its billing cycles), whether the event can be rated and which charges of which purchases price
   it, in which cycle. It reads no counter.
2. `price` prices a plan against the cycle's usage counters, which it advances: a cumulative
   model (per unit, graduated, volume, package) prices the event as `price_cumulative(before =
   units used so far in the cycle, quantity)`, so a cycle's charges add up to the price of its
   total; a per-event model (flat, percentage) prices the event on its own.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal, localcontext

import iso4217
from evolutivo_runtime.errors import InvalidArgument
from evolutivo_runtime.ids import new_uuid

from evolutivo_charging.domain.catalog import (
    Charge,
    ChargeOffer,
    Flat,
    Graduated,
    Package,
    Percentage,
    PerUnit,
    PriceModel,
    Volume,
    decimal_field,
)
from evolutivo_charging.domain.model import ChargingAccount, ChargingAccountStatus
from evolutivo_charging.domain.pricing import is_cumulative, price_cumulative, price_event
from evolutivo_charging.domain.usage import (
    BillCycle,
    BillCycleStatus,
    ChargeKind,
    CreditState,
    Purchase,
    RatedCharge,
    Reason,
    UsageEvent,
    UsageStatus,
    exceeded_group,
)

# Enough significant digits that every product and sum of rating is exact: quantities and
# catalog numbers have at most 18 integer and 12 decimal digits (the default context has 28).
PRECISION = 80

# (account_id, purchase_id, charge_code, bill_cycle_id): the units of a charge a purchase used in
# a cycle.
CounterKey = tuple[uuid.UUID, uuid.UUID, str, uuid.UUID]


@dataclass(frozen=True)
class NotRated:
    """The event is kept without charges: UNRATED (re-submittable) or REJECTED."""

    status: UsageStatus
    reason: str
    message: str
    # Named in the error's metadata (e.g. the balance group over its credit limit).
    details: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Line:
    """One charge of one purchase that prices the event."""

    purchase: Purchase
    offer: ChargeOffer
    charge: Charge
    # The charge's price with the purchase's override applied.
    price: PriceModel
    quantity: Decimal
    # A percentage's base (the event's amount property); None for other models.
    base: Decimal | None = None


@dataclass(frozen=True)
class Plan:
    event: UsageEvent
    cycle: BillCycle
    # The event's time is before the cycle it is billed in (it falls in a closed cycle).
    late: bool
    currency_code: str
    exponent: int
    lines: tuple[Line, ...]

    def key(self, line: Line) -> CounterKey:
        return (self.event.account_id, line.purchase.purchase_id, line.charge.code, self.cycle.bill_cycle_id)

    def counter_keys(self) -> list[CounterKey]:
        """The usage counters pricing reads and advances, each once, in lock order."""
        return sorted({self.key(line) for line in self.lines if is_cumulative(line.price)})


def currency_exponent(code: str) -> int | None:
    """The ISO 4217 minor unit (EUR 2, JPY 0, BHD 3); None for an unknown code or one without."""
    try:
        return iso4217.Currency(code).exponent
    except ValueError:
        return None


def effective_price(price: PriceModel, override: Decimal | None) -> PriceModel | None:
    """The charge's price for a purchase that overrides it (customer's PriceOverride: "the price
    per unit, or the fee"). None when the model cannot take an override.

    - flat: the amount per event; per unit: the unit price;
    - graduated and volume: every unit at the override price (a negotiated unit price replaces the
      tier schedule, its bands and their flat fees);
    - package: the price of a block (size and free units stay);
    - percentage: none (a Money price cannot replace a rate): the event stays UNRATED with
      PRICE_OVERRIDE_UNSUPPORTED until the purchase is fixed.
    """
    if override is None:
        return price
    if isinstance(price, Flat):
        return Flat(override)
    if isinstance(price, PerUnit | Graduated | Volume):
        return PerUnit(override)
    if isinstance(price, Package):
        return Package(size=price.size, price=override, free_units=price.free_units)
    return None


def choose_cycle(cycles: Iterable[BillCycle], instant: datetime) -> tuple[BillCycle, bool] | None:
    """The cycle usage at `instant` is billed in, and whether it is late.

    The open cycle holding the instant; an instant before every open cycle (in a cycle billing
    closed, or before the first cycle charging knows) goes to the earliest open cycle, flagged
    late. None when no open cycle is known, or the instant is after them (its cycle is not open
    yet)."""
    open_cycles = sorted(
        (c for c in cycles if c.status is BillCycleStatus.OPEN), key=lambda c: (c.start_time, c.bill_cycle_id)
    )
    holding = [c for c in open_cycles if c.holds(instant)]
    if holding:
        return holding[-1], False
    if open_cycles and instant < open_cycles[0].start_time:
        return open_cycles[0], True
    return None


def _positive_property(value: str | None) -> Decimal | None:
    if value is None:
        return None
    try:
        return decimal_field(value, "property", positive=True)
    except InvalidArgument:
        return None


def _amount_property(value: str | None) -> Decimal | None:
    if value is None:
        return None
    try:
        return decimal_field(value, "property")
    except InvalidArgument:
        return None


def version_in_force(versions: Sequence[ChargeOffer], instant: datetime) -> ChargeOffer | None:
    """The version of an offer (among its activated `versions`) in force at `instant`."""
    found = [v for v in versions if v.in_force(instant)]
    return max(found, key=lambda v: v.version) if found else None


def match_lines(
    event: UsageEvent,
    account: ChargingAccount,
    purchases: Iterable[Purchase],
    versions: Mapping[str, Sequence[ChargeOffer]],
) -> tuple[Line, ...] | NotRated:
    """The charges of the account's purchases that price the event (whatever the account's
    status): every purchase active at the event time (and for the event's service, when it names
    one) with, in the offer version in force at the event time, usage charges matching the event;
    or why one of them cannot price it; UNRATED, NO_MATCHING_PURCHASE when none matches."""
    properties = event.property_map
    lines: list[Line] = []
    for purchase in sorted(purchases, key=lambda p: (p.start_time, p.purchase_id)):
        if purchase.account_id != event.account_id or not purchase.active_at(event.event_time):
            continue
        if event.service_id is not None and purchase.service_id != event.service_id:
            continue
        offer = version_in_force(versions.get(purchase.charge_offer_code, ()), event.event_time)
        if offer is None:
            continue
        for charge in offer.charges:
            if not charge.matches(event.event_type, properties):
                continue
            problem = _line(event, account, purchase, offer, charge, properties)
            if isinstance(problem, NotRated):
                return problem
            lines.append(problem)
    if not lines:
        return NotRated(
            UsageStatus.UNRATED,
            Reason.NO_MATCHING_PURCHASE,
            f"no purchase of account {event.account_id} active at {event.event_time.isoformat()} "
            f"has a charge for {event.event_type!r}",
        )
    return tuple(lines)


def plan(
    event: UsageEvent,
    account: ChargingAccount | None,
    purchases: Iterable[Purchase],
    versions: Mapping[str, Sequence[ChargeOffer]],
    cycles: Iterable[BillCycle],
    credit: Iterable[CreditState] = (),
) -> Plan | NotRated:
    """Which charges price the event, in which cycle; or why it is not rated.

    `purchases`, `cycles` and `credit` are the account's; `versions` maps an offer code to its
    activated versions. The checks, in order: the account is known (else UNRATED, UNKNOWN_ACCOUNT)
    and active (else REJECTED); some purchase has charges matching the event (`match_lines`; else
    UNRATED, NO_MATCHING_PURCHASE); each such charge can price it; none that forbids overage lands
    in a balance group over its credit limit (else REJECTED, CREDIT_LIMIT_EXCEEDED); an open cycle
    takes it (else UNRATED, NO_OPEN_CYCLE)."""
    if account is None:
        return NotRated(
            UsageStatus.UNRATED, Reason.UNKNOWN_ACCOUNT, f"charging does not know account {event.account_id}"
        )
    if account.status is ChargingAccountStatus.SUSPENDED:
        return NotRated(
            UsageStatus.REJECTED, Reason.ACCOUNT_SUSPENDED, f"account {event.account_id} is suspended: usage is refused"
        )
    if account.status is ChargingAccountStatus.CLOSED:
        return NotRated(
            UsageStatus.REJECTED, Reason.ACCOUNT_CLOSED, f"account {event.account_id} is closed: usage is refused"
        )
    lines = match_lines(event, account, purchases, versions)
    if isinstance(lines, NotRated):
        return lines
    states = tuple(credit)
    if states:
        for line in lines:
            group = None if line.charge.allow_overage else exceeded_group(states, line.charge.balance_group)
            if group is not None:
                return NotRated(
                    UsageStatus.REJECTED,
                    Reason.CREDIT_LIMIT_EXCEEDED,
                    f"charge {line.charge.code!r} of {line.offer.code} lands in balance group {group!r} of account "
                    f"{event.account_id}, which is over its credit limit and the charge does not allow overage",
                    {"balance_group": group},
                )
    chosen = choose_cycle(cycles, event.event_time)
    if chosen is None:
        return NotRated(
            UsageStatus.UNRATED,
            Reason.NO_OPEN_CYCLE,
            f"billing has not opened a cycle of account {event.account_id} for {event.event_time.isoformat()}",
        )
    cycle, late = chosen
    exponent = currency_exponent(account.currency_code)
    assert exponent is not None, "the offers' currency is the account's, and offers have a minor unit"
    return Plan(event, cycle, late, account.currency_code, exponent, lines)


def _line(
    event: UsageEvent,
    account: ChargingAccount,
    purchase: Purchase,
    offer: ChargeOffer,
    charge: Charge,
    properties: Mapping[str, str],
) -> Line | NotRated:
    where = f"charge {charge.code!r} of {offer.code} v{offer.version}"
    if offer.currency_code != account.currency_code or currency_exponent(offer.currency_code) is None:
        return NotRated(
            UsageStatus.UNRATED,
            Reason.CURRENCY_MISMATCH,
            f"{where} is priced in {offer.currency_code}; the account is in {account.currency_code}",
        )
    price = effective_price(charge.price, purchase.override(charge.code))
    if price is None:
        return NotRated(
            UsageStatus.UNRATED,
            Reason.PRICE_OVERRIDE_UNSUPPORTED,
            f"purchase {purchase.purchase_id} overrides the price of {where}, a percentage",
        )
    quantity: Decimal | None = event.quantity
    if charge.quantity_property:
        quantity = _positive_property(properties.get(charge.quantity_property))
        if quantity is None:
            return NotRated(
                UsageStatus.UNRATED,
                Reason.QUANTITY_PROPERTY_INVALID,
                f"{where} reads the quantity from property {charge.quantity_property!r}: "
                "it must be a decimal greater than zero",
            )
    assert quantity is not None
    base = None
    if isinstance(price, Percentage):
        base = _amount_property(properties.get(price.amount_property))
        if base is None:
            return NotRated(
                UsageStatus.UNRATED,
                Reason.AMOUNT_PROPERTY_INVALID,
                f"{where} is a percentage of property {price.amount_property!r}: it must be a non-negative decimal",
            )
    return Line(purchase, offer, charge, price, quantity, base)


def price(
    planned: Plan,
    counters: dict[CounterKey, Decimal],
    now: datetime,
    new_id: Callable[[], uuid.UUID] = new_uuid,
) -> tuple[RatedCharge, ...]:
    """The charges of a planned event. Advances `counters` (units used so far, by key; a missing
    key is zero) by the quantity of each cumulative line.

    A line that costs nothing (inside a free allowance) gives no charge; its units still count."""
    charges: list[RatedCharge] = []
    with localcontext(prec=PRECISION):
        for line in planned.lines:
            if is_cumulative(line.price):
                key = planned.key(line)
                before = counters.get(key, Decimal(0))
                priced = price_cumulative(line.price, before, line.quantity, planned.exponent)
                counters[key] = before + line.quantity
            else:
                priced = price_event(line.price, line.quantity, line.base, planned.exponent)
            if priced.amount == 0 and priced.unrounded == 0:
                continue
            charges.append(
                RatedCharge(
                    charge_id=new_id(),
                    account_id=planned.event.account_id,
                    kind=ChargeKind.USAGE,
                    event_id=planned.event.event_id,
                    purchase_id=line.purchase.purchase_id,
                    charge_offer_code=line.offer.code,
                    charge_offer_version=line.offer.version,
                    charge_code=line.charge.code,
                    balance_group=line.charge.balance_group,
                    tax_code=line.charge.tax_code,
                    quantity=line.quantity,
                    amount=priced.amount,
                    currency_code=planned.currency_code,
                    unrounded_amount=priced.unrounded,
                    tiers=priced.breakdown,
                    event_time=planned.event.event_time,
                    rate_time=now,
                    bill_cycle_id=planned.cycle.bill_cycle_id,
                    late=planned.late,
                )
            )
    return tuple(charges)
