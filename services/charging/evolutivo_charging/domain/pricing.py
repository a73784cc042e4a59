"""Pricing: the amount a price model gives a quantity, exactly, and the one rounding rule.

Rounding rule (docs/charging.md): amounts are computed exactly, then rounded to the currency's
minor unit with ROUND_HALF_UP. Models priced on the cycle's cumulative usage (per unit, graduated,
volume, package) are rounded **cumulatively**: an event's charge is the rounded cost of the usage
up to and including it, minus the rounded cost of the usage before it. The charges of a cycle then
add up to exactly the rounded cost of its total usage, however the events were batched or ordered,
and no cent drifts. Models priced per event (flat, percentage) round each event on its own.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, time
from decimal import ROUND_CEILING, ROUND_HALF_UP, Decimal
from zoneinfo import ZoneInfo

from evolutivo_charging.domain.catalog import Flat, Graduated, Package, Percentage, PerUnit, PriceModel, Tier, Volume

ZERO = Decimal(0)


def round_money(amount: Decimal, exponent: int) -> Decimal:
    """The currency's minor unit: exponent 2 for EUR, 0 for JPY, 3 for BHD."""
    return amount.quantize(Decimal(1).scaleb(-exponent), rounding=ROUND_HALF_UP)


@dataclass(frozen=True)
class TierLine:
    """What one tier contributed to a charge, kept on the charge to trace every cent."""

    tier: int
    units: Decimal
    unit_price: Decimal
    flat_fee: Decimal
    amount: Decimal


@dataclass(frozen=True)
class Priced:
    # Rounded to the currency's minor unit: what the customer is charged.
    amount: Decimal
    # Exact, before rounding.
    unrounded: Decimal
    breakdown: tuple[TierLine, ...] = ()


def cumulative_cost(price: PriceModel, units: Decimal) -> tuple[Decimal, tuple[TierLine, ...]]:
    """Exact cost of `units` used in the cycle so far, under a cycle-cumulative model."""
    if isinstance(price, PerUnit):
        return units * price.unit_price, ()
    if isinstance(price, Graduated):
        return _graduated(price.tiers, units)
    if isinstance(price, Volume):
        return _volume(price.tiers, units)
    if isinstance(price, Package):
        billable = max(units - price.free_units, ZERO)
        blocks = (billable / price.size).to_integral_value(rounding=ROUND_CEILING)
        return blocks * price.price, ()
    raise TypeError(f"{type(price).__name__} is not priced on cumulative usage")


def _graduated(tiers: tuple[Tier, ...], units: Decimal) -> tuple[Decimal, tuple[TierLine, ...]]:
    lines: list[TierLine] = []
    lower = ZERO
    total = ZERO
    for index, tier in enumerate(tiers):
        if units <= lower:
            break
        upper = units if tier.up_to is None else min(units, tier.up_to)
        in_tier = upper - lower
        amount = in_tier * tier.unit_price + tier.flat_fee
        lines.append(TierLine(index, in_tier, tier.unit_price, tier.flat_fee, amount))
        total += amount
        if tier.up_to is None:
            break
        lower = tier.up_to
    return total, tuple(lines)


def _volume(tiers: tuple[Tier, ...], units: Decimal) -> tuple[Decimal, tuple[TierLine, ...]]:
    if units <= 0:
        return ZERO, ()
    for index, tier in enumerate(tiers):
        if tier.up_to is None or units <= tier.up_to:
            amount = units * tier.unit_price + tier.flat_fee
            return amount, (TierLine(index, units, tier.unit_price, tier.flat_fee, amount),)
    raise AssertionError("the last tier is unbounded")  # guaranteed by catalog validation


def price_cumulative(price: PriceModel, before: Decimal, quantity: Decimal, exponent: int) -> Priced:
    """The charge for `quantity` units when `before` units were already used in the cycle.

    Volume pricing re-prices every unit of the cycle at the band its total reaches, so an event
    that moves the total into a cheaper band gives a negative charge (a credit): the cycle's
    charges still add up to the price of its total."""
    cost_before, lines_before = cumulative_cost(price, before)
    cost_after, lines_after = cumulative_cost(price, before + quantity)
    amount = round_money(cost_after, exponent) - round_money(cost_before, exponent)
    breakdown = _delta(lines_after, lines_before) if isinstance(price, Graduated) else lines_after
    return Priced(amount=amount, unrounded=cost_after - cost_before, breakdown=breakdown)


def _delta(lines_after: tuple[TierLine, ...], lines_before: tuple[TierLine, ...]) -> tuple[TierLine, ...]:
    """The tier lines of this event alone (graduated): the units it added to each band."""
    previous = {line.tier: line for line in lines_before}
    delta: list[TierLine] = []
    for line in lines_after:
        old = previous.get(line.tier)
        units = line.units - (old.units if old else ZERO)
        fee = ZERO if old else line.flat_fee
        if units or fee:
            delta.append(TierLine(line.tier, units, line.unit_price, fee, units * line.unit_price + fee))
    return tuple(delta)


def price_event(price: PriceModel, quantity: Decimal, amount_property: Decimal | None, exponent: int) -> Priced:
    """The charge of one event under a per-event model (flat, percentage)."""
    if isinstance(price, Flat):
        return Priced(round_money(price.amount, exponent), price.amount)
    if isinstance(price, Percentage):
        base = amount_property if amount_property is not None else ZERO
        exact = base * price.rate + price.fixed_per_event
        if price.min_per_event is not None:
            exact = max(exact, price.min_per_event)
        if price.max_per_event is not None:
            exact = min(exact, price.max_per_event)
        return Priced(round_money(exact, exponent), exact)
    raise TypeError(f"{type(price).__name__} is not priced per event")


def is_cumulative(price: PriceModel) -> bool:
    return isinstance(price, PerUnit | Graduated | Volume | Package)


def local_days(start: datetime, end: datetime, time_zone: str) -> int:
    """Calendar days from `start` to `end` in the zone: a 23- or 25-hour DST day counts as one day.
    Both are instants at local midnights (cycle and purchase boundaries are)."""
    zone = ZoneInfo(time_zone)
    return (end.astimezone(zone).date() - start.astimezone(zone).date()).days


def prorated_fee(
    fee: Decimal,
    cycle_start: datetime,
    cycle_end: datetime,
    active_from: datetime | None,
    active_to: datetime | None,
    time_zone: str,
    exponent: int,
) -> Priced:
    """A cycle's recurring fee for the part of the cycle the purchase was active, by whole local
    days: fee x active days / cycle days. A purchase starting mid-day counts that day from its
    local midnight (the day is billed whole), one ending mid-day does not count its last day."""
    zone = ZoneInfo(time_zone)

    def midnight(instant: datetime) -> datetime:
        local = instant.astimezone(zone)
        return datetime.combine(local.date(), time(0), tzinfo=zone)

    start = max(cycle_start, midnight(active_from)) if active_from else cycle_start
    end = min(cycle_end, midnight(active_to)) if active_to else cycle_end
    cycle_days = local_days(cycle_start, cycle_end, time_zone)
    active_days = max(local_days(start, end, time_zone), 0) if end > start else 0
    exact = fee * Decimal(active_days) / Decimal(cycle_days) if active_days < cycle_days else fee
    return Priced(round_money(exact, exponent), exact)
