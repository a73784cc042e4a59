"""Loads and stores bill units and their cycles."""

from __future__ import annotations

import uuid
from collections.abc import Collection, Sequence
from datetime import datetime
from typing import Any

from evolutivo_runtime.bulk import insert_rows
from sqlalchemy import DateTime, Uuid, bindparam, select, text, tuple_, update
from sqlalchemy.dialects.postgresql import ARRAY, insert
from sqlalchemy.ext.asyncio import AsyncSession

from evolutivo_billing.adapters.bills_repository import _any_of
from evolutivo_billing.adapters.orm import bill_cycles, bill_units
from evolutivo_billing.domain.cycles import BillCycle, BillCycleStatus
from evolutivo_billing.domain.model import AccountStatus, BillingFrequency, BillingProfile, BillUnit, ListPosition


class BillUnitRepository:
    def __init__(self, session: AsyncSession) -> None:
        self._session = session

    async def add(self, unit: BillUnit) -> bool:
        """Adds the account's bill unit unless it has one; False when it already had."""
        t = bill_units
        result = await self._session.execute(
            insert(t)
            .values(bill_unit_id=unit.bill_unit_id, account_id=unit.account_id, **_changeable(unit))
            .on_conflict_do_nothing(index_elements=[t.c.account_id])
            .returning(t.c.bill_unit_id)
        )
        return result.first() is not None

    async def get(self, bill_unit_id: uuid.UUID, for_update: bool = False) -> BillUnit | None:
        """The bill unit; with `for_update`, locked until the transaction ends."""
        query = select(bill_units).where(bill_units.c.bill_unit_id == bill_unit_id)
        if for_update:
            query = query.with_for_update()
        row = (await self._session.execute(query)).first()
        return _unit(row._mapping) if row else None

    async def for_account(self, account_id: uuid.UUID, for_update: bool = False) -> BillUnit | None:
        """The account's bill unit; with `for_update`, locked until the transaction ends."""
        query = select(bill_units).where(bill_units.c.account_id == account_id)
        if for_update:
            query = query.with_for_update()
        row = (await self._session.execute(query)).first()
        return _unit(row._mapping) if row else None

    async def for_accounts(self, account_ids: Collection[uuid.UUID]) -> dict[uuid.UUID, BillUnit]:
        """The bill units of these accounts (those that have one), by account, in one statement."""
        if not account_ids:
            return {}
        t = bill_units
        rows = await self._session.execute(select(t).where(t.c.account_id == _any_of(account_ids)))
        return {unit.account_id: unit for unit in (_unit(row._mapping) for row in rows)}

    async def many_for_update(self, bill_unit_ids: Collection[uuid.UUID]) -> list[BillUnit]:
        """These bill units, locked until the transaction ends, in one statement (the set-based bill
        run; rows locked in `bill_unit_id` order)."""
        t = bill_units
        query = select(t).where(t.c.bill_unit_id == _any_of(bill_unit_ids)).order_by(t.c.bill_unit_id).with_for_update()
        return [_unit(row._mapping) for row in await self._session.execute(query)]

    async def save(self, unit: BillUnit) -> None:
        """Writes what can change on a unit (read with `for_update`)."""
        await self._session.execute(
            update(bill_units).where(bill_units.c.bill_unit_id == unit.bill_unit_id).values(**_changeable(unit))
        )

    async def list(self, account_id: uuid.UUID | None, after: ListPosition | None, limit: int) -> list[BillUnit]:
        """Up to `limit` bill units, oldest first (ties by id), strictly after `after`."""
        t = bill_units
        query = select(t).order_by(t.c.create_time, t.c.bill_unit_id).limit(limit)
        if account_id is not None:
            query = query.where(t.c.account_id == account_id)
        if after is not None:
            query = query.where(
                tuple_(t.c.create_time, t.c.bill_unit_id) > tuple_(after.create_time, after.bill_unit_id)
            )
        return [_unit(row._mapping) for row in await self._session.execute(query)]


def _changeable(unit: BillUnit) -> dict[str, Any]:
    pending = unit.pending_profile
    return {
        "currency_code": unit.currency_code,
        "time_zone": unit.time_zone,
        "bill_cycle_day": unit.profile.bill_cycle_day,
        "billing_frequency": unit.profile.frequency.value,
        "payment_terms_days": unit.profile.payment_terms_days,
        "create_time": unit.create_time,
        "account_status": unit.account_status.value,
        "account_status_change_time": unit.account_status_change_time,
        "pending_bill_cycle_day": pending.bill_cycle_day if pending else None,
        "pending_billing_frequency": pending.frequency.value if pending else None,
        "pending_payment_terms_days": pending.payment_terms_days if pending else None,
        "profile_change_time": unit.profile_change_time,
        # threshold_reached_time is written only by its own updates (ThresholdRepository).
        "threshold_amount": unit.threshold_amount,
    }


def _unit(row: Any) -> BillUnit:
    pending = None
    if row["pending_bill_cycle_day"] is not None:
        pending = BillingProfile(
            bill_cycle_day=row["pending_bill_cycle_day"],
            frequency=BillingFrequency(row["pending_billing_frequency"]),
            payment_terms_days=row["pending_payment_terms_days"],
        )
    return BillUnit(
        bill_unit_id=row["bill_unit_id"],
        account_id=row["account_id"],
        currency_code=row["currency_code"],
        time_zone=row["time_zone"],
        profile=BillingProfile(
            bill_cycle_day=row["bill_cycle_day"],
            frequency=BillingFrequency(row["billing_frequency"]),
            payment_terms_days=row["payment_terms_days"],
        ),
        create_time=row["create_time"],
        account_status=AccountStatus(row["account_status"]),
        account_status_change_time=row["account_status_change_time"],
        pending_profile=pending,
        profile_change_time=row["profile_change_time"],
        threshold_amount=row["threshold_amount"],
        threshold_reached_time=row["threshold_reached_time"],
    )


class CycleAlreadyClosed(RuntimeError):
    """A cycle saved as closed that the database no longer holds open: someone else closed it."""


class CycleBilledMeanwhile(RuntimeError):
    """A cycle whose items a bill took that the database no longer holds as read: the bill rolls back."""


class BillCycleRepository:
    def __init__(self, session: AsyncSession) -> None:
        self._session = session

    async def add(self, cycle: BillCycle) -> None:
        """Inserts a new cycle. A second open cycle for its unit, or a sequence number the unit has
        used, violates a unique index (IntegrityError): a cycle is never opened twice."""
        await self._session.execute(insert(bill_cycles).values(bill_cycle_id=cycle.bill_cycle_id, **_cycle_row(cycle)))

    async def claim_due(
        self, cutoff: datetime, limit: int, skip: Collection[uuid.UUID] = (), wait: bool = False
    ) -> list[BillCycle]:
        """Up to `limit` open cycles that ended at or before `cutoff` (now minus the late-usage
        delay), earliest end first, except those in `skip`, locked until the transaction ends.
        Cycles another transaction holds are skipped (`SKIP LOCKED`), so concurrent closers share
        the work instead of waiting. With `wait`, they are waited for instead (a cycle another
        closer closed meanwhile is then read closed and left out)."""
        t = bill_cycles
        query = (
            select(t)
            .where(t.c.status == BillCycleStatus.OPEN.value, t.c.end_time <= cutoff)
            .order_by(t.c.end_time, t.c.bill_cycle_id)
            .limit(limit)
            .with_for_update(skip_locked=not wait)
        )
        if skip:
            query = query.where(t.c.bill_cycle_id.not_in(list(skip)))
        return [_cycle(row._mapping) for row in await self._session.execute(query)]

    async def any_due(self, cutoff: datetime, skip: Collection[uuid.UUID] = ()) -> bool:
        """Whether an open cycle ended at or before `cutoff` (without locking: also one that
        another transaction holds), except those in `skip`."""
        t = bill_cycles
        query = select(t.c.bill_cycle_id).where(t.c.status == BillCycleStatus.OPEN.value, t.c.end_time <= cutoff)
        if skip:
            query = query.where(t.c.bill_cycle_id.not_in(list(skip)))
        return (await self._session.execute(query.limit(1))).first() is not None

    async def save_closed(self, cycle: BillCycle) -> None:
        """Writes the closing of a cycle read open (and locked) in this transaction."""
        t = bill_cycles
        result = await self._session.execute(
            update(t)
            .where(t.c.bill_cycle_id == cycle.bill_cycle_id, t.c.status == BillCycleStatus.OPEN.value)
            .values(status=cycle.status.value, close_time=cycle.close_time)
        )
        if result.rowcount != 1:  # type: ignore[attr-defined]  # CursorResult of an UPDATE
            raise CycleAlreadyClosed(f"bill cycle {cycle.bill_cycle_id} is not open")

    async def add_many(self, cycles: Sequence[BillCycle]) -> None:
        """Inserts new cycles in one statement (`add`'s guards hold for each)."""
        if cycles:
            await self._session.execute(
                *insert_rows(bill_cycles, [{"bill_cycle_id": c.bill_cycle_id, **_cycle_row(c)} for c in cycles])
            )

    async def save_closed_many(self, cycles: Sequence[BillCycle]) -> None:
        """Writes the closing of cycles read open (and locked) in this transaction, in one statement;
        CycleAlreadyClosed when one of them is no longer open."""
        if not cycles:
            return
        result = await self._session.execute(
            text(
                "UPDATE bill_cycles SET status = :closed, close_time = v.close_time "
                "FROM unnest(CAST(:ids AS uuid[]), CAST(:close_times AS timestamptz[])) "
                "AS v(bill_cycle_id, close_time) "
                "WHERE bill_cycles.bill_cycle_id = v.bill_cycle_id AND bill_cycles.status = :open"
            ).bindparams(
                bindparam("closed", BillCycleStatus.CLOSED.value),
                bindparam("open", BillCycleStatus.OPEN.value),
                bindparam("ids", [c.bill_cycle_id for c in cycles], type_=ARRAY(Uuid)),
                bindparam("close_times", [c.close_time for c in cycles], type_=ARRAY(DateTime(timezone=True))),
            )
        )
        closed: int = result.rowcount  # type: ignore[attr-defined]  # CursorResult of an UPDATE
        if closed != len(cycles):
            raise CycleAlreadyClosed(f"{len(cycles) - closed} of {len(cycles)} bill cycles are not open")

    async def get(self, bill_cycle_id: uuid.UUID, for_share: bool = False) -> BillCycle | None:
        """The cycle; with `for_share`, share-locked until the transaction ends (a closer closing
        it is waited for, and one not yet closing it skips it: the cycle cannot close meanwhile)."""
        query = select(bill_cycles).where(bill_cycles.c.bill_cycle_id == bill_cycle_id)
        if for_share:
            query = query.with_for_update(read=True)
        row = (await self._session.execute(query)).first()
        return _cycle(row._mapping) if row else None

    async def get_many(
        self, bill_cycle_ids: Collection[uuid.UUID], for_share: bool = False
    ) -> dict[uuid.UUID, BillCycle]:
        """The cycles among these ids, by id, in one statement; with `for_share`, share-locked
        (in id order) until the transaction ends, as `get` does."""
        if not bill_cycle_ids:
            return {}
        t = bill_cycles
        query = select(t).where(t.c.bill_cycle_id == _any_of(bill_cycle_ids)).order_by(t.c.bill_cycle_id)
        if for_share:
            query = query.with_for_update(read=True)
        found = (_cycle(row._mapping) for row in await self._session.execute(query))
        return {cycle.bill_cycle_id: cycle for cycle in found}

    async def open_for_unit(
        self, bill_unit_id: uuid.UUID, for_share: bool = False, for_update: bool = False, skip_locked: bool = False
    ) -> BillCycle | None:
        """The unit's open cycle; with `for_share`, share-locked until the transaction ends (the
        ChargesCreated consumer adding items to it); with `for_update`, locked against those
        share locks (a bill of its items while it goes on: every item added before is committed,
        and none is added until this transaction ends, so the items it reads are all there are
        below any it reads; docs/billing.md, "Items and bills"); with `skip_locked` too, None at
        once when another transaction holds it (a consumer adding items, a closer closing it).

        None while a closer is closing it: after waiting for the closer, the locking read finds
        the row closed, and the cycle it opened is not in this statement's snapshot (ask again)."""
        t = bill_cycles
        query = select(t).where(t.c.bill_unit_id == bill_unit_id, t.c.status == BillCycleStatus.OPEN.value)
        if for_update:
            # FOR NO KEY UPDATE: what the write of its billed_through_seq takes anyway.
            query = query.with_for_update(key_share=True, skip_locked=skip_locked)
        elif for_share:
            query = query.with_for_update(read=True)
        row = (await self._session.execute(query)).first()
        return _cycle(row._mapping) if row else None

    async def save_billed_through(self, cycle: BillCycle, previous: int) -> None:
        """Writes the `billed_through_seq` of an open cycle locked in this transaction, which read
        it at `previous`; CycleBilledMeanwhile when the database no longer holds that."""
        t = bill_cycles
        result = await self._session.execute(
            update(t)
            .where(
                t.c.bill_cycle_id == cycle.bill_cycle_id,
                t.c.status == BillCycleStatus.OPEN.value,
                t.c.billed_through_seq == previous,
            )
            .values(billed_through_seq=cycle.billed_through_seq)
        )
        if result.rowcount != 1:  # type: ignore[attr-defined]  # CursorResult of an UPDATE
            raise CycleBilledMeanwhile(f"bill cycle {cycle.bill_cycle_id} is not open and billed through {previous}")

    async def containing(self, bill_unit_id: uuid.UUID, instant: datetime) -> BillCycle | None:
        """The unit's cycle whose [start, end) holds `instant`, if any."""
        t = bill_cycles
        query = select(t).where(t.c.bill_unit_id == bill_unit_id, t.c.start_time <= instant, t.c.end_time > instant)
        row = (await self._session.execute(query)).first()
        return _cycle(row._mapping) if row else None

    async def list_for_account(self, account_id: uuid.UUID, before: int | None, limit: int) -> list[BillCycle]:
        """Up to `limit` of the account's cycles, newest (highest sequence) first, with a
        sequence below `before` when given."""
        t = bill_cycles
        query = select(t).where(t.c.account_id == account_id).order_by(t.c.sequence.desc()).limit(limit)
        if before is not None:
            query = query.where(t.c.sequence < before)
        return [_cycle(row._mapping) for row in await self._session.execute(query)]


def _cycle_row(cycle: BillCycle) -> dict[str, Any]:
    return {
        "bill_unit_id": cycle.bill_unit_id,
        "account_id": cycle.account_id,
        "sequence": cycle.sequence,
        "start_time": cycle.start_time,
        "end_time": cycle.end_time,
        "start_date": cycle.start_date,
        "end_date": cycle.end_date,
        "time_zone": cycle.time_zone,
        "status": cycle.status.value,
        "close_time": cycle.close_time,
        "billed_through_seq": cycle.billed_through_seq,
    }


def _cycle(row: Any) -> BillCycle:
    return BillCycle(
        bill_cycle_id=row["bill_cycle_id"],
        bill_unit_id=row["bill_unit_id"],
        account_id=row["account_id"],
        sequence=row["sequence"],
        start_time=row["start_time"],
        end_time=row["end_time"],
        start_date=row["start_date"],
        end_date=row["end_date"],
        time_zone=row["time_zone"],
        status=BillCycleStatus(row["status"]),
        close_time=row["close_time"],
        billed_through_seq=row["billed_through_seq"],
    )
