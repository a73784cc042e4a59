"""The customer service's database and servicer mixins as its integration tests drive them."""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable
from decimal import Decimal
from typing import Any

from evolutivo_customer.adapters import events
from evolutivo_customer.adapters.orm import outbox, request_log
from evolutivo_customer.service_layer.unit_of_work import CustomerUnitOfWork
from evolutivo_runtime.security.crypto import FieldCipher, generate_key

from support.databases import ServiceDb

# Payment-method details are stored encrypted: the tests' own key (the service refuses to start without one).
DETAILS_CIPHER = FieldCipher([generate_key()])


def stored_details(token: bytes) -> dict[str, Any]:
    """A `payment_methods.details` cell as the JSON document it encrypts."""
    return dict(json.loads(DETAILS_CIPHER.decrypt(token)))


class CustomerServiceDb(ServiceDb):
    def uow(self) -> CustomerUnitOfWork:
        return CustomerUnitOfWork(
            self.sessions, outbox, self.clock, events.encode, request_log, details_cipher=DETAILS_CIPHER
        )


class NothingOwed:
    """Balance as customer reads it (a gRPC client in the service), for accounts that owe nothing."""

    async def amount_owed(self, account_id: uuid.UUID) -> Decimal:
        return Decimal(0)


class MixinState:
    """What customer's servicer mixins read (the service's servicer sets it): listed after the
    mixins under test, `class Servicer(AccountsApi, ContactsApi, MixinState)`."""

    def __init__(self, uow: Callable[[], CustomerUnitOfWork]) -> None:
        self._uow = uow
        self._balance = NothingOwed()
