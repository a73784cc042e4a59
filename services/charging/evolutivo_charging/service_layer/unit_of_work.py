from __future__ import annotations

import uuid
from typing import Any, Self

from evolutivo.charging.v1 import usage_pb2
from evolutivo_runtime.uow import UnitOfWork
from sqlalchemy.exc import IntegrityError

from evolutivo_charging.adapters import cache as cache_adapter
from evolutivo_charging.adapters import usage_repository
from evolutivo_charging.adapters.cache import RatingCache
from evolutivo_charging.adapters.catalog_repository import ChargeOfferRepository
from evolutivo_charging.adapters.repository import ChargingAccountRepository
from evolutivo_charging.adapters.usage_repository import (
    AccountLocks,
    BillCycleRepository,
    ChargeRepository,
    CounterRepository,
    CreditStateRepository,
    FeeRepository,
    PurchaseRepository,
    RerateRunRepository,
    UsageRaced,
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
    credit: CreditStateRepository
    rerate_runs: RerateRunRepository
    account_locks: AccountLocks

    def __init__(self, *args: Any, cache: RatingCache | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # The replica's rating cache (adapters/cache.py); None reads everything from the database.
        self.cache = cache
        self._cache_changes: set[str] = set()
        # The charges published in this unit of work, as protobuf: a call's answer reuses them
        # instead of translating each charge a second time (hot path: docs/performance.md).
        self.published_charges: dict[uuid.UUID, usage_pb2.RatedCharge] = {}

    async def __aenter__(self) -> Self:
        await super().__aenter__()
        self._cache_changes = set()
        self.published_charges = {}
        self.charging_accounts = ChargingAccountRepository(self.session)
        self.catalog = ChargeOfferRepository(self.session)
        self.purchases = PurchaseRepository(self.session)
        self.bill_cycles = BillCycleRepository(self.session)
        self.usage = UsageRepository(self.session)
        self.counters = CounterRepository(self.session)
        self.charges = ChargeRepository(self.session)
        self.fees = FeeRepository(self.session)
        self.credit = CreditStateRepository(self.session)
        self.rerate_runs = RerateRunRepository(self.session)
        self.account_locks = AccountLocks(self.session)
        return self

    def account_changed(self, account_id: uuid.UUID) -> None:
        """What replicas cache of the account (itself, purchases, cycles, credit) changes in this
        transaction: the commit bumps the cache generation and notifies them."""
        self._cache_changes.add(str(account_id))

    def catalog_changed(self) -> None:
        self._cache_changes.add(cache_adapter.CATALOG)

    async def commit(self) -> None:
        if self._cache_changes:
            # Last before the commit: the generation row stays locked for as short as possible.
            await cache_adapter.bump(self.session, self._cache_changes)
            self._cache_changes = set()
        try:
            await super().commit()
        except IntegrityError as error:
            if usage_repository.raced(error):
                raise UsageRaced from error
            raise

    async def rollback(self) -> None:
        self._cache_changes = set()
        await super().rollback()
