"""Use cases of the balance service. Plain functions over a unit of work."""

from __future__ import annotations

import uuid
from datetime import datetime

from evolutivo_runtime.errors import NotFound

from evolutivo_balance.domain.model import BalanceGroup
from evolutivo_balance.service_layer.unit_of_work import BalanceUnitOfWork


async def open_default_group(uow: BalanceUnitOfWork, account_id: uuid.UUID, currency_code: str, now: datetime) -> None:
    """On a new account: its default balance group in the account's currency, exactly once.

    Runs inside the consumer's transaction (the caller commits)."""
    group = BalanceGroup.open_default(account_id, currency_code, now)
    if await uow.balance_groups.add_default(group):
        uow.track(group)


async def get_balance(uow: BalanceUnitOfWork, account_id: uuid.UUID) -> list[BalanceGroup]:
    async with uow:
        groups = await uow.balance_groups.for_account(account_id)
        if not groups:
            raise NotFound("account", str(account_id))
        return groups
