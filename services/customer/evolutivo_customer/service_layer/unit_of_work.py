from __future__ import annotations

from typing import Self

from evolutivo_runtime.uow import UnitOfWork

from evolutivo_customer.adapters.contacts_repository import ContactRepository
from evolutivo_customer.adapters.payment_methods_repository import PaymentMethodRepository
from evolutivo_customer.adapters.purchases_repository import PurchaseRepository
from evolutivo_customer.adapters.repository import AccountRepository, ServiceRepository


class CustomerUnitOfWork(UnitOfWork):
    accounts: AccountRepository
    services: ServiceRepository
    contacts: ContactRepository
    payment_methods: PaymentMethodRepository
    purchases: PurchaseRepository

    async def __aenter__(self) -> Self:
        await super().__aenter__()
        self.accounts = AccountRepository(self.session)
        self.services = ServiceRepository(self.session)
        self.contacts = ContactRepository(self.session)
        self.payment_methods = PaymentMethodRepository(self.session)
        self.purchases = PurchaseRepository(self.session)
        return self
