"""Loads and stores charging accounts."""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from evolutivo_charging.adapters.orm import charging_accounts
from evolutivo_charging.domain.model import ChargingAccount, ChargingAccountStatus


class ChargingAccountRepository:
    def __init__(self, session: AsyncSession) -> None:
        self._session = session

    async def add(self, account: ChargingAccount) -> bool:
        """Records the account unless charging knows it already; False when it did."""
        t = charging_accounts
        result = await self._session.execute(
            insert(t)
            .values(
                account_id=account.account_id,
                currency_code=account.currency_code,
                time_zone=account.time_zone,
                status=account.status.value,
                update_time=account.update_time,
                status_change_time=account.status_change_time,
                details_change_time=account.details_change_time,
            )
            .on_conflict_do_nothing(index_elements=[t.c.account_id])
            .returning(t.c.account_id)
        )
        return result.first() is not None

    async def get(self, account_id: uuid.UUID, for_update: bool = False) -> ChargingAccount | None:
        """The account; with `for_update`, locked until the transaction ends."""
        t = charging_accounts
        query = select(t).where(t.c.account_id == account_id)
        if for_update:
            query = query.with_for_update()
        row = (await self._session.execute(query)).first()
        return _account(row._mapping) if row else None

    async def get_many(self, account_ids: Iterable[uuid.UUID]) -> dict[uuid.UUID, ChargingAccount]:
        """The accounts charging knows among `account_ids`."""
        ids = sorted(set(account_ids))
        if not ids:
            return {}
        t = charging_accounts
        rows = await self._session.execute(select(t).where(t.c.account_id.in_(ids)))
        return {row.account_id: _account(row._mapping) for row in rows}

    async def save(self, account: ChargingAccount) -> None:
        """Writes what can change on an account (read with `for_update`)."""
        t = charging_accounts
        await self._session.execute(
            update(t)
            .where(t.c.account_id == account.account_id)
            .values(
                currency_code=account.currency_code,
                time_zone=account.time_zone,
                status=account.status.value,
                update_time=account.update_time,
                status_change_time=account.status_change_time,
                details_change_time=account.details_change_time,
            )
        )


def _account(row: Any) -> ChargingAccount:
    return ChargingAccount(
        account_id=row["account_id"],
        currency_code=row["currency_code"],
        time_zone=row["time_zone"],
        status=ChargingAccountStatus(row["status"]),
        update_time=row["update_time"],
        status_change_time=row["status_change_time"],
        details_change_time=row["details_change_time"],
    )
