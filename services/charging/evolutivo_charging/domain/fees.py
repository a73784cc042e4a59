"""Fees on the calendar: one-time fees when a purchase starts, recurring fees per billing cycle.
Pure functions; docs/charging.md ("Fees on the calendar") gives the rules.

Charging computes the fees due *now* from what it knows (the purchase, the account's cycles as
billing announced them, the catalog) whenever something it learns may make one due: a purchase
or its end, a cycle opened or closed, or the clock passing a purchase's start (the fee loop).
Computing them again is harmless: every fee has a key (`FeeKey`) the database keeps unique, and
the caller charges only the fees whose key is new. So a redelivered event, a second replica or a
rerun of the loop never charges a fee twice.

- **One-time** (`OneTime`): once per purchase, when it has started (`start_time <= now`), billed in
  the cycle that takes an event at the purchase's start (`rating.choose_cycle`: late when that
  instant is in a closed cycle). Key: (purchase, charge code, nil cycle, one_time).
- **Recurring** (`Recurring`): once per purchase and cycle the purchase is active in (any part of
  `[start, end)`, not cancelled), once it has started: IN_ADVANCE once charging knows the cycle,
  billed in that cycle; IN_ARREARS once charging knows it closed, billed in the cycle that
  follows it. Prorated by local days (`pricing.prorated_fee`) unless the fee says not to. A fee
  charging learns of only after its cycle closed is billed in the earliest open cycle after it,
  flagged late. Key: (purchase, charge code, the cycle it pays for, recurring).

The offer version that prices a fee is the one in force at the start of what it pays for: the
purchase's start for a one-time fee; the later of the cycle's and the purchase's start for a
recurring one. A price override replaces the fee; the purchase's quantity multiplies it.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal, localcontext

from evolutivo_runtime.ids import new_uuid

from evolutivo_charging.domain.catalog import Charge, ChargeOffer, OneTime, Recurring, RecurringTiming
from evolutivo_charging.domain.pricing import Priced, prorated_fee, round_money
from evolutivo_charging.domain.rating import PRECISION, choose_cycle, currency_exponent, version_in_force
from evolutivo_charging.domain.usage import BillCycle, BillCycleStatus, ChargeKind, Purchase, RatedCharge

# The period_cycle_id of a one-time fee's key: it is charged once per purchase, whatever the cycle
# it is billed in.
WHOLE_PURCHASE = uuid.UUID(int=0)

# (purchase_id, charge_code, period_cycle_id, kind value): what a fee pays for. Unique.
FeeKey = tuple[uuid.UUID, str, uuid.UUID, str]


@dataclass(frozen=True)
class Fee:
    key: FeeKey
    charge: RatedCharge


@dataclass(frozen=True)
class Fees:
    fees: tuple[Fee, ...] = ()
    # Some fee is due but no open cycle can take it yet (charging has not learnt it): computing
    # the fees again once it has charges it.
    waiting: bool = False

    def __add__(self, other: Fees) -> Fees:
        return Fees(self.fees + other.fees, self.waiting or other.waiting)


def started(purchase: Purchase, now: datetime) -> bool:
    """Fees are charged from the purchase's start on; a cancelled purchase (cancelled before it
    started) is never charged."""
    return purchase.cancel_time is None and purchase.start_time <= now


def active_in(purchase: Purchase, cycle: BillCycle) -> bool:
    """The purchase is active during some part of the cycle."""
    return (
        purchase.cancel_time is None
        and purchase.start_time < cycle.end_time
        and (purchase.end_time is None or purchase.end_time > cycle.start_time)
    )


def billed_in(period: BillCycle, timing: RecurringTiming, cycles: Iterable[BillCycle]) -> tuple[BillCycle, bool] | None:
    """The cycle a recurring fee paying for `period` is billed in, and whether that is late; None
    while no open cycle can take it.

    In advance: the period itself while it is open. In arrears (the period has closed): the open
    cycle that starts where it ends. Otherwise, the earliest open cycle after the period, late."""
    if timing is RecurringTiming.IN_ADVANCE and period.status is BillCycleStatus.OPEN:
        return period, False
    after = sorted(
        (c for c in cycles if c.status is BillCycleStatus.OPEN and c.start_time >= period.end_time),
        key=lambda c: (c.start_time, c.bill_cycle_id),
    )
    if not after:
        return None
    late = timing is RecurringTiming.IN_ADVANCE or after[0].start_time != period.end_time
    return after[0], late


def fee_amount(fee: Decimal, purchase: Purchase, charge_code: str) -> Decimal:
    """The fee for the whole purchase: the override's price when the purchase has one for the
    charge, else the catalog's; times the purchase's quantity."""
    override = purchase.override(charge_code)
    return (fee if override is None else override) * purchase.quantity


def cycle_fees(
    purchase: Purchase,
    versions: Sequence[ChargeOffer],
    period: BillCycle,
    cycles: Iterable[BillCycle],
    time_zone: str,
    now: datetime,
    new_id: Callable[[], uuid.UUID] = new_uuid,
) -> Fees:
    """The recurring fees the purchase owes for `period` that are due now.

    `versions` are the activated versions of the purchase's offer; `cycles` every cycle charging
    knows for the account (to find the one a fee is billed in); `time_zone` prorates when the
    cycle does not carry its own."""
    if not started(purchase, now) or not active_in(purchase, period):
        return Fees()
    period_start = max(period.start_time, purchase.start_time)
    offer = version_in_force(versions, period_start)
    exponent = currency_exponent(offer.currency_code) if offer is not None else None
    if offer is None or exponent is None:
        return Fees()
    zone = period.time_zone or time_zone
    cycles = list(cycles)
    found: list[Fee] = []
    waiting = False
    with localcontext(prec=PRECISION):
        for charge in offer.charges:
            price = charge.price
            if not isinstance(price, Recurring):
                continue
            if price.timing is RecurringTiming.IN_ARREARS and period.status is not BillCycleStatus.CLOSED:
                continue
            target = billed_in(period, price.timing, cycles)
            if target is None:
                waiting = True
                continue
            total = fee_amount(price.amount, purchase, charge.code)
            if price.prorate:
                priced = prorated_fee(
                    total,
                    period.start_time,
                    period.end_time,
                    purchase.start_time,
                    purchase.end_time,
                    zone,
                    exponent,
                )
            else:
                priced = Priced(round_money(total, exponent), total)
            if priced.amount == 0 and priced.unrounded == 0:
                continue
            key = (purchase.purchase_id, charge.code, period.bill_cycle_id, ChargeKind.RECURRING.value)
            charge_ = _charge(purchase, offer, charge, ChargeKind.RECURRING, priced, target, period_start, now, new_id)
            found.append(Fee(key, charge_))
    return Fees(tuple(found), waiting)


def one_time_fees(
    purchase: Purchase,
    versions: Sequence[ChargeOffer],
    cycles: Iterable[BillCycle],
    now: datetime,
    new_id: Callable[[], uuid.UUID] = new_uuid,
) -> Fees:
    """The purchase's one-time fees, once it has started."""
    if not started(purchase, now):
        return Fees()
    offer = version_in_force(versions, purchase.start_time)
    exponent = currency_exponent(offer.currency_code) if offer is not None else None
    if offer is None or exponent is None:
        return Fees()
    found: list[Fee] = []
    waiting = False
    with localcontext(prec=PRECISION):
        for charge in offer.charges:
            price = charge.price
            if not isinstance(price, OneTime):
                continue
            target = choose_cycle(cycles, purchase.start_time)
            if target is None:
                waiting = True
                continue
            total = fee_amount(price.amount, purchase, charge.code)
            priced = Priced(round_money(total, exponent), total)
            if priced.amount == 0 and priced.unrounded == 0:
                continue
            key = (purchase.purchase_id, charge.code, WHOLE_PURCHASE, ChargeKind.ONE_TIME.value)
            charge_ = _charge(
                purchase, offer, charge, ChargeKind.ONE_TIME, priced, target, purchase.start_time, now, new_id
            )
            found.append(Fee(key, charge_))
    return Fees(tuple(found), waiting)


def purchase_fees(
    purchase: Purchase,
    versions: Sequence[ChargeOffer],
    cycles: Sequence[BillCycle],
    time_zone: str,
    now: datetime,
    new_id: Callable[[], uuid.UUID] = new_uuid,
) -> Fees:
    """Every fee of the purchase due now: its one-time fees and the recurring fees of every cycle
    charging knows that it is active in."""
    due = one_time_fees(purchase, versions, cycles, now, new_id)
    for period in sorted(cycles, key=lambda c: (c.start_time, c.bill_cycle_id)):
        due += cycle_fees(purchase, versions, period, cycles, time_zone, now, new_id)
    return due


def _charge(
    purchase: Purchase,
    offer: ChargeOffer,
    charge: Charge,
    kind: ChargeKind,
    priced: Priced,
    target: tuple[BillCycle, bool],
    period_start: datetime,
    now: datetime,
    new_id: Callable[[], uuid.UUID],
) -> RatedCharge:
    cycle, late = target
    return RatedCharge(
        charge_id=new_id(),
        account_id=purchase.account_id,
        kind=kind,
        # Fees rate no usage event.
        event_id="",
        purchase_id=purchase.purchase_id,
        charge_offer_code=offer.code,
        charge_offer_version=offer.version,
        charge_code=charge.code,
        balance_group=charge.balance_group,
        tax_code=charge.tax_code,
        quantity=purchase.quantity,
        amount=priced.amount,
        currency_code=offer.currency_code,
        unrounded_amount=priced.unrounded,
        tiers=(),
        # The start of what the fee pays for.
        event_time=period_start,
        rate_time=now,
        bill_cycle_id=cycle.bill_cycle_id,
        late=late,
    )
