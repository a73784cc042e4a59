"""What the customer service needs from the other services, as the service layer sees it."""

from __future__ import annotations

import uuid
from decimal import Decimal
from typing import Protocol


class BalanceReader(Protocol):
    async def amount_owed(self, account_id: uuid.UUID) -> Decimal:
        """What the account owes across its balance groups (0 or less: nothing).
        Raises evolutivo_runtime.errors.Unavailable when the balance service does not answer."""
        ...
