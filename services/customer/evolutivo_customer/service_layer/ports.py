"""What the customer service needs from the other services, as the service layer sees it."""

from __future__ import annotations

import uuid
from datetime import datetime
from decimal import Decimal
from typing import Protocol

from evolutivo_customer.domain.purchases import OfferView


class BalanceReader(Protocol):
    async def amount_owed(self, account_id: uuid.UUID) -> Decimal:
        """What the account owes across its balance groups (0 or less: nothing).
        Raises evolutivo_runtime.errors.Unavailable when the balance service does not answer."""
        ...


class CatalogReader(Protocol):
    async def offer_at(self, code: str, instant: datetime) -> OfferView | None:
        """The version of the charging catalog's offer in force at `instant`, or None when the
        code is unknown or nothing is in force then. Raises Unavailable when charging does not answer."""
        ...
