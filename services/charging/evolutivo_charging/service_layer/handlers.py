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
) -> bool:
    """On a new account: charging's record of it, exactly once; False when charging knew it already.

    Runs inside the consumer's transaction (the caller commits)."""
    account = ChargingAccount.learn(account_id, currency_code, time_zone, status, now)
    return await uow.charging_accounts.add(account)


async def get_charging_account(uow: ChargingUnitOfWork, account_id: uuid.UUID) -> ChargingAccount:
    async with uow:
        account = await uow.charging_accounts.get(account_id)
        if account is None:
            raise NotFound("charging_account", str(account_id))
        return account
