from __future__ import annotations

from typing import Self

from evolutivo_customer.adapters import events
from evolutivo_customer.adapters.repository import AccountRepository
from evolutivo_customer.domain.model import Account
from evolutivo_runtime.uow import UnitOfWork


class CustomerUnitOfWork(UnitOfWork):
    accounts: AccountRepository

    async def __aenter__(self) -> Self:
        await super().__aenter__()
        self.accounts = AccountRepository(self.session)
        self._seen: list[Account] = []
        return self

    def track(self, account: Account) -> None:
        self._seen.append(account)

    async def commit(self) -> None:
        # Events the aggregates raised go to the outbox in this same transaction.
        for account in self._seen:
            for event in account.events:
                self.publish(*events.encode(event))
            account.events.clear()
        await super().commit()
