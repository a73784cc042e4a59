"""Loads and stores purchases."""

from __future__ import annotations

import uuid
from datetime import datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import Select, insert, literal, select, tuple_, update
from sqlalchemy.ext.asyncio import AsyncSession

from evolutivo_customer.adapters.orm import accounts, purchases
from evolutivo_customer.domain.purchases import PriceOverride, Purchase


class PurchaseRepository:
    def __init__(self, session: AsyncSession) -> None:
        self._session = session

    async def add(self, purchase: Purchase) -> None:
        await self._session.execute(insert(purchases).values(**_row(purchase)))

    async def get(self, account_id: uuid.UUID, purchase_id: uuid.UUID) -> Purchase | None:
        t = purchases
        row = (
            await self._session.execute(
                _select().where(t.c.account_id == account_id, t.c.purchase_id == purchase_id).with_for_update(of=t)
            )
        ).first()
        return _purchase(row._mapping) if row else None

    async def save(self, purchase: Purchase) -> None:
        t = purchases
        await self._session.execute(
            update(t)
            .where(t.c.purchase_id == purchase.purchase_id)
            .values(end_time=purchase.end_time, cancel_time=purchase.cancel_time)
        )

    async def page(self, account_id: uuid.UUID, after: tuple[datetime, uuid.UUID] | None, limit: int) -> list[Purchase]:
        """Keyset page in (create_time, purchase_id) order."""
        t = purchases
        query = _select().where(t.c.account_id == account_id).order_by(t.c.create_time, t.c.purchase_id).limit(limit)
        if after is not None:
            query = query.where(tuple_(t.c.create_time, t.c.purchase_id) > tuple_(literal(after[0]), literal(after[1])))
        return [_purchase(row._mapping) for row in await self._session.execute(query)]

    async def open_for_account(self, account_id: uuid.UUID, instant: datetime) -> list[Purchase]:
        """Purchases not cancelled and not ended at `instant` (pending ones included)."""
        t = purchases
        rows = await self._session.execute(
            _select()
            .where(
                t.c.account_id == account_id,
                t.c.cancel_time.is_(None),
                (t.c.end_time.is_(None)) | (t.c.end_time > instant),
            )
            .order_by(t.c.create_time, t.c.purchase_id)
        )
        return [_purchase(row._mapping) for row in rows]


def _select() -> Select[Any]:
    # The currency is the account's; read with the purchase rather than stored twice.
    return select(purchases, accounts.c.currency_code).join(accounts, accounts.c.account_id == purchases.c.account_id)


def _row(p: Purchase) -> dict[str, Any]:
    return {
        "purchase_id": p.purchase_id,
        "account_id": p.account_id,
        "service_id": p.service_id,
        "charge_offer_code": p.charge_offer_code,
        "charge_offer_version": p.charge_offer_version,
        "quantity": p.quantity,
        "start_time": p.start_time,
        "end_time": p.end_time,
        # Decimal strings: JSON numbers would go through floats.
        "price_overrides": [{"charge_code": o.charge_code, "price": str(o.price)} for o in p.price_overrides],
        "create_time": p.create_time,
        "cancel_time": p.cancel_time,
    }


def _purchase(row: Any) -> Purchase:
    return Purchase(
        purchase_id=row["purchase_id"],
        account_id=row["account_id"],
        service_id=row["service_id"],
        charge_offer_code=row["charge_offer_code"],
        charge_offer_version=row["charge_offer_version"],
        quantity=row["quantity"],
        start_time=row["start_time"],
        end_time=row["end_time"],
        price_overrides=tuple(PriceOverride(o["charge_code"], Decimal(o["price"])) for o in row["price_overrides"]),
        create_time=row["create_time"],
        currency_code=row["currency_code"],
        cancel_time=row["cancel_time"],
    )
