"""Each account's status, as balance learns it from customer's events (table `account_statuses`)."""

from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy import or_, select
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from evolutivo_balance.adapters.orm import account_statuses
from evolutivo_balance.domain.model import AccountStatus


class AccountStatusRepository:
    def __init__(self, session: AsyncSession) -> None:
        self._session = session

    async def learn(self, account_id: uuid.UUID, status: AccountStatus, status_time: datetime) -> bool:
        """Keeps `status`, the account's as of `status_time`, unless balance knows a later one:
        events of one account may be applied out of order (two replicas), so an older time changes
        nothing; CLOSED always wins and stays (customer never reopens an account). One statement,
        so two replicas applying two events of one account at once cannot lose the later. False
        when the status was not taken (an older one, or the account is closed already)."""
        t = account_statuses
        row = insert(t).values(account_id=account_id, status=status.value, status_time=status_time)
        statement = row.on_conflict_do_update(
            index_elements=[t.c.account_id],
            set_={"status": row.excluded.status, "status_time": row.excluded.status_time},
            where=(t.c.status != AccountStatus.CLOSED.value)
            & or_(
                row.excluded.status == AccountStatus.CLOSED.value,
                row.excluded.status_time > t.c.status_time,
            ),
        ).returning(t.c.account_id)
        return (await self._session.execute(statement)).first() is not None

    async def status_of(self, account_id: uuid.UUID) -> AccountStatus | None:
        """None: balance has not heard of the account's status (an account it learnt from a charge
        first, or one older than migration 0005)."""
        found = await self._session.scalar(
            select(account_statuses.c.status).where(account_statuses.c.account_id == account_id)
        )
        return AccountStatus(found) if found is not None else None
