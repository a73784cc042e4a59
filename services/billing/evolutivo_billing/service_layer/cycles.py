"""Use cases of bill cycles: closing the due ones (every replica's cycle closer) and listing them."""

from __future__ import annotations

import logging
import uuid
from collections.abc import Collection
from dataclasses import dataclass
from datetime import datetime, timedelta

from evolutivo_runtime.errors import NotFound

from evolutivo_billing.domain.cycles import BillCycle
from evolutivo_billing.service_layer.unit_of_work import BillingUnitOfWork

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ClosePass:
    """What one pass of the cycle closer did."""

    closed: int
    # Cycles whose closing raised: they stay open, and were logged.
    failed: frozenset[uuid.UUID] = frozenset()


async def close_due_cycles(
    uow: BillingUnitOfWork, late_usage_delay: timedelta, limit: int, skip: Collection[uuid.UUID] = ()
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
    passes) without holding back the others."""
    closed = 0
    failed: set[uuid.UUID] = set()
    async with uow:
        now = uow.clock.now()
        for cycle in await uow.bill_cycles.claim_due(now - late_usage_delay, limit, skip):
            mark = uow.checkpoint()
            try:
                async with uow.session.begin_nested():
                    await _close(uow, cycle, now, late_usage_delay)
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
        await uow.commit()
    if closed:
        log.info("bill cycles closed", extra={"closed": closed})
    return ClosePass(closed, frozenset(failed))


async def _close(uow: BillingUnitOfWork, cycle: BillCycle, now: datetime, late_usage_delay: timedelta) -> None:
    unit = await uow.bill_units.get(cycle.bill_unit_id, for_update=True)
    if unit is None:  # the foreign key rules it out
        raise LookupError(f"bill unit {cycle.bill_unit_id} of cycle {cycle.bill_cycle_id} does not exist")
    pending_before = unit.pending_profile
    following = cycle.close(unit, now, late_usage_delay)
    await uow.bill_cycles.save_closed(cycle)
    await uow.bill_cycles.add(following)
    if unit.pending_profile != pending_before:
        await uow.bill_units.save(unit)
    uow.track(cycle)
    uow.track(following)


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
