"""Use cases on an account's payment methods. Writes run inside the unit of work the caller opened
and commits (see accounts.py); reads open their own. Every write locks the account's row first, so
concurrent changes to one account's methods (and its one default) are serialised."""

from __future__ import annotations

import uuid
from collections.abc import Callable

from evolutivo_customer.domain.payment_methods import PaymentDetails, PaymentMethod
from evolutivo_customer.service_layer.accounts import load
from evolutivo_customer.service_layer.unit_of_work import CustomerUnitOfWork


async def add_payment_method(
    uow: CustomerUnitOfWork, account_id: uuid.UUID, details: PaymentDetails | None, make_default: bool
) -> PaymentMethod:
    account = await load(uow, account_id)
    methods = await uow.payment_methods.load(account)
    method = methods.add(details, make_default, uow.clock.now())
    await uow.payment_methods.save(methods)
    uow.track(methods)
    return method


async def set_default_payment_method(
    uow: CustomerUnitOfWork, account_id: uuid.UUID, payment_method_id: uuid.UUID
) -> PaymentMethod:
    account = await load(uow, account_id)
    methods = await uow.payment_methods.load(account)
    method = methods.set_default(payment_method_id)
    await uow.payment_methods.save(methods)
    uow.track(methods)
    return method


async def remove_payment_method(uow: CustomerUnitOfWork, account_id: uuid.UUID, payment_method_id: uuid.UUID) -> None:
    account = await load(uow, account_id)
    methods = await uow.payment_methods.load(account)
    methods.remove(payment_method_id, uow.clock.now())
    await uow.payment_methods.save(methods)
    uow.track(methods)


async def list_payment_methods(uow: CustomerUnitOfWork, account_id: uuid.UUID) -> list[PaymentMethod]:
    """The active methods, the default first. Callers mask them (the adapters always do)."""
    async with uow:
        await load(uow, account_id, for_update=False)
        return await uow.payment_methods.for_account(account_id)


async def rotate_payment_details(uow_factory: Callable[[], CustomerUnitOfWork], batch_size: int = 500) -> int:
    """Re-encrypts every stored payment-method detail under the newest key (the first of
    CUSTOMER_PAYMENT_DETAILS_KEYS), one short transaction per batch so writes are never blocked
    long. Safe to repeat and to run while serving; once it has finished the old keys can be
    dropped. Returns how many rows it re-encrypted."""
    done = 0
    after: uuid.UUID | None = None
    while True:
        async with uow_factory() as uow:
            last, count = await uow.payment_methods.rotate_batch(after, batch_size)
            await uow.commit()
        done += count
        if last is None or count < batch_size:
            return done
        after = last
