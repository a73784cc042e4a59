"""Use cases of bill items and bills: charges received from charging, the bill of a closing
cycle (run by the cycle closer, in the transaction that closes the cycle), bill now, threshold
and trial bills, and reading bills.

Lock order (docs/billing.md, "Other triggers"), which every path follows so none deadlocks: a
bill cycle (the closer's exclusive claim, bill now's and the threshold biller's lock of the unit's
open cycle, or the ChargesCreated consumer's share lock on it), then the bill unit, then the bill
number series (taken to number, in key order), then bills and credits. The closer's per-cycle
fallback takes the series right after its cycles, before their units."""

from __future__ import annotations

import collections
import logging
import uuid
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime
from zoneinfo import ZoneInfo

from evolutivo_runtime.errors import FailedPrecondition, NotFound
from prometheus_client import Counter

from evolutivo_billing.domain.bills import (
    Bill,
    BillItem,
    BillListPosition,
    BillStatus,
    BillTrigger,
    Charge,
    ItemListPosition,
    Period,
    TaxRates,
    last_seq,
)
from evolutivo_billing.domain.credit_notes import DEFAULT_NUMBER_FORMAT
from evolutivo_billing.domain.cycles import BillCycle, BillCycleStatus
from evolutivo_billing.domain.model import BillingProfile, BillUnit
from evolutivo_billing.domain.numbering import NumberFormat
from evolutivo_billing.service_layer.payments import apply_credit
from evolutivo_billing.service_layer.unit_of_work import BillingUnitOfWork

log = logging.getLogger(__name__)

# Reads of a unit's open cycle while a closer is replacing it (see BillCycleRepository.open_for_unit).
OPEN_CYCLE_ATTEMPTS = 5
# The set-based bill run bills a pass's cycles in groups of at most this many unbilled items (a
# cycle with more is a group of its own): what it holds in memory at once (bill_closed_cycles).
BILL_RUN_GROUP_ITEMS = 20_000

BILLS_ON_DEMAND = Counter("evolutivo_billing_bills_on_demand_total", "Bills issued by BillNow")
BILLS_THRESHOLD = Counter("evolutivo_billing_bills_threshold_total", "Bills issued on reaching the threshold")


@dataclass(frozen=True)
class BillPolicy:
    """How bills are built and issued (BILLING_TAX_RATES, BILLING_NUMBER_FORMAT,
    BILLING_SUPPRESS_ZERO_BILLS), and how long BillNow waits for a lock."""

    tax_rates: TaxRates = field(default_factory=TaxRates)
    numbering: NumberFormat = field(default_factory=NumberFormat)
    suppress_zero_bills: bool = False
    # BILLING_CREDIT_NOTE_NUMBER_FORMAT: credit notes' own gapless series.
    credit_note_numbering: NumberFormat = field(default_factory=lambda: NumberFormat(DEFAULT_NUMBER_FORMAT))
    # BILLING_BILL_NOW_LOCK_TIMEOUT_SECONDS: the longest BillNow waits for a lock.
    bill_now_lock_timeout: float = 10.0


class NoOpenCycle(LookupError):
    """A bill unit without an open cycle (never once it exists): the charges wait and are retried."""


async def record_charges(uow: BillingUnitOfWork, charges: Sequence[Charge]) -> int:
    """On ChargesCreated: each charge billing has not received becomes an unbilled item of its
    bill unit; returns how many. A charge goes into its own cycle while that cycle is open, else
    (closed, or not a cycle billing knows for the account) into the unit's open cycle, flagged
    late when its event time is before that cycle, and labelled with the period its event time
    falls in. The cycles are share-locked until the transaction ends: a closer closing one is
    waited for (its items then go to the cycle it opened), one not yet closing it skips it until
    the charges are in, so an item never lands in a cycle after its bill.

    Runs inside the consumer's transaction (the caller commits). A charge for an account billing
    has no bill unit for, in another currency than the account's, or not rounded to the minor
    unit, raises: the event is retried, then dead-lettered (replayable)."""
    now = uow.clock.now()
    known = await uow.bill_items.known({c.charge_id for c in charges})
    by_account: dict[uuid.UUID, dict[uuid.UUID, Charge]] = defaultdict(dict)
    for charge in charges:
        if charge.charge_id not in known:
            by_account[charge.account_id].setdefault(charge.charge_id, charge)
    items: list[BillItem] = []
    # The units, and the cycles the charges were rated in, each in one statement for all accounts.
    units = await uow.bill_units.for_accounts(by_account.keys())
    missing = sorted(set(by_account) - set(units))
    if missing:
        raise LookupError(f"billing has no bill unit for account {missing[0]}")
    cycles = await uow.bill_cycles.get_many(
        {c.bill_cycle_id for fresh in by_account.values() for c in fresh.values() if c.bill_cycle_id is not None},
        for_share=True,
    )
    for account_id in sorted(by_account):
        unit = units[account_id]
        fresh = list(by_account[account_id].values())
        targets: dict[uuid.UUID | None, tuple[BillCycle, BillCycle | None]] = {}
        for cycle_id in sorted({c.bill_cycle_id for c in fresh}, key=str):
            rated = cycles.get(cycle_id) if cycle_id is not None else None
            if rated is not None and rated.bill_unit_id != unit.bill_unit_id:
                rated = None  # another unit's cycle: as if unknown
            if rated is not None and rated.status is BillCycleStatus.OPEN:
                targets[cycle_id] = (rated, rated)
            else:
                targets[cycle_id] = (await _open_cycle(uow, unit), rated)
        for charge in fresh:
            target, rated = targets[charge.bill_cycle_id]
            period = await _period(uow, unit, charge.event_time, target, rated)
            items.append(BillItem.place(charge, unit, target, period, now))
    inserted = await uow.bill_items.add_all(items)
    for account_id in sorted({i.charge.account_id for i in items if i.charge_id in inserted}):
        await _check_threshold(uow, units[account_id], now)
    late = sum(1 for i in items if i.late and i.charge_id in inserted)
    if inserted:
        log.debug("charges received", extra={"items": len(inserted), "late": late})
    return len(inserted)


async def _check_threshold(uow: BillingUnitOfWork, unit: BillUnit, now: datetime) -> None:
    """Marks the unit's threshold reached when its unbilled amount (before tax; this
    transaction's items included) reaches it; the threshold biller issues the bill (at once: it is
    notified when this transaction commits). Marked once until that bill clears the mark."""
    if unit.threshold_amount is None or unit.threshold_reached_time is not None:
        return
    if await uow.bill_items.unbilled_amount(unit.bill_unit_id) >= unit.threshold_amount:
        if await uow.thresholds.mark_reached(unit.bill_unit_id, now):
            log.info("threshold reached", extra={"bill_unit_id": str(unit.bill_unit_id)})


async def _open_cycle(uow: BillingUnitOfWork, unit: BillUnit, to_bill: bool = False) -> BillCycle:
    """The unit's open cycle, share-locked (to add items to it) or, `to_bill`, locked against
    those share locks (to bill its items while it goes on)."""
    for _ in range(OPEN_CYCLE_ATTEMPTS):
        cycle = await uow.bill_cycles.open_for_unit(unit.bill_unit_id, for_share=not to_bill, for_update=to_bill)
        if cycle is not None:
            return cycle
    raise NoOpenCycle(f"bill unit {unit.bill_unit_id} has no open cycle")


async def _period(
    uow: BillingUnitOfWork, unit: BillUnit, event_time: datetime, target: BillCycle, rated: BillCycle | None
) -> Period:
    """The period an event time falls in: the unit's cycle holding it, else its local day."""
    for cycle in (target, rated):
        if cycle is not None and cycle.start_time <= event_time < cycle.end_time:
            return Period.of_cycle(cycle)
    found = await uow.bill_cycles.containing(unit.bill_unit_id, event_time)
    return Period.of_cycle(found) if found is not None else Period.of_day(event_time, unit.time_zone)


async def hold_open_cycle(uow: BillingUnitOfWork, bill_unit_id: uuid.UUID) -> None:
    """Share-locks the unit's open cycle as `record_charges` does, for a caller that adds items
    after locks of its own (a late fee, under its collections case): the cycle comes first in
    the lock order."""
    unit = await uow.bill_units.get(bill_unit_id)
    if unit is None:
        raise NotFound("bill unit", str(bill_unit_id))
    await _open_cycle(uow, unit)


def series_to_lock(policy: BillPolicy, cycles: Sequence[BillCycle]) -> set[str]:
    """The number series the bills of these cycles may be numbered from (by their issue dates)."""
    return {policy.numbering.series(c.end_date) for c in cycles}


async def bill_cycle(
    uow: BillingUnitOfWork, unit: BillUnit, profile: BillingProfile, cycle: BillCycle, now: datetime, policy: BillPolicy
) -> Bill:
    """The bill of a cycle being closed, in the closing transaction: every unbilled item of the
    cycle goes on it, grouped into lines, taxed, created DRAFT and issued with the next number of
    its series, or suppressed when it totals zero and the policy says so. The caller tracks it.

    `profile` is the profile the cycle ran under. The unique (bill unit, cycle) key makes a second
    bill for the cycle fail, and the number is taken in this transaction: a rollback gives it back."""
    items = await uow.bill_items.unbilled_in_cycle(cycle)
    bill = Bill.for_cycle(unit, cycle, profile, items, policy.tax_rates, now)
    return await _issue(uow, unit, bill, now, policy)


@dataclass(frozen=True)
class ClosedCycle:
    """A cycle the closer has just closed, as the set-based bill run bills it: the unit (locked),
    the profile the cycle ran under (its bill's payment terms) and the cycle opened in its place."""

    unit: BillUnit
    profile: BillingProfile
    cycle: BillCycle
    following: BillCycle


async def bill_closed_cycles(
    uow: BillingUnitOfWork, closed: Sequence[ClosedCycle], now: datetime, policy: BillPolicy
) -> list[Bill]:
    """`bill_cycle` for many cycles closed in one pass, set-based (docs/performance.md): the items of
    all the cycles in one query, the statements of all their units in one, a block of numbers
    per series in one, the bills, lines (naming their charges) and taxes inserted together (the
    items are not written: the cycles are closed); then, for the accounts that have credit (found
    in one query), `apply_credit` bill by bill. Each bill is built by the same domain code as
    `bill_cycle` and numbered in the order of `closed` (the claim order, as the per-cycle path
    numbers them), so the bills and numbers are the ones the per-cycle path would make.

    So that a pass of heavy accounts does not hold all their items in memory at once, the cycles
    are billed in consecutive groups of at most BILL_RUN_GROUP_ITEMS unbilled items (a cycle with
    more is a group of its own), one group after the other, in order. The pass's items are read
    first up to one more than a group: most passes hold far fewer, and are then one group without
    counting anything; only a pass that holds more counts each cycle's items (one query) to group them.

    Tracks, cycle by cycle in order, the closed cycle, the one opened and the bill (the per-cycle
    path's order, so the events reach the outbox in the same order). Runs in the caller's
    transaction (a savepoint), which holds the cycles and the units; the series are taken here, to number."""
    cycle_ids = [c.cycle.bill_cycle_id for c in closed]
    # Every series the pass may number from, locked at its first numbering in key order (a later
    # group must not take a series ordered before one the pass holds: two passes could deadlock).
    series = series_to_lock(policy, [c.cycle for c in closed])
    read = await uow.bill_items.unbilled_in_cycles(cycle_ids, limit=BILL_RUN_GROUP_ITEMS + 1)
    if sum(map(len, read.values())) <= BILL_RUN_GROUP_ITEMS:
        return await _bill_group(uow, closed, now, policy, series, read)
    del read
    counts = await uow.bill_items.unbilled_counts(cycle_ids)
    built: list[Bill] = []
    group: list[ClosedCycle] = []
    items = 0
    for c in closed:
        count = counts.get(c.cycle.bill_cycle_id, 0)
        if group and items + count > BILL_RUN_GROUP_ITEMS:
            built += await _bill_group(uow, group, now, policy, series)
            group, items, series = [], 0, set()
        group.append(c)
        items += count
    if group:
        built += await _bill_group(uow, group, now, policy, series)
    return built


async def _bill_group(
    uow: BillingUnitOfWork,
    closed: Sequence[ClosedCycle],
    now: datetime,
    policy: BillPolicy,
    lock: set[str],
    items: dict[uuid.UUID, list[BillItem]] | None = None,
) -> list[Bill]:
    """Bills one group of a pass; `lock`: the series to lock before numbering (the pass's first
    group locks all the pass may use, when more than the one `take` locks); `items`: the group's
    unbilled items by cycle, when read already."""
    if items is None:
        items = await uow.bill_items.unbilled_in_cycles([c.cycle.bill_cycle_id for c in closed])
    statements = await uow.bills.statements([(c.unit.bill_unit_id, c.unit.account_id) for c in closed])
    built: list[Bill] = []
    for c in closed:
        bill = Bill.for_cycle(c.unit, c.cycle, c.profile, items.pop(c.cycle.bill_cycle_id, ()), policy.tax_rates, now)
        bill.statement = statements[c.unit.bill_unit_id]
        built.append(bill)
    del items
    numbered = [b for b in built if not (b.is_zero and policy.suppress_zero_bills)]
    series_of = {b.bill_id: policy.numbering.series(b.issue_date) for b in numbered}
    if len(lock) > 1:
        await uow.bill_numbers.lock(lock)
    next_number = await uow.bill_numbers.take(collections.Counter(series_of.values()))
    for bill in built:
        series = series_of.get(bill.bill_id)
        if series is None:
            bill.suppress()
            continue
        bill.issue(policy.numbering.number(bill.issue_date, next_number[series]), now)
        next_number[series] += 1
    await uow.bills.add_many(built)
    owing = {b.account_id for b in built if b.status is BillStatus.ISSUED and b.open_amount > 0}
    with_credit = await uow.bills.accounts_with_credit(owing)
    for c, bill in zip(closed, built, strict=True):
        # A bill without credit to take is stored as apply_credit would leave it: nothing to do.
        if bill.account_id in with_credit:
            await apply_credit(uow, c.unit, bill, now)
        _warn_unknown_tax_codes(bill, policy)
        uow.track(c.cycle)
        uow.track(c.following)
        uow.track(bill)
    return built


def _warn_unknown_tax_codes(bill: Bill, policy: BillPolicy) -> None:
    unknown = sorted(t.tax_code for t in bill.taxes if not policy.tax_rates.knows(t.tax_code))
    if unknown:
        log.warning(
            "tax codes without a rate taxed at the standard rate",
            extra={"bill_id": str(bill.bill_id), "tax_codes": unknown},
        )


async def _issue(uow: BillingUnitOfWork, unit: BillUnit, bill: Bill, now: datetime, policy: BillPolicy) -> Bill:
    """A DRAFT bill built from unbilled items, with the account's statement, issued with the next
    number of its series (or suppressed when it totals zero and the policy says so), stored with
    its items, and paid by the account's credit: all in the caller's transaction, which holds the
    bill unit (and takes the series here, or took it before)."""
    bill.statement = await uow.bills.statement(unit.bill_unit_id, unit.account_id)
    if bill.is_zero and policy.suppress_zero_bills:
        bill.suppress()
    else:
        series = policy.numbering.series(bill.issue_date)
        bill.issue(policy.numbering.number(bill.issue_date, await uow.bill_numbers.next(series)), now)
    await uow.bills.add(bill)
    # The account's credit (payments no open bill took, credit notes) pays it, in this same transaction.
    await apply_credit(uow, unit, bill, now)
    _warn_unknown_tax_codes(bill, policy)
    return bill


def _today(unit: BillUnit, now: datetime) -> date:
    return now.astimezone(ZoneInfo(unit.time_zone)).date()


async def _bill_unbilled(
    uow: BillingUnitOfWork,
    unit: BillUnit,
    cycle: BillCycle,
    now: datetime,
    policy: BillPolicy,
    trigger: BillTrigger,
    request_id: uuid.UUID | None = None,
) -> Bill | None:
    """The bill of the unit's unbilled items while its cycle goes on (bill now, threshold), issued
    today in the unit's time zone under the profile in force; None when nothing is unbilled. The
    caller holds the open cycle (`_open_cycle(..., to_bill=True)`) and the unit. The cycle is
    then billed through the last item taken: nothing is written to the items."""
    items = await uow.bill_items.unbilled_in_cycle(cycle)
    if not items:
        return None
    bill = Bill.build(unit, cycle, unit.profile, items, policy.tax_rates, now, trigger, _today(unit, now), request_id)
    await _issue(uow, unit, bill, now, policy)
    previous = cycle.billed_through_seq
    cycle.bill_through(last_seq(items))
    await uow.bill_cycles.save_billed_through(cycle, previous)
    uow.track(bill)
    return bill


async def bill_now(uow: BillingUnitOfWork, account_id: uuid.UUID, request_id: uuid.UUID, policy: BillPolicy) -> Bill:
    """BillNow: a bill at once for the account's unbilled items, numbered from the same series as
    the cycle bills; the cycle goes on and its bill holds what comes after. A retry with the same
    request id returns the first bill. FailedPrecondition when nothing is unbilled. A lock held
    past `policy.bill_now_lock_timeout` (the cycle by a closer billing it, say) fails the call
    (55P03, answered ABORTED) rather than keep the caller waiting."""
    async with uow:
        await uow.limit_lock_waits(policy.bill_now_lock_timeout)
        unit = await uow.bill_units.for_account(account_id)
        if unit is None:
            raise NotFound("account", str(account_id))
        done = await uow.bills.by_request(unit.bill_unit_id, request_id)
        if done is not None:
            return done
        # The open cycle (locked: a closer closing it and consumers adding items to it are waited
        # for), then the unit: the order the ChargesCreated consumer takes them in; the number
        # series comes last.
        cycle = await _open_cycle(uow, unit, to_bill=True)
        locked = await uow.bill_units.get(unit.bill_unit_id, for_update=True)
        assert locked is not None, "a bill unit is never deleted"
        # A retry racing the first call waited for it on the unit.
        done = await uow.bills.by_request(unit.bill_unit_id, request_id)
        if done is not None:
            return done
        now = uow.clock.now()
        bill = await _bill_unbilled(uow, locked, cycle, now, policy, BillTrigger.ON_DEMAND, request_id)
        if bill is None:
            raise FailedPrecondition("NOTHING_TO_BILL", f"account {account_id} has no unbilled charges")
        await uow.commit()
    BILLS_ON_DEMAND.inc()
    log.info("bill issued on demand", extra={"bill_id": str(bill.bill_id), "account_id": str(account_id)})
    return bill


async def bill_threshold(uow: BillingUnitOfWork, bill_unit_id: uuid.UUID, policy: BillPolicy) -> Bill | None:
    """The threshold bill of one unit marked by the ChargesCreated consumer: the mark is cleared
    and, if the unbilled amount still reaches the threshold (the cycle's bill or a bill now may
    have taken the items meanwhile), a bill of its unbilled items is issued; the cycle goes on.
    One unit per transaction (the series is taken last, after the unit's cycle and unit). A unit
    whose open cycle or unit another transaction holds (a consumer adding items to it, a closer
    closing it) is left marked for the next pass (SKIP LOCKED): a busy account does not hold up
    the pass, nor wait for share locks that keep coming. Returns the bill, if any."""
    async with uow:
        unit = await uow.bill_units.get(bill_unit_id)
        if unit is None or unit.threshold_reached_time is None:
            return None
        cycle = await uow.bill_cycles.open_for_unit(bill_unit_id, for_update=True, skip_locked=True)
        if cycle is None:
            return None
        if not await uow.thresholds.claim([bill_unit_id]):
            return None
        locked = await uow.bill_units.get(bill_unit_id)
        assert locked is not None, "a bill unit is never deleted"
        await uow.thresholds.clear(bill_unit_id)
        bill = None
        threshold = locked.threshold_amount
        if threshold is not None and await uow.bill_items.unbilled_amount(locked.bill_unit_id) >= threshold:
            bill = await _bill_unbilled(uow, locked, cycle, uow.clock.now(), policy, BillTrigger.THRESHOLD)
        await uow.commit()
    if bill is not None:
        BILLS_THRESHOLD.inc()
        log.info("threshold bill issued", extra={"bill_id": str(bill.bill_id), "bill_unit_id": str(bill_unit_id)})
    return bill


async def bill_thresholds(uow: Callable[[], BillingUnitOfWork], policy: BillPolicy, limit: int) -> int:
    """One pass of the threshold biller: the bill of each unit marked (up to `limit`), one
    transaction each; a unit whose bill fails stays marked and is retried. Returns bills issued."""
    async with uow() as reader:
        due = await reader.thresholds.due(limit)
    issued = 0
    for bill_unit_id, _ in due:
        try:
            issued += await bill_threshold(uow(), bill_unit_id, policy) is not None
        except Exception:
            log.exception("threshold bill failed; retried later", extra={"bill_unit_id": str(bill_unit_id)})
    return issued


async def preview_bill(uow: BillingUnitOfWork, account_id: uuid.UUID, policy: BillPolicy) -> Bill:
    """A trial bill: what BillNow would issue now (DRAFT, no number, with the credit it would
    take), read in a transaction that writes nothing and is rolled back."""
    async with uow:
        unit = await uow.bill_units.for_account(account_id)
        if unit is None:
            raise NotFound("account", str(account_id))
        cycle = await uow.bill_cycles.open_for_unit(unit.bill_unit_id)
        if cycle is None:
            raise NoOpenCycle(f"bill unit {unit.bill_unit_id} has no open cycle")
        # The cycle's mark and its items in one statement: a bill now committing in between
        # cannot leave the preview with items it just took.
        items = await uow.bill_items.list_unbilled(unit.bill_unit_id, None, None)
        now = uow.clock.now()
        bill = Bill.build(
            unit, cycle, unit.profile, items, policy.tax_rates, now, BillTrigger.ON_DEMAND, _today(unit, now)
        )
        bill.statement = await uow.bills.statement(unit.bill_unit_id, unit.account_id)
        if bill.total > 0:
            credit = await uow.payments.credit_total(account_id) + await uow.credit_notes.credit_total(account_id)
            bill.credit_applied = min(credit, bill.total)
        return bill


async def get_bill(uow: BillingUnitOfWork, bill_id: uuid.UUID) -> Bill:
    async with uow:
        bill = await uow.bills.get(bill_id)
        if bill is None:
            raise NotFound("bill", str(bill_id))
        return bill


async def list_bills(
    uow: BillingUnitOfWork, account_id: uuid.UUID, page_size: int, before: BillListPosition | None
) -> tuple[list[Bill], BillListPosition | None]:
    """One page of the account's bills, newest first, and where the next page starts (None on
    the last page). NotFound when billing has no bill unit for the account."""
    async with uow:
        if await uow.bill_units.for_account(account_id) is None:
            raise NotFound("account", str(account_id))
        found = await uow.bills.list_for_account(account_id, before, page_size + 1)
    if len(found) > page_size:
        page = found[:page_size]
        last = page[-1]
        return page, BillListPosition(last.issue_date, last.create_time, last.bill_id)
    return found, None


async def list_unbilled_items(
    uow: BillingUnitOfWork, account_id: uuid.UUID, page_size: int, after: ItemListPosition | None
) -> tuple[list[BillItem], ItemListPosition | None]:
    """One page of the account's unbilled items, oldest event time first. NotFound when billing
    has no bill unit for the account."""
    async with uow:
        unit = await uow.bill_units.for_account(account_id)
        if unit is None:
            raise NotFound("account", str(account_id))
        found = await uow.bill_items.list_unbilled(unit.bill_unit_id, after, page_size + 1)
    if len(found) > page_size:
        page = found[:page_size]
        last = page[-1]
        return page, ItemListPosition(last.charge.event_time, last.charge_id)
    return found, None
