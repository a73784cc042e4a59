"""Use cases of fees on the calendar (domain/fees.py has the rules; docs/charging.md the decisions).

Fees are computed from what charging knows each time it learns something that can make one due,
and charged when their key is new (fee_charges), through the same path as usage charges: the
charges table and one ChargesCreated per currency in the outbox.

- `purchase_learnt`: a purchase charging learns, or learns the end of (consumer transaction);
- `cycles_learnt`: a cycle opened or closed (consumer transaction);
- `cycle_events_learnt`: a consumer batch of cycles opened and closed, in one go (the same effects as
  the events' own handlers, `usage.open_cycle` / `usage.close_cycle` then `cycles_learnt`, one by one);
- `charge_started_purchases`: the fee loop's pass, for purchases whose start the clock passed.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime

from evolutivo_charging.domain import fees
from evolutivo_charging.domain.catalog import ChargeOffer
from evolutivo_charging.domain.fees import Fee
from evolutivo_charging.domain.usage import BillCycle, BillCycleStatus, Purchase, RatedCharge
from evolutivo_charging.service_layer.unit_of_work import ChargingUnitOfWork
from evolutivo_charging.service_layer.usage import publish_charges

log = logging.getLogger(__name__)

# Prorates a cycle that does not carry its time zone, for an account charging does not know.
DEFAULT_TIME_ZONE = "UTC"


async def charge_fees(uow: ChargingUnitOfWork, due: Sequence[Fee], now: datetime) -> list[RatedCharge]:
    """Charges the fees whose key is new: their keys, the charges and their ChargesCreated, in the
    caller's transaction. Returns the charges made."""
    unique: dict[fees.FeeKey, Fee] = {}
    for fee in due:
        unique.setdefault(fee.key, fee)
    if not unique:
        return []
    new = await uow.fees.claim(list(unique.values()), now)
    # In the order computed: by purchase, the period paid for, and the offer's order of charges.
    created = [f.charge for key, f in unique.items() if key in new]
    await uow.charges.add_all(created)
    publish_charges(uow, created)
    return created


async def _time_zones(uow: ChargingUnitOfWork, account_ids: Iterable[uuid.UUID]) -> dict[uuid.UUID, str]:
    accounts = await uow.charging_accounts.get_many(account_ids)
    return {a: accounts[a].time_zone if a in accounts else DEFAULT_TIME_ZONE for a in set(account_ids)}


async def purchase_learnt(uow: ChargingUnitOfWork, purchase_id: uuid.UUID, now: datetime) -> list[RatedCharge]:
    """After charging learns a purchase (or its end, or its cancellation): every fee of it due now
    — its one-time fees and, for each cycle charging knows it is active in, the recurring fees
    due — and, once nothing waits for a cycle, the purchase's start is settled (the fee loop
    leaves it). Runs inside the consumer's transaction (the caller commits)."""
    purchase = await uow.purchases.get(purchase_id)
    if purchase is None:
        return []
    cycles = (await uow.bill_cycles.for_accounts([purchase.account_id]))[purchase.account_id]
    versions = (await uow.catalog.activated([purchase.charge_offer_code]))[purchase.charge_offer_code]
    zones = await _time_zones(uow, [purchase.account_id])
    due = fees.purchase_fees(purchase, versions, cycles, zones[purchase.account_id], now)
    if (fees.started(purchase, now) or purchase.cancel_time is not None) and not due.waiting:
        await uow.purchases.settle_start_fees([purchase_id], now)
    return await charge_fees(uow, due.fees, now)


async def cycles_learnt(
    uow: ChargingUnitOfWork, account_id: uuid.UUID, cycle_ids: Iterable[uuid.UUID], now: datetime
) -> list[RatedCharge]:
    """After charging learns cycles of the account opened or closed: the recurring fees of those
    cycles due now, for each purchase of the account that has started (in advance once a cycle is
    known, in arrears once it is closed); and every fee of a started purchase whose start's fees
    waited (for a cycle to bill them in). Runs inside the consumer's transaction."""
    cycles = (await uow.bill_cycles.for_accounts([account_id]))[account_id]
    bought = [p for p in (await uow.purchases.for_accounts([account_id]))[account_id] if fees.started(p, now)]
    if not bought:
        return []
    pending = await uow.purchases.start_fees_pending(account_id, now)
    versions = await uow.catalog.activated(p.charge_offer_code for p in bought)
    zone = (await _time_zones(uow, [account_id]))[account_id]
    due = _cycle_fees_due(bought, pending, versions, cycles, set(cycle_ids), zone, now)
    return await charge_fees(uow, due, now)


def _cycle_fees_due(
    bought: Sequence[Purchase],
    pending: set[uuid.UUID],
    versions: dict[str, list[ChargeOffer]],
    cycles: Sequence[BillCycle],
    wanted: set[uuid.UUID],
    zone: str,
    now: datetime,
) -> list[Fee]:
    """`cycles_learnt`'s fees of one account, from what it read: `bought`, the account's started
    purchases; `cycles`, every cycle charging knows of it; `wanted`, the ids of those learnt."""
    periods = sorted((c for c in cycles if c.bill_cycle_id in wanted), key=lambda c: (c.start_time, c.bill_cycle_id))
    due: list[Fee] = []
    for purchase in sorted(bought, key=lambda p: (p.start_time, p.purchase_id)):
        offer_versions = versions[purchase.charge_offer_code]
        if purchase.purchase_id in pending:
            due += fees.purchase_fees(purchase, offer_versions, cycles, zone, now).fees
        else:
            for period in periods:
                due += fees.cycle_fees(purchase, offer_versions, period, cycles, zone, now).fees
    return due


@dataclass(frozen=True)
class CycleEvent:
    """What one BillCycleOpened or BillCycleClosed tells charging: cycles of the account, in the
    order the event's handler records them, each with the status the event gives it (opened: the
    cycle, open; closed: the cycle, closed, then the next one, open). Fees are due for them."""

    account_id: uuid.UUID
    cycles: tuple[BillCycle, ...]


class NotBatchable(Exception):
    """The batch holds something `cycle_events_learnt` does not reproduce exactly (a cycle of
    another account): the consumer applies its events one by one instead."""


async def cycle_events_learnt(
    uow: ChargingUnitOfWork, events: Sequence[CycleEvent], now: datetime
) -> list[RatedCharge]:
    """A consumer batch of cycle events, with the effects of their handlers applied one by one in
    this order (`usage.open_cycle` or `usage.close_cycle`, then `cycles_learnt`), in a handful of
    statements whatever the number of events: one upsert of every cycle, one read of every
    account's purchases and (for the accounts with a started purchase) one of their cycles, their
    pending start fees, the catalog and their time zones; the fees are computed per event as
    `cycles_learnt` computes them (domain/fees.py), each event seeing its account's cycles as they
    stand after it; then one claim of every fee key and one insert of every charge, published
    together (one ChargesCreated per currency). A fee key two events compute is charged by the
    first, as one by one. Runs inside the consumer's transaction (the caller commits).

    Raises NotBatchable for what it does not reproduce exactly (the caller, the runtime consumer,
    then rolls back its savepoint and applies the events one by one)."""
    for event in events:
        if any(c.account_id != event.account_id for c in event.cycles):
            raise NotBatchable("a cycle event names cycles of two accounts")
        uow.account_changed(event.account_id)
    changed = await uow.bill_cycles.upsert_many([c for e in events for c in e.cycles], now)
    accounts = {e.account_id for e in events}
    purchases = await uow.purchases.for_accounts(accounts)
    bought = {a: [p for p in purchases[a] if fees.started(p, now)] for a in accounts}
    buying = sorted(a for a in accounts if bought[a])
    if not buying:
        return []
    known = await uow.bill_cycles.for_accounts(buying)
    pending = await uow.purchases.start_fees_pending_of(buying, now)
    versions = await uow.catalog.activated(p.charge_offer_code for a in buying for p in bought[a])
    zones = await _time_zones(uow, buying)
    # Each account's cycles as they were before the batch (read after the upsert, which locked the
    # batch's cycles): without those it inserted, those it closed open again.
    stored = {c.bill_cycle_id: c for a in buying for c in known[a]}
    standing: dict[uuid.UUID, dict[uuid.UUID, BillCycle]] = {a: {} for a in buying}
    for cycle in stored.values():
        was = changed.get(cycle.bill_cycle_id)
        if was is None:
            standing[cycle.account_id][cycle.bill_cycle_id] = cycle
        elif was is False:
            standing[cycle.account_id][cycle.bill_cycle_id] = replace(cycle, status=BillCycleStatus.OPEN)
    due: list[Fee] = []
    for event in events:
        cycles = standing.get(event.account_id)
        if cycles is None:
            continue  # no started purchase: no fee
        for cycle in event.cycles:
            # What the event's upsert did: a new cycle is recorded as the event says (with the
            # fields stored: the first event's), a known one only ever closes.
            row = stored.get(cycle.bill_cycle_id)
            if row is None or row.account_id != event.account_id:
                raise NotBatchable(f"cycle {cycle.bill_cycle_id} is known under another account")
            current = cycles.get(cycle.bill_cycle_id)
            if current is None:
                cycles[cycle.bill_cycle_id] = replace(row, status=cycle.status)
            elif cycle.status is BillCycleStatus.CLOSED and current.status is not BillCycleStatus.CLOSED:
                cycles[cycle.bill_cycle_id] = replace(current, status=BillCycleStatus.CLOSED)
        due += _cycle_fees_due(
            bought[event.account_id],
            pending,
            versions,
            list(cycles.values()),
            {c.bill_cycle_id for c in event.cycles},
            zones[event.account_id],
            now,
        )
    return await charge_fees(uow, due, now)


@dataclass
class StartedPass:
    """What one pass of the fee loop did."""

    # Purchases whose start's fees are now charged (or found to be none).
    settled: int = 0
    # Started purchases with a fee waiting for a cycle, and those that failed: left for a later catch-up.
    left: set[uuid.UUID] = field(default_factory=set)
    charges: list[RatedCharge] = field(default_factory=list)


async def charge_started_purchases(uow: ChargingUnitOfWork, limit: int, skip: Iterable[uuid.UUID] = ()) -> StartedPass:
    """One pass of the fee loop, in one transaction: claims up to `limit` purchases whose start
    the clock has passed and whose start's fees are not charged yet (FOR UPDATE SKIP LOCKED, so
    replicas share the work; none of `skip`), and charges every fee of each that is due now (its
    one-time fees, the in-advance fees of the cycles open now...). A purchase whose fee waits for a
    cycle, or that fails (its own savepoint rolls back), stays pending and is reported in `left`
    (the fees of it that could be charged are)."""
    done = StartedPass()
    async with uow:
        now = uow.clock.now()
        claimed = await uow.purchases.claim_started(now, limit, skip)
        if not claimed:
            return done
        accounts = {p.account_id for p in claimed}
        cycles = await uow.bill_cycles.for_accounts(accounts)
        versions = await uow.catalog.activated(p.charge_offer_code for p in claimed)
        zones = await _time_zones(uow, accounts)
        settled: list[uuid.UUID] = []
        for purchase in claimed:
            mark = uow.checkpoint()
            try:
                async with uow.session.begin_nested():
                    due = fees.purchase_fees(
                        purchase,
                        versions[purchase.charge_offer_code],
                        cycles[purchase.account_id],
                        zones[purchase.account_id],
                        now,
                    )
                    charged = await charge_fees(uow, due.fees, now)
            except Exception:
                uow.discard_since(mark)
                log.exception("fees of a purchase failed", extra={"purchase_id": str(purchase.purchase_id)})
                done.left.add(purchase.purchase_id)
                continue
            done.charges.extend(charged)
            if due.waiting:
                # Charged when the cycle is known: its event charges it, or a later catch-up.
                done.left.add(purchase.purchase_id)
            else:
                settled.append(purchase.purchase_id)
        await uow.purchases.settle_start_fees(settled, now)
        await uow.commit()
    done.settled = len(settled)
    return done
