"""Use cases of the billing service. Plain functions over a unit of work."""

from __future__ import annotations

import uuid
from datetime import datetime

from evolutivo_runtime.errors import NotFound

from evolutivo_billing.domain.model import BillingProfile, BillUnit, ListPosition
from evolutivo_billing.service_layer.unit_of_work import BillingUnitOfWork


async def open_bill_unit(
    uow: BillingUnitOfWork,
    account_id: uuid.UUID,
    currency_code: str,
    time_zone: str,
    profile: BillingProfile,
    now: datetime,
) -> None:
    """On a new account: its bill unit, from the account's billing profile, exactly once.

    Runs inside the consumer's transaction (the caller commits)."""
    unit = BillUnit.open(account_id, currency_code, time_zone, profile, now)
    if await uow.bill_units.add(unit):
        uow.track(unit)


async def get_bill_unit(uow: BillingUnitOfWork, bill_unit_id: uuid.UUID) -> BillUnit:
    async with uow:
        unit = await uow.bill_units.get(bill_unit_id)
        if unit is None:
            raise NotFound("bill_unit", str(bill_unit_id))
        return unit


async def list_bill_units(
    uow: BillingUnitOfWork, account_id: uuid.UUID | None, page_size: int, after: ListPosition | None
) -> tuple[list[BillUnit], ListPosition | None]:
    """One page of bill units, oldest first, and where the next page starts (None on the last page)."""
    async with uow:
        units = await uow.bill_units.list(account_id, after, page_size + 1)
    if len(units) > page_size:
        page = units[:page_size]
        return page, page[-1].position
    return units, None
