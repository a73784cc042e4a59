"""Allocating a payment to an account's open bills (docs/billing.md, "Payments")."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date
from decimal import Decimal


class InvalidPayment(ValueError):
    pass


@dataclass(frozen=True)
class Owed:
    """An open bill as allocation sees it."""

    bill_id: uuid.UUID
    due_date: date
    issue_date: date
    bill_number: str
    open_amount: Decimal


@dataclass(frozen=True)
class Allocation:
    bill_id: uuid.UUID
    amount: Decimal


def allocation_order(bills: Sequence[Owed]) -> list[Owed]:
    """Oldest due date first; then the oldest issued, then by number (and id), so the order is total."""
    return sorted(bills, key=lambda b: (b.due_date, b.issue_date, b.bill_number, b.bill_id))


def allocate(amount: Decimal, bills: Sequence[Owed]) -> tuple[list[Allocation], Decimal]:
    """Spreads `amount` over the bills, oldest due first, each taking at most its open amount;
    returns the allocations (none of zero) and what is left over (the account's credit). The
    allocations and the remainder add up to `amount` exactly (amounts are exact decimals)."""
    if amount < 0:
        raise InvalidPayment(f"a payment of {amount} cannot be allocated")
    left = amount
    allocations: list[Allocation] = []
    for bill in allocation_order(bills):
        if left <= 0:
            break
        if bill.open_amount <= 0:
            continue
        take = min(left, bill.open_amount)
        allocations.append(Allocation(bill.bill_id, take))
        left -= take
    return allocations, left
