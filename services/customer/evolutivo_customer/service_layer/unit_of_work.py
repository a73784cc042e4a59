from __future__ import annotations

from typing import Self

from evolutivo_runtime.uow import UnitOfWork

from evolutivo_customer.adapters.repository import AccountRepository


class CustomerUnitOfWork(UnitOfWork):
    accounts: AccountRepository

    async def __aenter__(self) -> Self:
        await super().__aenter__()
        self.accounts = AccountRepository(self.session)
        return self
