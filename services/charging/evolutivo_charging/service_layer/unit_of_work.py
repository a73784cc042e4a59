from __future__ import annotations

from typing import Self

from evolutivo_runtime.uow import UnitOfWork

from evolutivo_charging.adapters.catalog_repository import ChargeOfferRepository
from evolutivo_charging.adapters.repository import ChargingAccountRepository


class ChargingUnitOfWork(UnitOfWork):
    charging_accounts: ChargingAccountRepository
    catalog: ChargeOfferRepository

    async def __aenter__(self) -> Self:
        await super().__aenter__()
        self.charging_accounts = ChargingAccountRepository(self.session)
        self.catalog = ChargeOfferRepository(self.session)
        return self
