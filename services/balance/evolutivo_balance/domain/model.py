"""Balance groups. Plain Python: no protobuf, no SQL."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal

DEFAULT_GROUP_NAME = "default"


@dataclass
class BalanceGroup:
    balance_group_id: uuid.UUID
    account_id: uuid.UUID
    name: str
    is_default: bool
    currency_code: str
    # Positive: the account owes it; negative: the account is in credit. Exact decimal.
    balance: Decimal
    create_time: datetime
    events: list[object] = field(default_factory=list, compare=False, repr=False)

    @classmethod
    def open_default(cls, account_id: uuid.UUID, currency_code: str, now: datetime) -> BalanceGroup:
        group = cls(
            balance_group_id=uuid.uuid4(),
            account_id=account_id,
            name=DEFAULT_GROUP_NAME,
            is_default=True,
            currency_code=currency_code,
            balance=Decimal(0),
            create_time=now,
        )
        group.events.append(BalanceGroupCreated(group))
        return group


@dataclass(frozen=True)
class BalanceGroupCreated:
    group: BalanceGroup


def total(groups: list[BalanceGroup]) -> Decimal:
    return sum((g.balance for g in groups), Decimal(0))
