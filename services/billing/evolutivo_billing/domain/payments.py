"""Allocating a payment to an account's open bills (docs/billing.md, "Payments")."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import date
from decimal import Decimal


class InvalidPayment(ValueError):
    pass


class InvalidAllocation(ValueError):
    """An announced allocation of a payment's or a credit note's money that breaks its rules."""


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


def check_allocation(
    source_id: uuid.UUID, amount: Decimal, sequence: int, allocations: Sequence[Allocation], unallocated: Decimal
) -> None:
    """The rules of an announced allocation of a payment's or a credit note's money (`amount`):
    numbered from 1, more than zero to each bill, one amount per bill, and never more than the
    money with what is left of it. Raises InvalidAllocation."""
    if sequence < 1:
        raise InvalidAllocation(f"allocation sequence {sequence} of {source_id}: allocations are numbered from 1")
    if any(a.amount <= 0 for a in allocations):
        raise InvalidAllocation(f"an allocation of {source_id} gives a bill more than zero")
    if len({a.bill_id for a in allocations}) != len(allocations):
        raise InvalidAllocation(f"an allocation of {source_id} gives each bill one amount")
    if unallocated < 0 or sum((a.amount for a in allocations), Decimal(0)) + unallocated > amount:
        raise InvalidAllocation(f"allocations of {source_id} exceed its amount {amount}")


@dataclass(frozen=True)
class PaymentAllocated:
    """One allocation of a payment, announced so that others (the ERP gateway) apply the payment
    as billing did: `sequence` 1 is the allocation made when billing recorded the payment (it may
    give nothing to any bill), 2, 3, ... each later application of its credit to a newly issued
    bill. `unallocated` is what of the payment is left as credit after it."""

    payment_id: uuid.UUID
    account_id: uuid.UUID
    currency_code: str
    sequence: int
    allocations: tuple[Allocation, ...]
    payment_amount: Decimal
    unallocated: Decimal


@dataclass
class PaymentAllocations:
    """A payment as allocation sees it: the aggregate whose allocations are announced, in order."""

    payment_id: uuid.UUID
    account_id: uuid.UUID
    currency_code: str
    amount: Decimal
    events: list[object] = field(default_factory=list)

    def allocated(self, sequence: int, allocations: Sequence[Allocation], unallocated: Decimal) -> PaymentAllocated:
        """Records allocation number `sequence` (what it gave each bill, what is left after it)."""
        check_allocation(self.payment_id, self.amount, sequence, allocations, unallocated)
        event = PaymentAllocated(
            self.payment_id,
            self.account_id,
            self.currency_code,
            sequence,
            tuple(allocations),
            self.amount,
            unallocated,
        )
        self.events.append(event)
        return event
