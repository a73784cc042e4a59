"""Use cases of the charging service. Plain functions over a unit of work."""

from __future__ import annotations

import uuid
from datetime import datetime

from evolutivo_runtime.errors import NotFound

from evolutivo_charging.domain.model import ChargingAccount, ChargingAccountStatus
from evolutivo_charging.service_layer.unit_of_work import ChargingUnitOfWork


async def learn_account(
    uow: ChargingUnitOfWork,
    account_id: uuid.UUID,
    currency_code: str,
    time_zone: str,
    status: ChargingAccountStatus,
    now: datetime,
    details_time: datetime | None = None,
) -> bool:
    """On a new account: charging's record of it, exactly once; False when charging knew it already.
    `details_time`: the account's update time in the event (orders later AccountUpdated).

    Runs inside the consumer's transaction (the caller commits)."""
    account = ChargingAccount.learn(account_id, currency_code, time_zone, status, now, details_time)
    uow.account_changed(account_id)
    return await uow.charging_accounts.add(account)


async def change_status(
    uow: ChargingUnitOfWork,
    account_id: uuid.UUID,
    currency_code: str,
    time_zone: str,
    status: ChargingAccountStatus,
    change_time: datetime,
    now: datetime,
    details_time: datetime | None = None,
) -> bool:
    """On AccountStatusChanged: whether charging accepts the account's usage follows its status.
    An event older than the status recorded changes nothing (returns False).

    Replicas share the consumer, so the event can be applied before the account's AccountCreated:
    charging then learns the account from this event, which carries it.
    Runs inside the consumer's transaction (the caller commits)."""
    uow.account_changed(account_id)
    account = await uow.charging_accounts.get(account_id, for_update=True)
    if account is None:
        learnt = ChargingAccount.learn(account_id, currency_code, time_zone, status, now, details_time)
        await uow.charging_accounts.add(learnt)
        account = await uow.charging_accounts.get(account_id, for_update=True)
        assert account is not None, "the account was just added, or another transaction added it"
    if not account.change_status(status, change_time, now):
        return False
    await uow.charging_accounts.save(account)
    return True


async def update_details(
    uow: ChargingUnitOfWork,
    account_id: uuid.UUID,
    currency_code: str,
    time_zone: str,
    status: ChargingAccountStatus,
    change_time: datetime,
    now: datetime,
) -> bool:
    """On AccountUpdated naming the currency or time zone: the account's, as of `change_time`, become
    charging's (rating prices new usage in the new currency). An update no newer than the details
    recorded changes nothing (returns False); so does a redelivery.

    Like change_status, the event can overtake the account's AccountCreated: charging then learns
    the account from this event, which carries it. Runs inside the consumer's transaction."""
    uow.account_changed(account_id)
    account = await uow.charging_accounts.get(account_id, for_update=True)
    if account is None:
        learnt = ChargingAccount.learn(account_id, currency_code, time_zone, status, now, change_time)
        if await uow.charging_accounts.add(learnt):
            return True
        account = await uow.charging_accounts.get(account_id, for_update=True)
        assert account is not None, "another transaction added it"
    if not account.update_details(currency_code, time_zone, change_time, now):
        return False
    await uow.charging_accounts.save(account)
    return True


async def get_charging_account(uow: ChargingUnitOfWork, account_id: uuid.UUID) -> ChargingAccount:
    async with uow:
        account = await uow.charging_accounts.get(account_id)
        if account is None:
            raise NotFound("charging_account", str(account_id))
        return account
