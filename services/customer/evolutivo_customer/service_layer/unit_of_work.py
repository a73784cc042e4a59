from __future__ import annotations

from typing import Self

from evolutivo_runtime.clock import Clock
from evolutivo_runtime.security.crypto import FieldCipher
from evolutivo_runtime.uow import EventEncoder, UnitOfWork
from sqlalchemy import Table
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

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

    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        outbox: Table,
        clock: Clock,
        encode: EventEncoder,
        request_log: Table | None = None,
        *,
        details_cipher: FieldCipher,
    ) -> None:
        super().__init__(sessions, outbox, clock, encode, request_log)
        # Encrypts and decrypts payment-method details (CUSTOMER_PAYMENT_DETAILS_KEYS).
        self.details_cipher = details_cipher

    async def __aenter__(self) -> Self:
        await super().__aenter__()
        self.accounts = AccountRepository(self.session)
        self.services = ServiceRepository(self.session)
        self.contacts = ContactRepository(self.session)
        self.payment_methods = PaymentMethodRepository(self.session, self.details_cipher)
        self.purchases = PurchaseRepository(self.session)
        return self
