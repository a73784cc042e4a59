"""Use cases of bill cycles: closing the due ones and billing them (every replica's cycle closer),
and listing them."""

from __future__ import annotations

import dataclasses
import logging
import uuid
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from evolutivo_runtime.errors import NotFound
from prometheus_client import Counter

from evolutivo_billing.domain.bills import Bill
from evolutivo_billing.domain.cycles import BillCycle
from evolutivo_billing.domain.model import BillUnit
from evolutivo_billing.service_layer.bills import (
    BillPolicy,
    ClosedCycle,
    bill_closed_cycles,
    bill_cycle,
    series_to_lock,
)
from evolutivo_billing.service_layer.unit_of_work import BillingUnitOfWork

log = logging.getLogger(__name__)

CYCLES_CLOSED = Counter("evolutivo_billing_cycles_closed_total", "Bill cycles closed (and billed)")
BILLS_ISSUED = Counter("evolutivo_billing_bills_issued_total", "Bills issued by the cycle closer")
BILLS_SUPPRESSED = Counter("evolutivo_billing_bills_suppressed_total", "Zero-amount bills suppressed")
CYCLE_CLOSE_FAILURES = Counter("evolutivo_billing_cycle_close_failures_total", "Cycles whose closing raised")
CLOSE_TOGETHER_FALLBACKS = Counter(
    "evolutivo_billing_cycle_close_fallbacks_total",
    "Closer passes whose set-based close failed and that closed their cycles one by one",
)


@dataclass(frozen=True)
class ClosePass:
    """What one pass of the cycle closer did."""

    closed: int
    # Cycles whose closing raised: they stay open, and were logged.
    failed: frozenset[uuid.UUID] = frozenset()
    # Of the closed cycles' bills: issued, and suppressed (zero amount).
    issued: int = 0
    suppressed: int = 0
    # Whether the pass closed its cycles set-based (False: one by one, the per-cycle path).
    together: bool = False


async def close_due_cycles(
    uow: BillingUnitOfWork,
    late_usage_delay: timedelta,
    limit: int,
    skip: Collection[uuid.UUID] = (),
    policy: BillPolicy | None = None,
    wait: bool = False,
    together: bool = True,
) -> ClosePass:
    """One pass of the cycle closer: claims up to `limit` open cycles whose end plus
    `late_usage_delay` has passed on the unit of work's clock (row locks, `SKIP LOCKED`: replicas
    running passes at once claim different cycles), leaving out those in `skip`, and closes each
    one. Closing a cycle marks it CLOSED at now, brings a pending profile into force on its bill
    unit when it was changed before the cycle's end, opens the next cycle, bills the closed one and
    records BillCycleClosed, BillCycleOpened and BillIssued, all in this pass's transaction.

    Each unit has one open cycle, so a pass closes at most one cycle per unit: a unit that is
    several cycles behind (the clock jumped) closes one per pass, in order; the caller repeats
    passes while they close something.

    With `together` (the default) the pass closes and bills all its cycles set-based, a handful of
    statements for the whole pass (`_close_together`, docs/performance.md), in one savepoint. If
    that fails, the savepoint is rolled back and the pass falls back to the per-cycle path (the
    reference implementation, also used with `together=False`): each cycle closed in its own
    savepoint, so one that fails is logged, left open and reported in `failed` (for the caller to
    skip in its next passes) without holding back the others. Both make the same bills, numbers
    and events.

    With `wait`, the pass waits for a due cycle another transaction holds instead of skipping it,
    and claims only one (it holds nothing else while it waits, so it cannot deadlock): the
    ChargesCreated consumer share-locks the cycles it adds items to, and a busy account's cycle
    could otherwise be skipped at every check."""
    policy = policy or BillPolicy()
    async with uow:
        now = uow.clock.now()
        due = await uow.bill_cycles.claim_due(now - late_usage_delay, 1 if wait else limit, skip, wait)
        # The set-based path takes the number series only to number its bills (after reading and
        # building them), so passes running at once overlap all but their numbering and commit.
        done = await _close_together(uow, due, now, late_usage_delay, policy) if together and due else None
        if done is None:
            # Passes running at once take the number series in one order: they wait, never deadlock.
            await uow.bill_numbers.lock(series_to_lock(policy, due))
            done = await _close_one_by_one(uow, due, now, late_usage_delay, policy)
        await uow.commit()
    CYCLES_CLOSED.inc(done.closed)
    BILLS_ISSUED.inc(done.issued)
    BILLS_SUPPRESSED.inc(done.suppressed)
    CYCLE_CLOSE_FAILURES.inc(len(done.failed))
    if done.closed:
        log.info(
            "bill cycles closed and billed",
            extra={
                "closed": done.closed,
                "bills_issued": done.issued,
                "bills_suppressed": done.suppressed,
                "failed": len(done.failed),
                "together": done.together,
            },
        )
    return done


async def _close_together(
    uow: BillingUnitOfWork, due: Sequence[BillCycle], now: datetime, late_usage_delay: timedelta, policy: BillPolicy
) -> ClosePass | None:
    """Closes and bills every cycle of the pass set-based, in one savepoint: the units locked in
    one query, the cycles closed in one statement and the next ones opened in another, then
    `bill_closed_cycles`. None when anything fails: the savepoint is rolled back, its events
    dropped, and the caller closes the cycles one by one (which isolates the one that fails)."""
    mark = uow.checkpoint()
    # The per-cycle fallback starts from the cycles as claimed: work on copies.
    cycles = [dataclasses.replace(c, events=[]) for c in due]
    try:
        async with uow.session.begin_nested():
            units = {u.bill_unit_id: u for u in await uow.bill_units.many_for_update({c.bill_unit_id for c in cycles})}
            closed: list[ClosedCycle] = []
            changed: list[BillUnit] = []
            for cycle in cycles:
                unit = units.get(cycle.bill_unit_id)
                if unit is None:  # the foreign key rules it out
                    raise LookupError(f"bill unit {cycle.bill_unit_id} of cycle {cycle.bill_cycle_id} does not exist")
                pending_before = unit.pending_profile
                profile = unit.profile
                following = cycle.close(unit, now, late_usage_delay)
                if unit.pending_profile != pending_before:
                    changed.append(unit)
                closed.append(ClosedCycle(unit, profile, cycle, following))
            await uow.bill_cycles.save_closed_many(cycles)
            await uow.bill_cycles.add_many([c.following for c in closed])
            for unit in changed:
                await uow.bill_units.save(unit)
            bills = await bill_closed_cycles(uow, closed, now, policy)
    except Exception:
        uow.discard_since(mark)
        CLOSE_TOGETHER_FALLBACKS.inc()
        log.warning(
            "closing the pass's bill cycles together failed; closing them one by one",
            exc_info=True,
            extra={"cycles": len(due)},
        )
        return None
    suppressed = sum(1 for b in bills if b.suppressed)
    return ClosePass(len(bills), frozenset(), len(bills) - suppressed, suppressed, together=True)


async def _close_one_by_one(
    uow: BillingUnitOfWork, due: Sequence[BillCycle], now: datetime, late_usage_delay: timedelta, policy: BillPolicy
) -> ClosePass:
    """The per-cycle path (the reference implementation): each cycle closed and billed in its own
    savepoint; one that fails is logged, stays open and is reported in `failed`."""
    closed = issued = suppressed = 0
    failed: set[uuid.UUID] = set()
    for cycle in due:
        mark = uow.checkpoint()
        try:
            async with uow.session.begin_nested():
                bill = await _close(uow, cycle, now, late_usage_delay, policy)
        except Exception:
            # The savepoint rolled back this cycle's writes; forget its events too.
            uow.discard_since(mark)
            failed.add(cycle.bill_cycle_id)
            log.exception(
                "closing a bill cycle failed; it stays open",
                extra={"bill_cycle_id": str(cycle.bill_cycle_id), "bill_unit_id": str(cycle.bill_unit_id)},
            )
            continue
        closed += 1
        if bill.suppressed:
            suppressed += 1
        else:
            issued += 1
    return ClosePass(closed, frozenset(failed), issued, suppressed)


async def any_due(uow: BillingUnitOfWork, late_usage_delay: timedelta, skip: Collection[uuid.UUID] = ()) -> bool:
    """Whether a cycle is due (to close), locked by another transaction or not."""
    async with uow:
        return await uow.bill_cycles.any_due(uow.clock.now() - late_usage_delay, skip)


async def _close(
    uow: BillingUnitOfWork, cycle: BillCycle, now: datetime, late_usage_delay: timedelta, policy: BillPolicy
) -> Bill:
    unit = await uow.bill_units.get(cycle.bill_unit_id, for_update=True)
    if unit is None:  # the foreign key rules it out
        raise LookupError(f"bill unit {cycle.bill_unit_id} of cycle {cycle.bill_cycle_id} does not exist")
    pending_before = unit.pending_profile
    # The profile the cycle ran under: its bill's payment terms (closing may bring a pending one in).
    profile = unit.profile
    following = cycle.close(unit, now, late_usage_delay)
    await uow.bill_cycles.save_closed(cycle)
    await uow.bill_cycles.add(following)
    if unit.pending_profile != pending_before:
        await uow.bill_units.save(unit)
    bill = await bill_cycle(uow, unit, profile, cycle, now, policy)
    uow.track(cycle)
    uow.track(following)
    uow.track(bill)
    return bill


async def list_bill_cycles(
    uow: BillingUnitOfWork, account_id: uuid.UUID, page_size: int, before: int | None
) -> tuple[list[BillCycle], int | None]:
    """One page of the account's cycles, newest first, and the sequence the next page starts
    below (None on the last page). NotFound when billing has no bill unit for the account."""
    async with uow:
        if await uow.bill_units.for_account(account_id) is None:
            raise NotFound("account", str(account_id))
        cycles = await uow.bill_cycles.list_for_account(account_id, before, page_size + 1)
    if len(cycles) > page_size:
        page = cycles[:page_size]
        return page, page[-1].sequence
    return cycles, None
