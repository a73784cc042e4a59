"""Use cases on payments: record one (idempotent on its reference), reverse one, read one.

Writes run inside a unit of work the entrypoint opened and commits (run_idempotent).
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal

from evolutivo_runtime.errors import NotFound

from evolutivo_balance.adapters.repository import Lock
from evolutivo_balance.domain.model import (
    MAX_ACTOR,
    MAX_REASON,
    LedgerEntry,
    Payment,
    PaymentMethod,
    PaymentState,
    check_text,
)
from evolutivo_balance.service_layer.handlers import default_group, group_of
from evolutivo_balance.service_layer.unit_of_work import BalanceUnitOfWork


@dataclass(frozen=True)
class RecordPayment:
    account_id: uuid.UUID
    # None: the account's default group.
    balance_group_id: uuid.UUID | None
    amount: Decimal
    currency_code: str
    method: PaymentMethod
    reference: str
    # None: now.
    received_time: datetime | None


async def _entry(uow: BalanceUnitOfWork, entry_id: uuid.UUID | None) -> LedgerEntry:
    assert entry_id is not None
    entry = await uow.ledger.get(entry_id)
    assert entry is not None, "a payment's entries are booked with it"
    return entry


async def record_payment(uow: BalanceUnitOfWork, cmd: RecordPayment) -> tuple[Payment, LedgerEntry]:
    """A credit entry on the group, and PaymentRecorded, once per reference: the same reference
    again returns the first payment when it names the same account, group, amount and method,
    and is refused (INVALID_ARGUMENT on `reference`) when it does not. Concurrent calls with one
    reference: the second waits for the first to commit, then gets its payment."""
    now = uow.clock.now()
    group = await group_of(uow, cmd.account_id, cmd.balance_group_id)
    payment, entry = Payment.record(
        group, cmd.amount, cmd.currency_code, cmd.method, cmd.reference, cmd.received_time, now
    )
    first = await uow.payments.get(reference=payment.reference)
    if first is None:
        group.require_open("balance_group_id")
        if await uow.payments.add(payment):
            await uow.book([entry])
            uow.track(payment)
            return payment, entry
        # Recorded by a concurrent call that committed while this one waited on the reference.
        first = await uow.payments.get(reference=payment.reference)
        assert first is not None
    first.check_retry(payment)
    return first, await _entry(uow, first.entry_id)


async def _load(uow: BalanceUnitOfWork, payment_id: uuid.UUID | None, reference: str) -> Payment:
    payment = await uow.payments.get(payment_id, reference, for_update=True)
    if payment is None:
        raise NotFound("payment", str(payment_id) if payment_id is not None else reference)
    return payment


async def reverse_payment(
    uow: BalanceUnitOfWork, payment_id: uuid.UUID | None, reference: str, reason: str, actor: str
) -> tuple[Payment, LedgerEntry]:
    """A payment_reversal entry restoring what the payment paid, on the payment's group (on the
    default group when that one closed since), and PaymentReversed. A reversed payment comes back
    unchanged with its reversal entry."""
    reason = check_text("reason", reason, MAX_REASON, required=True)
    actor = check_text("actor", actor, MAX_ACTOR, required=False)
    payment = await _load(uow, payment_id, reference)
    if payment.state is PaymentState.REVERSED:
        return payment, await _entry(uow, payment.reversal_entry_id)
    group = await group_of(uow, payment.account_id, payment.balance_group_id)
    if not group.is_open:
        group = await default_group(uow, payment.account_id, Lock.SHARE)
    entry = payment.reverse(group, reason, actor, uow.clock.now())
    await uow.book([entry])
    await uow.payments.save(payment)
    uow.track(payment)
    return payment, entry


async def get_payment(uow: BalanceUnitOfWork, payment_id: uuid.UUID | None, reference: str) -> Payment:
    async with uow:
        payment = await uow.payments.get(payment_id, reference)
        if payment is None:
            raise NotFound("payment", str(payment_id) if payment_id is not None else reference)
        return payment
