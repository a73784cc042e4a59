"""Loads and stores bill units."""

from __future__ import annotations

import uuid
from typing import Any

from sqlalchemy import select, tuple_, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from evolutivo_billing.adapters.orm import bill_units
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

    async def get(self, bill_unit_id: uuid.UUID) -> BillUnit | None:
        row = (await self._session.execute(select(bill_units).where(bill_units.c.bill_unit_id == bill_unit_id))).first()
        return _unit(row._mapping) if row else None

    async def for_account(self, account_id: uuid.UUID, for_update: bool = False) -> BillUnit | None:
        """The account's bill unit; with `for_update`, locked until the transaction ends."""
        query = select(bill_units).where(bill_units.c.account_id == account_id)
        if for_update:
            query = query.with_for_update()
        row = (await self._session.execute(query)).first()
        return _unit(row._mapping) if row else None

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
    )
