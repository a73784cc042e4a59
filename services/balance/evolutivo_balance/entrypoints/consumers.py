"""Events balance applies, from the other services' streams."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import datetime

from evolutivo.billing.v1 import events_pb2 as billing_events
from evolutivo.charging.v1 import events_pb2 as charging_events
from evolutivo.charging.v1 import usage_pb2
from evolutivo.customer.v1 import account_pb2
from evolutivo.customer.v1 import events_pb2 as customer_events
from evolutivo_runtime.messaging.consumer import BatchHandler, EventHandler, Subscription
from evolutivo_runtime.messaging.envelope import EventMeta
from evolutivo_runtime.messaging.streams import stream_name
from evolutivo_runtime.money import from_money
from evolutivo_runtime.timestamps import from_timestamp

from evolutivo_balance.domain.model import AccountStatus, BillingEntry, Charge, EntryType, SourceType
from evolutivo_balance.service_layer import handlers
from evolutivo_balance.service_layer.unit_of_work import BalanceUnitOfWork

ACCOUNT_CREATED = "evolutivo.customer.v1.account.created"
ACCOUNT_UPDATED = "evolutivo.customer.v1.account.updated"
ACCOUNT_STATUS_CHANGED = "evolutivo.customer.v1.account.status_changed"
CHARGES_CREATED = "evolutivo.charging.v1.charges.created"
BILL_ISSUED = "evolutivo.billing.v1.bill.issued"
CREDIT_NOTE_ISSUED = "evolutivo.billing.v1.credit_note.issued"


_STATUSES = {
    account_pb2.ACCOUNT_STATUS_ACTIVE: AccountStatus.ACTIVE,
    account_pb2.ACCOUNT_STATUS_SUSPENDED: AccountStatus.SUSPENDED,
    account_pb2.ACCOUNT_STATUS_CLOSED: AccountStatus.CLOSED,
}


async def _learn_status(
    uow: BalanceUnitOfWork,
    account: account_pb2.Account,
    status: account_pb2.AccountStatus.ValueType,
    status_time: datetime,
) -> None:
    """The status the event carries (none: nothing to learn)."""
    if status in _STATUSES:
        await handlers.learn_account_status(uow, uuid.UUID(account.account_id), _STATUSES[status], status_time)


def _account_time(account: account_pb2.Account, meta: EventMeta) -> datetime:
    """When the account was as the event shows it: its update time, the event's time without one."""
    return from_timestamp(account.update_time) if account.HasField("update_time") else meta.occurred_at


async def on_account_created(uow: BalanceUnitOfWork, event: customer_events.AccountCreated, meta: EventMeta) -> None:
    account = event.account
    await handlers.open_default_group(uow, uuid.UUID(account.account_id), account.currency_code, uow.clock.now())
    await _learn_status(uow, account, account.status, _account_time(account, meta))


async def on_account_updated(uow: BalanceUnitOfWork, event: customer_events.AccountUpdated, meta: EventMeta) -> None:
    account = event.account
    if "currency_code" in event.changed_fields:
        await handlers.change_currency(uow, uuid.UUID(account.account_id), account.currency_code, uow.clock.now())
    await _learn_status(uow, account, account.status, _account_time(account, meta))


async def on_account_status_changed(
    uow: BalanceUnitOfWork, event: customer_events.AccountStatusChanged, meta: EventMeta
) -> None:
    """The account's new status, ordered by the change's own time (CreateBalanceGroup refuses a
    closed account). Balance opens no group here: AccountCreated, or a charge, does."""
    account = event.account
    status = event.change.status if event.HasField("change") else account.status
    when = from_timestamp(event.change.change_time) if event.change.HasField("change_time") else None
    await _learn_status(uow, account, status, when or _account_time(account, meta))


def charge_from_pb(charge: usage_pb2.RatedCharge, currency_code: str) -> Charge:
    """A malformed charge raises: its message is retried, then dead-lettered, never half-booked."""
    return Charge(
        charge_id=uuid.UUID(charge.charge_id),
        account_id=uuid.UUID(charge.account_id),
        balance_group=charge.balance_group,
        amount=from_money(charge.amount),
        currency_code=charge.amount.currency_code or currency_code,
        rate_time=from_timestamp(charge.rate_time) if charge.HasField("rate_time") else None,
        reverses_charge_id=uuid.UUID(charge.reverses_charge_id) if charge.reverses_charge_id else None,
    )


async def on_charges_created(uow: BalanceUnitOfWork, event: charging_events.ChargesCreated, meta: EventMeta) -> None:
    """Books the charges; their groups' balances move when the whole fetched batch commits."""
    charges = [charge_from_pb(c, event.currency_code) for c in event.charges]
    await handlers.book_charges(uow, charges, uow.clock.now())


async def on_charges_created_batch(
    uow: BalanceUnitOfWork, batch: Sequence[tuple[charging_events.ChargesCreated, EventMeta]]
) -> None:
    """A fetched batch's ChargesCreated booked in one call: single RecordUsage calls and stream
    slices each publish their own message, and one lookup of the groups and one insert of the
    entries for all of them costs a fraction of one per message. Booking is idempotent per charge,
    so the effect is on_charges_created's applied one by one."""
    charges = [charge_from_pb(c, event.currency_code) for event, _ in batch for c in event.charges]
    await handlers.book_charges(uow, charges, uow.clock.now())


def bill_tax_from_pb(event: billing_events.BillIssued) -> BillingEntry:
    """A bill's tax as balance books it. A malformed bill raises: retried, then dead-lettered."""
    bill = event.bill
    return BillingEntry(
        account_id=uuid.UUID(bill.account_id),
        type=EntryType.TAX,
        source_type=SourceType.BILL,
        source_id=str(uuid.UUID(bill.bill_id)),
        amount=from_money(bill.tax_total),
        currency_code=bill.tax_total.currency_code or bill.currency_code,
        effective_time=from_timestamp(bill.issue_time) if bill.HasField("issue_time") else None,
        reason=f"tax of bill {bill.bill_number}" if bill.bill_number else "",
    )


def credit_note_from_pb(event: billing_events.CreditNoteIssued) -> BillingEntry:
    note = event.credit_note
    return BillingEntry(
        account_id=uuid.UUID(note.account_id),
        type=EntryType.CREDIT_NOTE,
        source_type=SourceType.CREDIT_NOTE,
        source_id=str(uuid.UUID(note.credit_note_id)),
        amount=-from_money(note.total),
        currency_code=note.total.currency_code or note.currency_code,
        effective_time=from_timestamp(note.issue_time) if note.HasField("issue_time") else None,
        reason=f"credit note {note.credit_note_number}" if note.credit_note_number else "",
    )


async def on_bill_issued(uow: BalanceUnitOfWork, event: billing_events.BillIssued, meta: EventMeta) -> None:
    """Books the bill's tax (charges were booked net of it), once per bill."""
    await handlers.book_billing_entry(uow, bill_tax_from_pb(event), uow.clock.now())


async def on_credit_note_issued(
    uow: BalanceUnitOfWork, event: billing_events.CreditNoteIssued, meta: EventMeta
) -> None:
    """Credits the credit note's total (tax included), once per credit note."""
    await handlers.book_billing_entry(uow, credit_note_from_pb(event), uow.clock.now())


def _billing_entry_from_pb(event: billing_events.BillIssued | billing_events.CreditNoteIssued) -> BillingEntry:
    return bill_tax_from_pb(event) if isinstance(event, billing_events.BillIssued) else credit_note_from_pb(event)


async def on_billing_documents_batch(
    uow: BalanceUnitOfWork,
    batch: Sequence[tuple[billing_events.BillIssued | billing_events.CreditNoteIssued, EventMeta]],
) -> None:
    """A fetched batch's BillIssued and CreditNoteIssued booked in one call (a bill run issues
    thousands of bills): the effects of on_bill_issued / on_credit_note_issued one by one, each
    entry idempotent on its bill or credit note."""
    items = [_billing_entry_from_pb(event) for event, _ in batch]
    await handlers.book_billing_entries(uow, items, uow.clock.now())


# One instance for both types: a batch's bills and credit notes are booked in one call.
_BILLING_DOCUMENTS: BatchHandler[BalanceUnitOfWork] = BatchHandler(on_billing_documents_batch)


def subscriptions() -> list[Subscription[BalanceUnitOfWork]]:
    return [
        Subscription(
            durable="balance",
            stream=stream_name("customer"),
            subjects=[ACCOUNT_CREATED, ACCOUNT_UPDATED, ACCOUNT_STATUS_CHANGED],
            handlers={
                customer_events.AccountCreated.DESCRIPTOR.full_name: EventHandler(
                    customer_events.AccountCreated, on_account_created
                ),
                customer_events.AccountUpdated.DESCRIPTOR.full_name: EventHandler(
                    customer_events.AccountUpdated, on_account_updated
                ),
                customer_events.AccountStatusChanged.DESCRIPTOR.full_name: EventHandler(
                    customer_events.AccountStatusChanged, on_account_status_changed
                ),
            },
        ),
        Subscription(
            durable="balance",
            stream=stream_name("charging"),
            subjects=[CHARGES_CREATED],
            handlers={
                charging_events.ChargesCreated.DESCRIPTOR.full_name: EventHandler(
                    charging_events.ChargesCreated, on_charges_created
                ),
            },
            batch_handlers={
                charging_events.ChargesCreated.DESCRIPTOR.full_name: BatchHandler(on_charges_created_batch)
            },
        ),
        Subscription(
            durable="balance",
            stream=stream_name("billing"),
            subjects=[BILL_ISSUED, CREDIT_NOTE_ISSUED],
            handlers={
                billing_events.BillIssued.DESCRIPTOR.full_name: EventHandler(billing_events.BillIssued, on_bill_issued),
                billing_events.CreditNoteIssued.DESCRIPTOR.full_name: EventHandler(
                    billing_events.CreditNoteIssued, on_credit_note_issued
                ),
            },
            batch_handlers={
                billing_events.BillIssued.DESCRIPTOR.full_name: _BILLING_DOCUMENTS,
                billing_events.CreditNoteIssued.DESCRIPTOR.full_name: _BILLING_DOCUMENTS,
            },
        ),
    ]
