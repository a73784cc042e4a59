"""Loads and stores balance groups."""

from __future__ import annotations

import uuid
from typing import Any

from sqlalchemy import select
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from evolutivo_balance.adapters.orm import balance_groups
from evolutivo_balance.domain.model import BalanceGroup


class BalanceGroupRepository:
    def __init__(self, session: AsyncSession) -> None:
        self._session = session

    async def add_default(self, group: BalanceGroup) -> bool:
        """Adds the account's default group unless it has one; False when it already had."""
        t = balance_groups
        result = await self._session.execute(
            insert(t)
            .values(
                balance_group_id=group.balance_group_id,
                account_id=group.account_id,
                name=group.name,
                is_default=group.is_default,
                currency_code=group.currency_code,
                balance=group.balance,
                create_time=group.create_time,
            )
            .on_conflict_do_nothing(index_elements=[t.c.account_id], index_where=t.c.is_default)
            .returning(t.c.balance_group_id)
        )
        return result.first() is not None

    async def for_account(self, account_id: uuid.UUID) -> list[BalanceGroup]:
        rows = await self._session.execute(
            select(balance_groups)
            .where(balance_groups.c.account_id == account_id)
            .order_by(balance_groups.c.is_default.desc(), balance_groups.c.create_time)
        )
        return [_group(row._mapping) for row in rows]


def _group(row: Any) -> BalanceGroup:
    return BalanceGroup(
        balance_group_id=row["balance_group_id"],
        account_id=row["account_id"],
        name=row["name"],
        is_default=row["is_default"],
        currency_code=row["currency_code"],
        balance=row["balance"],
        create_time=row["create_time"],
    )
