"""Use cases of bill cycles: closing the due ones and billing them (every replica's cycle closer),
and listing them."""

from __future__ import annotations

import logging
import uuid
from collections.abc import Collection
from dataclasses import dataclass
from datetime import datetime, timedelta

from evolutivo_runtime.errors import NotFound
from prometheus_client import Counter

from evolutivo_billing.domain.bills import Bill
from evolutivo_billing.domain.cycles import BillCycle
from evolutivo_billing.service_layer.bills import BillPolicy, bill_cycle, series_to_lock
from evolutivo_billing.service_layer.unit_of_work import BillingUnitOfWork

log = logging.getLogger(__name__)

CYCLES_CLOSED = Counter("evolutivo_billing_cycles_closed_total", "Bill cycles closed (and billed)")
BILLS_ISSUED = Counter("evolutivo_billing_bills_issued_total", "Bills issued by the cycle closer")
BILLS_SUPPRESSED = Counter("evolutivo_billing_bills_suppressed_total", "Zero-amount bills suppressed")
CYCLE_CLOSE_FAILURES = Counter("evolutivo_billing_cycle_close_failures_total", "Cycles whose closing raised")


@dataclass(frozen=True)
class ClosePass:
    """What one pass of the cycle closer did."""

    closed: int
    # Cycles whose closing raised: they stay open, and were logged.
    failed: frozenset[uuid.UUID] = frozenset()
    # Of the closed cycles' bills: issued, and suppressed (zero amount).
    issued: int = 0
    suppressed: int = 0


async def close_due_cycles(
    uow: BillingUnitOfWork,
    late_usage_delay: timedelta,
    limit: int,
    skip: Collection[uuid.UUID] = (),
    policy: BillPolicy | None = None,
    wait: bool = False,
) -> ClosePass:
    """One pass of the cycle closer: claims up to `limit` open cycles whose end plus
    `late_usage_delay` has passed on the unit of work's clock (row locks, `SKIP LOCKED`: replicas
    running passes at once claim different cycles), leaving out those in `skip`, and closes each
    one. Closing a cycle marks it CLOSED at now, brings a pending profile into force on its bill
    unit when it was changed before the cycle's end, opens the next cycle and records
    BillCycleClosed and BillCycleOpened, all in this pass's transaction.

    Each unit has one open cycle, so a pass closes at most one cycle per unit: a unit that is
    several cycles behind (the clock jumped) closes one per pass, in order; the caller repeats
    passes while they close something. Each cycle is closed in its own savepoint, so one that
    fails is logged, left open and reported in `failed` (for the caller to skip in its next
    passes) without holding back the others.

    With `wait`, the pass waits for a due cycle another transaction holds instead of skipping it,
    and claims only one (it holds nothing else while it waits, so it cannot deadlock): the
    ChargesCreated consumer share-locks the cycles it adds items to, and a busy account's cycle
    could otherwise be skipped at every check."""
    policy = policy or BillPolicy()
    closed = issued = suppressed = 0
    failed: set[uuid.UUID] = set()
    async with uow:
        now = uow.clock.now()
        due = await uow.bill_cycles.claim_due(now - late_usage_delay, 1 if wait else limit, skip, wait)
        # Passes running at once take the number series in one order: they wait, never deadlock.
        await uow.bill_numbers.lock(series_to_lock(policy, due))
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
        await uow.commit()
    CYCLES_CLOSED.inc(closed)
    BILLS_ISSUED.inc(issued)
    BILLS_SUPPRESSED.inc(suppressed)
    CYCLE_CLOSE_FAILURES.inc(len(failed))
    if closed:
        log.info(
            "bill cycles closed and billed",
            extra={"closed": closed, "bills_issued": issued, "bills_suppressed": suppressed, "failed": len(failed)},
        )
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
