"""Rerating: an account's rated usage priced again with the current catalog and purchases, the
differences turned into reversing and new charges. Pure functions; docs/charging.md gives the rules.

A cycle's usage is priced again as a whole, in the order its counters counted it (the rating
order), with counters starting from zero: cumulative tiers come out exactly as rating would give
them today, and with an unchanged catalog exactly as they were. Only the events in the run's scope
(its window, and its offer code when one is given) are corrected: for each of their charge lines
— a (purchase, charge code) — whose amount, currency, balance group or tax code changed, the
standing charge is reversed (a REVERSAL charge of the negated amount, naming it) and the new one
is charged (naming the charge it replaces). An existing charge is never edited.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from decimal import Decimal

from evolutivo_runtime.ids import new_uuid

from evolutivo_charging.domain import rating
from evolutivo_charging.domain.catalog import ChargeOffer
from evolutivo_charging.domain.model import ChargingAccount
from evolutivo_charging.domain.pricing import TierLine
from evolutivo_charging.domain.usage import (
    BillCycle,
    ChargeKind,
    Purchase,
    RatedCharge,
    Reason,
    UsageEvent,
)

# A charge line of an event: (purchase, charge code).
LineKey = tuple[uuid.UUID, str]


@dataclass(frozen=True)
class RatedUsage:
    """A rated event of the cycle being rerated, with the charges standing for it now (its
    charges not reversed, reversals excluded), in the cycle's rating order."""

    event: UsageEvent
    standing: tuple[RatedCharge, ...]
    # In the run's window (the offer code filter applies on top).
    in_scope: bool


@dataclass
class Rerated:
    """What rerating a cycle gives."""

    # The reversing and new charges, event by event in rating order, each reversal before the
    # charge replacing it.
    charges: list[RatedCharge] = field(default_factory=list)
    # The cycle's usage counters as the current catalog counts them (key -> units).
    counters: dict[rating.CounterKey, Decimal] = field(default_factory=dict)
    events_rerated: int = 0
    events_changed: int = 0
    charges_reversed: int = 0
    charges_created: int = 0


def _key(charge: RatedCharge) -> LineKey:
    return (charge.purchase_id, charge.charge_code)


def _same(old: RatedCharge, new: RatedCharge) -> bool:
    return (old.amount, old.currency_code, old.balance_group, old.tax_code) == (
        new.amount,
        new.currency_code,
        new.balance_group,
        new.tax_code,
    )


def reversal(original: RatedCharge, run_id: uuid.UUID, cycle: BillCycle, late: bool, now: datetime) -> RatedCharge:
    """Cancels `original`: the negated amount (and tier lines), billed in `cycle`."""
    return replace(
        original,
        charge_id=new_uuid(),
        kind=ChargeKind.REVERSAL,
        amount=-original.amount,
        unrounded_amount=-original.unrounded_amount,
        tiers=tuple(
            TierLine(t.tier, -t.units, t.unit_price, -t.flat_fee if t.flat_fee else t.flat_fee, -t.amount)
            for t in original.tiers
        ),
        rate_time=now,
        bill_cycle_id=cycle.bill_cycle_id,
        late=late,
        reverses_charge_id=original.charge_id,
        rerate_run_id=run_id,
        replaces_charge_id=None,
    )


def rerate_cycle(
    usage_cycle: BillCycle,
    usage: Sequence[RatedUsage],
    account: ChargingAccount,
    purchases: Iterable[Purchase],
    versions: Mapping[str, Sequence[ChargeOffer]],
    cycles: Iterable[BillCycle],
    charge_offer_code: str,
    run_id: uuid.UUID,
    now: datetime,
    new_id: Callable[[], uuid.UUID] = new_uuid,
) -> Rerated:
    """Prices the usage of `usage_cycle` (every rated event whose units count in it, in rating
    order) again, and corrects the events in scope.

    The corrections are billed in the open cycle that takes usage at the event's time now
    (`rating.choose_cycle`: the usage cycle itself while it is open; else the earliest open cycle,
    flagged late, as late usage is). An event no purchase matches any more is charged nothing (its
    charges are reversed); one that cannot be priced for another reason (a bad quantity property,
    another currency...) keeps its charges. Raises LookupError when a correction has no open cycle."""
    done = Rerated()
    bought = list(purchases)
    known_cycles = list(cycles)
    exponent = rating.currency_exponent(account.currency_code)
    assert exponent is not None, "accounts have currencies with a minor unit"
    for item in usage:
        event = item.event
        lines = rating.match_lines(event, account, bought, versions)
        if isinstance(lines, rating.NotRated):
            if lines.reason != Reason.NO_MATCHING_PURCHASE:
                continue  # kept as it stands; its units do not count again
            lines = ()
        planned = rating.Plan(event, usage_cycle, False, account.currency_code, exponent, lines)
        priced = rating.price(planned, done.counters, now, new_id)
        if not item.in_scope:
            continue
        done.events_rerated += 1
        compared = {
            _key(c): c for c in item.standing if not charge_offer_code or c.charge_offer_code == charge_offer_code
        }
        fresh = {_key(c): c for c in priced if not charge_offer_code or c.charge_offer_code == charge_offer_code}
        changed = [k for k in sorted(compared.keys() | fresh.keys()) if not _corrected(compared.get(k), fresh.get(k))]
        if not changed:
            continue
        chosen = rating.choose_cycle(known_cycles, event.event_time)
        if chosen is None:
            raise LookupError(f"no open cycle of account {account.account_id} takes a correction of {event.event_id}")
        cycle, late = chosen
        done.events_changed += 1
        for key in changed:
            old = compared.get(key)
            new = fresh.get(key)
            if old is not None:
                done.charges.append(reversal(old, run_id, cycle, late, now))
                done.charges_reversed += 1
            if new is not None:
                done.charges.append(
                    replace(
                        new,
                        bill_cycle_id=cycle.bill_cycle_id,
                        late=late,
                        rerate_run_id=run_id,
                        replaces_charge_id=old.charge_id if old is not None else None,
                    )
                )
                done.charges_created += 1
    return done


def _corrected(old: RatedCharge | None, new: RatedCharge | None) -> bool:
    """True when the standing charge already is what rating gives now (nothing to correct)."""
    if old is None or new is None:
        return old is None and new is None
    return _same(old, new)
