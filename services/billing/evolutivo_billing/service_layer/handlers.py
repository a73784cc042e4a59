"""Use cases of the billing service. Plain functions over a unit of work."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal

from evolutivo_runtime.errors import NotFound

from evolutivo_billing.domain.cycles import BillCycle
from evolutivo_billing.domain.model import (
    AccountStatus,
    BillingProfile,
    BillingSummary,
    BillUnit,
    CollectionsState,
    ListPosition,
    OpenBill,
)
from evolutivo_billing.service_layer.unit_of_work import BillingUnitOfWork


@dataclass(frozen=True)
class AccountFacts:
    """What billing learns of an account from any of customer's account events (each carries the
    account), enough to open its bill unit if that event overtook AccountCreated."""

    account_id: uuid.UUID
    currency_code: str
    time_zone: str
    profile: BillingProfile
    # When customer created the account, if the event carries it.
    create_time: datetime | None = None
    # The profile's threshold (None: none).
    threshold_amount: Decimal | None = None


async def open_bill_unit(
    uow: BillingUnitOfWork,
    account_id: uuid.UUID,
    currency_code: str,
    time_zone: str,
    profile: BillingProfile,
    now: datetime,
    account_create_time: datetime | None = None,
    threshold_amount: Decimal | None = None,
) -> None:
    """On a new account: its bill unit, from the account's billing profile, and the unit's first
    cycle, from the local day of `account_create_time` (`now` when not known), exactly once.

    Runs inside the consumer's transaction (the caller commits)."""
    unit = BillUnit.open(account_id, currency_code, time_zone, profile, now)
    unit.set_threshold(threshold_amount)
    if await uow.bill_units.add(unit):
        uow.track(unit)
        cycle = BillCycle.first(unit, account_create_time or now)
        await uow.bill_cycles.add(cycle)
        uow.track(cycle)


async def _unit_for_update(uow: BillingUnitOfWork, account: AccountFacts) -> BillUnit:
    """The account's bill unit, locked. Replicas share the consumer, so an account's later event
    can be applied before its AccountCreated: the unit is then opened from this event's account."""
    unit = await uow.bill_units.for_account(account.account_id, for_update=True)
    if unit is None:
        await open_bill_unit(
            uow,
            account.account_id,
            account.currency_code,
            account.time_zone,
            account.profile,
            uow.clock.now(),
            account.create_time,
            account.threshold_amount,
        )
        unit = await uow.bill_units.for_account(account.account_id, for_update=True)
        assert unit is not None, "the unit was just opened, or another transaction opened it"
    return unit


async def record_account_status(
    uow: BillingUnitOfWork, account: AccountFacts, status: AccountStatus, change_time: datetime
) -> bool:
    """On AccountStatusChanged: the status on the account's bill unit, which bill runs and
    collections read. An event older than the status recorded changes nothing (returns False).

    Runs inside the consumer's transaction (the caller commits)."""
    unit = await _unit_for_update(uow, account)
    if not unit.record_account_status(status, change_time):
        return False
    await uow.bill_units.save(unit)
    return True


async def schedule_profile_change(
    uow: BillingUnitOfWork,
    account: AccountFacts,
    profile: BillingProfile,
    change_time: datetime,
    threshold_amount: Decimal | None = None,
) -> bool:
    """On BillingProfileChanged: the new profile waits on the bill unit as pending, to come into
    force when the unit's next cycle starts (the cycle closer applies it: BillUnit.start_cycle_at).
    An older change than the one recorded changes nothing.

    Runs inside the consumer's transaction (the caller commits)."""
    unit = await _unit_for_update(uow, account)
    if not unit.schedule_profile_change(profile, change_time):
        return False
    # The threshold moves no cycle boundary: it applies at once.
    unit.set_threshold(threshold_amount)
    await uow.bill_units.save(unit)
    return True


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


async def get_billing_summary(uow: BillingUnitOfWork, account_id: uuid.UUID) -> BillingSummary:
    """The account's bill unit, open bills and collections state. NotFound when billing has no
    bill unit for the account (it has not learnt of the account)."""
    async with uow:
        unit = await uow.bill_units.for_account(account_id)
        if unit is None:
            raise NotFound("account", str(account_id))
        open_bills = await _open_bills(uow, unit)
        collections = await _collections(uow, unit)
        return BillingSummary.of(unit, open_bills, collections, uow.clock.now())


async def _open_bills(uow: BillingUnitOfWork, unit: BillUnit) -> list[OpenBill]:
    """The unit's bills with something still to pay (ISSUED, PARTIALLY_PAID, OVERDUE), each owing
    its total less what payments paid (BillingSummary flags those past their due date)."""
    return await uow.bills.open_for_unit(unit.bill_unit_id)


async def _collections(uow: BillingUnitOfWork, unit: BillUnit) -> CollectionsState:
    """Where the unit's account stands in collections: its open case (docs/collections.md)."""
    # Imported here: collections' use cases import the bill use cases, which this module precedes.
    from evolutivo_billing.service_layer.collections import collections_state

    return await collections_state(uow, unit.bill_unit_id)
