"""Loads and stores accounts; the only code that knows both the model and the tables."""

from __future__ import annotations

import uuid
from typing import Any

from sqlalchemy import insert, select
from sqlalchemy.ext.asyncio import AsyncSession

from evolutivo_customer.adapters.orm import account_number_seq, accounts
from evolutivo_customer.domain.model import (
    Account,
    AccountStatus,
    AccountType,
    BillingFrequency,
    BillingProfile,
)


class AccountRepository:
    def __init__(self, session: AsyncSession) -> None:
        self._session = session

    async def next_account_number(self) -> int:
        value = await self._session.scalar(account_number_seq.next_value())
        assert value is not None
        return int(value)

    async def add(self, account: Account, request_id: uuid.UUID | None) -> None:
        await self._session.execute(insert(accounts).values(**_row(account), create_request_id=request_id))

    async def get(self, account_id: uuid.UUID) -> Account | None:
        row = (await self._session.execute(select(accounts).where(accounts.c.account_id == account_id))).first()
        return _account(row._mapping) if row else None

    async def get_by_request(self, request_id: uuid.UUID) -> Account | None:
        row = (await self._session.execute(select(accounts).where(accounts.c.create_request_id == request_id))).first()
        return _account(row._mapping) if row else None


def _row(account: Account) -> dict[str, Any]:
    return {
        "account_id": account.account_id,
        "account_number": account.account_number,
        "type": account.type.value,
        "display_name": account.display_name,
        "currency_code": account.currency_code,
        "time_zone": account.time_zone,
        "locale": account.locale,
        "status": account.status.value,
        "bill_cycle_day": account.billing_profile.bill_cycle_day,
        "billing_frequency": account.billing_profile.frequency.value,
        "payment_terms_days": account.billing_profile.payment_terms_days,
        "labels": account.labels,
        "create_time": account.create_time,
    }


def _account(row: Any) -> Account:
    return Account(
        account_id=row["account_id"],
        account_number=row["account_number"],
        type=AccountType(row["type"]),
        display_name=row["display_name"],
        currency_code=row["currency_code"],
        time_zone=row["time_zone"],
        locale=row["locale"],
        status=AccountStatus(row["status"]),
        billing_profile=BillingProfile(
            bill_cycle_day=row["bill_cycle_day"],
            frequency=BillingFrequency(row["billing_frequency"]),
            payment_terms_days=row["payment_terms_days"],
        ),
        labels=dict(row["labels"]),
        create_time=row["create_time"],
    )
