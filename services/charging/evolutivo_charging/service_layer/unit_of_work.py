from __future__ import annotations

from typing import Self

from evolutivo_runtime.uow import UnitOfWork

from evolutivo_charging.adapters.catalog_repository import ChargeOfferRepository
from evolutivo_charging.adapters.repository import ChargingAccountRepository
from evolutivo_charging.adapters.usage_repository import (
    BillCycleRepository,
    ChargeRepository,
    CounterRepository,
    FeeRepository,
    PurchaseRepository,
    UsageRepository,
)


class ChargingUnitOfWork(UnitOfWork):
    charging_accounts: ChargingAccountRepository
    catalog: ChargeOfferRepository
    purchases: PurchaseRepository
    bill_cycles: BillCycleRepository
    usage: UsageRepository
    counters: CounterRepository
    charges: ChargeRepository
    fees: FeeRepository

    async def __aenter__(self) -> Self:
        await super().__aenter__()
        self.charging_accounts = ChargingAccountRepository(self.session)
        self.catalog = ChargeOfferRepository(self.session)
        self.purchases = PurchaseRepository(self.session)
        self.bill_cycles = BillCycleRepository(self.session)
        self.usage = UsageRepository(self.session)
        self.counters = CounterRepository(self.session)
        self.charges = ChargeRepository(self.session)
        self.fees = FeeRepository(self.session)
        return self
