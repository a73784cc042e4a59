from __future__ import annotations

from typing import Self

from evolutivo_runtime.uow import UnitOfWork

from evolutivo_balance.adapters.repository import BalanceGroupRepository


class BalanceUnitOfWork(UnitOfWork):
    balance_groups: BalanceGroupRepository

    async def __aenter__(self) -> Self:
        await super().__aenter__()
        self.balance_groups = BalanceGroupRepository(self.session)
        return self
