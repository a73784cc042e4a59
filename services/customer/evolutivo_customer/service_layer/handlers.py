"""Use cases of the customer service. Plain functions over a unit of work."""

from __future__ import annotations

import uuid

from evolutivo_runtime.errors import Aborted, NotFound
from sqlalchemy.exc import IntegrityError

from evolutivo_customer.domain.model import Account, NewAccount, format_account_number
from evolutivo_customer.service_layer.unit_of_work import CustomerUnitOfWork


async def create_account(uow: CustomerUnitOfWork, new: NewAccount, request_id: uuid.UUID | None) -> Account:
    async with uow:
        if request_id is not None and (existing := await uow.accounts.get_by_request(request_id)):
            return existing
        number = format_account_number(await uow.accounts.next_account_number())
        account = Account.open(new, number, uow.clock.now())
        try:
            await uow.accounts.add(account, request_id)
            uow.track(account)
            await uow.commit()
        except IntegrityError:
            # A concurrent retry with the same request id won the race: answer with its account.
            await uow.rollback()
            if request_id is not None and (existing := await uow.accounts.get_by_request(request_id)):
                return existing
            raise Aborted("CONCURRENT_CREATE", "the account could not be created; retry the call") from None
        return account


async def get_account(uow: CustomerUnitOfWork, account_id: uuid.UUID) -> Account:
    async with uow:
        account = await uow.accounts.get(account_id)
        if account is None:
            raise NotFound("account", str(account_id))
        return account
