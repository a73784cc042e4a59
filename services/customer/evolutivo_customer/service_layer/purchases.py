"""Use cases on purchases of charge offers. Writes run in the caller's unit of work."""

from __future__ import annotations

import uuid
from datetime import datetime
from decimal import Decimal

from evolutivo_runtime.errors import NotFound

from evolutivo_customer.domain.purchases import PriceOverride, Purchase
from evolutivo_customer.service_layer.accounts import load
from evolutivo_customer.service_layer.ports import CatalogReader
from evolutivo_customer.service_layer.unit_of_work import CustomerUnitOfWork


async def create_purchase(
    uow: CustomerUnitOfWork,
    catalog: CatalogReader,
    account_id: uuid.UUID,
    service_id: uuid.UUID | None,
    code: str,
    quantity: Decimal,
    start: datetime | None,
    end: datetime | None,
    overrides: tuple[PriceOverride, ...],
) -> Purchase:
    now = uow.clock.now()
    account = await load(uow, account_id)
    service = None
    if service_id is not None:
        service = await uow.services.get(account_id, service_id)
        if service is None:
            raise NotFound("provisioned_service", str(service_id))
    start = start or now
    # Checked against the catalog, the owner of offers; if charging does not answer, nothing is sold.
    offer = await catalog.offer_at(code, start)
    purchase = Purchase.buy(account, service, offer, code, quantity, start, end, overrides, now)
    await uow.purchases.add(purchase)
    uow.track(purchase)
    return purchase


async def _load(uow: CustomerUnitOfWork, account_id: uuid.UUID, purchase_id: uuid.UUID) -> Purchase:
    purchase = await uow.purchases.get(account_id, purchase_id)
    if purchase is None:
        raise NotFound("purchase", str(purchase_id))
    return purchase


async def end_purchase(
    uow: CustomerUnitOfWork, account_id: uuid.UUID, purchase_id: uuid.UUID, end_time: datetime
) -> Purchase:
    purchase = await _load(uow, account_id, purchase_id)
    purchase.end(end_time, uow.clock.now())
    await uow.purchases.save(purchase)
    uow.track(purchase)
    return purchase


async def cancel_purchase(uow: CustomerUnitOfWork, account_id: uuid.UUID, purchase_id: uuid.UUID) -> Purchase:
    purchase = await _load(uow, account_id, purchase_id)
    purchase.cancel(uow.clock.now())
    await uow.purchases.save(purchase)
    uow.track(purchase)
    return purchase


async def list_purchases(
    uow: CustomerUnitOfWork, account_id: uuid.UUID, after: tuple[datetime, uuid.UUID] | None, limit: int
) -> tuple[list[Purchase], datetime]:
    """A page of the account's purchases, and the clock's now (the default instant for states)."""
    async with uow:
        await load(uow, account_id, for_update=False)
        return await uow.purchases.page(account_id, after, limit), uow.clock.now()
