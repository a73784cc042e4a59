"""Use cases on money that leaves the debt: write-offs (debt given up) and refunds (credit paid
back to the customer). Both are idempotent on their source.

Writes run inside a unit of work the entrypoint opened and commits (run_idempotent).
"""

from __future__ import annotations

import uuid
from decimal import Decimal

from evolutivo_balance.adapters.repository import Lock
from evolutivo_balance.domain.model import (
    LedgerEntry,
    RefundMade,
    WriteOffMade,
    check_refund,
    refund_entry,
    same_entry,
    write_off_entry,
)
from evolutivo_balance.service_layer.handlers import group_of
from evolutivo_balance.service_layer.unit_of_work import BalanceUnitOfWork


async def _first(uow: BalanceUnitOfWork, entry: LedgerEntry) -> LedgerEntry | None:
    return await uow.ledger.by_source(entry.type, entry.source_type, entry.source_id)


async def write_off(
    uow: BalanceUnitOfWork,
    account_id: uuid.UUID,
    balance_group_id: uuid.UUID | None,
    amount: Decimal,
    currency_code: str,
    source_type: str,
    source_id: str,
    reason_code: str,
    reason: str,
    actor: str,
) -> LedgerEntry:
    """A write-off entry (a credit) and WriteOffMade, once per (source_type, source_id): the same
    source again returns the first entry when it names the same account, group and amount, and is
    refused (INVALID_ARGUMENT on source_id, WRITE_OFF_SOURCE_REUSED) when it does not. A write-off
    may leave the group in credit (the debt may sit in another group): the amount is the caller's."""
    group = await group_of(uow, account_id, balance_group_id)
    entry = write_off_entry(
        group, amount, currency_code, source_type, source_id, reason_code, reason, actor, uow.clock.now()
    )
    first = await _first(uow, entry)
    if first is None:
        group.require_open("balance_group_id")
        if await uow.book([entry]):
            uow.record(WriteOffMade(entry))
            return entry
        # Booked by a concurrent call that committed while this one waited on the source.
        first = await _first(uow, entry)
        assert first is not None
    same_entry(first, entry, "source_id", "WRITE_OFF_SOURCE_REUSED")
    return first


async def record_refund(
    uow: BalanceUnitOfWork,
    account_id: uuid.UUID,
    balance_group_id: uuid.UUID | None,
    amount: Decimal,
    currency_code: str,
    reference: str,
    reason: str,
    actor: str,
) -> LedgerEntry:
    """A refund entry (a debit) and RefundMade, once per reference (as write_off is once per
    source; REFUND_REFERENCE_REUSED for another account, group or amount). The group is locked
    FOR NO KEY UPDATE before its balance is read, so two refunds of one credit cannot both pass
    the check: a refund larger than the credit is refused (FAILED_PRECONDITION,
    REFUND_EXCEEDS_CREDIT) and changes nothing."""
    group = await group_of(uow, account_id, balance_group_id, lock=Lock.BALANCE)
    entry = refund_entry(group, amount, currency_code, reference, reason, actor, uow.clock.now())
    first = await _first(uow, entry)
    if first is None:
        group.require_open("balance_group_id")
        check_refund(group, entry)
        if await uow.book([entry]):
            uow.record(RefundMade(entry))
            return entry
        first = await _first(uow, entry)
        assert first is not None
    same_entry(first, entry, "reference", "REFUND_REFERENCE_REUSED")
    return first
