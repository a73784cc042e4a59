"""Events the ERP gateway applies, from the other services' streams."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Sequence
from datetime import UTC
from typing import Any

from evolutivo.balance.v1 import events_pb2 as balance_events
from evolutivo.billing.v1 import collections_events_pb2 as collections_events
from evolutivo.billing.v1 import events_pb2 as billing_events
from evolutivo.customer.v1 import events_pb2 as customer_events
from evolutivo_runtime.messaging.consumer import BatchHandler, EventHandler, Subscription
from evolutivo_runtime.messaging.envelope import EventMeta
from evolutivo_runtime.messaging.streams import stream_name

from evolutivo_erp_gateway.domain.model import CREDIT_NOTE_CREDIT, PAYMENT_CREDIT, AllocatedCredit
from evolutivo_erp_gateway.service_layer import handlers
from evolutivo_erp_gateway.service_layer.unit_of_work import ErpGatewayUnitOfWork

ACCOUNT_CREATED = "evolutivo.customer.v1.account.created"
ACCOUNT_UPDATED = "evolutivo.customer.v1.account.updated"
PERSONAL_DATA_ERASED = "evolutivo.customer.v1.account.personal_data_erased"
CONTACT_CHANGED = "evolutivo.customer.v1.contact.changed"
BILL_ISSUED = "evolutivo.billing.v1.bill.issued"
CREDIT_NOTE_ISSUED = "evolutivo.billing.v1.credit_note.issued"
CASE_REFERRED = "evolutivo.billing.v1.collections_case.referred"
PAYMENT_ALLOCATED = "evolutivo.billing.v1.payment.allocated"
CREDIT_NOTE_ALLOCATED = "evolutivo.billing.v1.credit_note.allocated"
PAYMENT_RECORDED = "evolutivo.balance.v1.payment.recorded"
PAYMENT_REVERSED = "evolutivo.balance.v1.payment.reversed"
WRITE_OFF_MADE = "evolutivo.balance.v1.write_off.made"


async def on_account_created(uow: ErpGatewayUnitOfWork, event: customer_events.AccountCreated, meta: EventMeta) -> None:
    # The customer waits, PENDING, until a connection to an ERP exists to send it to.
    await handlers.customer_changed(uow, event.account)


async def on_account_updated(uow: ErpGatewayUnitOfWork, event: customer_events.AccountUpdated, meta: EventMeta) -> None:
    await handlers.customer_changed(uow, event.account)


async def on_personal_data_erased(
    uow: ErpGatewayUnitOfWork, event: customer_events.PersonalDataErased, meta: EventMeta
) -> None:
    await handlers.personal_data_erased(uow, event.account)


async def on_contact_changed(uow: ErpGatewayUnitOfWork, event: customer_events.ContactChanged, meta: EventMeta) -> None:
    removed = event.kind == customer_events.CHANGE_KIND_REMOVED
    await handlers.contact_changed(uow, event.contact, removed, meta.occurred_at)


async def on_case_referred(
    uow: ErpGatewayUnitOfWork, event: collections_events.CollectionsCaseReferred, meta: EventMeta
) -> None:
    await handlers.case_referred(uow, event, meta.event_id, meta.occurred_at)


async def on_bill_issued(uow: ErpGatewayUnitOfWork, event: billing_events.BillIssued, meta: EventMeta) -> None:
    await handlers.bill_issued(uow, event.bill)


async def on_bills_issued(
    uow: ErpGatewayUnitOfWork, events: Sequence[tuple[billing_events.BillIssued, EventMeta]]
) -> None:
    # A bill run publishes thousands at once: a fetched batch's in a few statements.
    await handlers.bills_issued(uow, [event.bill for event, _ in events])


async def on_credit_note_issued(
    uow: ErpGatewayUnitOfWork, event: billing_events.CreditNoteIssued, meta: EventMeta
) -> None:
    await handlers.credit_note_issued(uow, event.credit_note)


async def on_payment_allocated(
    uow: ErpGatewayUnitOfWork, event: billing_events.PaymentAllocated, meta: EventMeta
) -> None:
    await handlers.payment_allocated(uow, event)


async def on_credit_note_allocated(
    uow: ErpGatewayUnitOfWork, event: billing_events.CreditNoteAllocated, meta: EventMeta
) -> None:
    await handlers.credit_note_allocated(uow, event)


async def on_payment_recorded(
    uow: ErpGatewayUnitOfWork, event: balance_events.PaymentRecorded, meta: EventMeta
) -> None:
    await handlers.payment_recorded(uow, event.payment)


async def on_payment_reversed(
    uow: ErpGatewayUnitOfWork, event: balance_events.PaymentReversed, meta: EventMeta
) -> None:
    await handlers.payment_reversed(uow, event.payment)


async def on_write_off_made(uow: ErpGatewayUnitOfWork, event: balance_events.WriteOffMade, meta: EventMeta) -> None:
    entry = event.entry
    effective = entry.effective_time.ToDatetime(tzinfo=UTC) if entry.HasField("effective_time") else meta.occurred_at
    await handlers.write_off_made(uow, entry, effective)


def _owner_lock(credit: AllocatedCredit, owner_id: str) -> list[str]:
    # Read as a UUID, as the handlers read it (an upper-case id is the same owner); a malformed
    # one raises and names no lock (its handler refuses the event).
    return [credit.lock_name(uuid.UUID(owner_id))]


# By event type, the owner lock (AllocatedCredit.lock_name) the event's handler takes: a payment's
# or a credit note's own event and its allocations come on two streams, to two consumers, and take
# turns on it. Named up front, a fetched batch takes all of its owners' locks at once in one order
# (Subscription.advisory_locks), so two batches holding each other's payments do not deadlock.
OWNER_LOCKS: dict[str, Callable[[Any], list[str]]] = {
    balance_events.PaymentRecorded.DESCRIPTOR.full_name: lambda e: _owner_lock(PAYMENT_CREDIT, e.payment.payment_id),
    billing_events.PaymentAllocated.DESCRIPTOR.full_name: lambda e: _owner_lock(PAYMENT_CREDIT, e.payment_id),
    billing_events.CreditNoteIssued.DESCRIPTOR.full_name: lambda e: _owner_lock(
        CREDIT_NOTE_CREDIT, e.credit_note.credit_note_id
    ),
    billing_events.CreditNoteAllocated.DESCRIPTOR.full_name: lambda e: _owner_lock(
        CREDIT_NOTE_CREDIT, e.credit_note_id
    ),
}


def _locks_of(*event_types: str) -> dict[str, Callable[[Any], list[str]]]:
    return {t: OWNER_LOCKS[t] for t in event_types}


def subscriptions() -> list[Subscription[ErpGatewayUnitOfWork]]:
    return [
        Subscription(
            durable="erp_gateway",
            stream=stream_name("customer"),
            subjects=[ACCOUNT_CREATED, ACCOUNT_UPDATED, PERSONAL_DATA_ERASED, CONTACT_CHANGED],
            handlers={
                customer_events.AccountCreated.DESCRIPTOR.full_name: EventHandler(
                    customer_events.AccountCreated, on_account_created
                ),
                customer_events.AccountUpdated.DESCRIPTOR.full_name: EventHandler(
                    customer_events.AccountUpdated, on_account_updated
                ),
                customer_events.PersonalDataErased.DESCRIPTOR.full_name: EventHandler(
                    customer_events.PersonalDataErased, on_personal_data_erased
                ),
                customer_events.ContactChanged.DESCRIPTOR.full_name: EventHandler(
                    customer_events.ContactChanged, on_contact_changed
                ),
            },
        ),
        Subscription(
            durable="erp_gateway",
            stream=stream_name("billing"),
            subjects=[BILL_ISSUED, CREDIT_NOTE_ISSUED, CASE_REFERRED, PAYMENT_ALLOCATED, CREDIT_NOTE_ALLOCATED],
            handlers={
                billing_events.BillIssued.DESCRIPTOR.full_name: EventHandler(billing_events.BillIssued, on_bill_issued),
                billing_events.CreditNoteIssued.DESCRIPTOR.full_name: EventHandler(
                    billing_events.CreditNoteIssued, on_credit_note_issued
                ),
                collections_events.CollectionsCaseReferred.DESCRIPTOR.full_name: EventHandler(
                    collections_events.CollectionsCaseReferred, on_case_referred
                ),
                billing_events.PaymentAllocated.DESCRIPTOR.full_name: EventHandler(
                    billing_events.PaymentAllocated, on_payment_allocated
                ),
                billing_events.CreditNoteAllocated.DESCRIPTOR.full_name: EventHandler(
                    billing_events.CreditNoteAllocated, on_credit_note_allocated
                ),
            },
            # A bill's effects (its payload, jobs, postings) depend on no other event of the stream.
            batch_handlers={billing_events.BillIssued.DESCRIPTOR.full_name: BatchHandler(on_bills_issued)},
            advisory_locks=_locks_of(
                billing_events.PaymentAllocated.DESCRIPTOR.full_name,
                billing_events.CreditNoteIssued.DESCRIPTOR.full_name,
                billing_events.CreditNoteAllocated.DESCRIPTOR.full_name,
            ),
        ),
        Subscription(
            durable="erp_gateway",
            stream=stream_name("balance"),
            subjects=[PAYMENT_RECORDED, PAYMENT_REVERSED, WRITE_OFF_MADE],
            handlers={
                balance_events.PaymentRecorded.DESCRIPTOR.full_name: EventHandler(
                    balance_events.PaymentRecorded, on_payment_recorded
                ),
                balance_events.PaymentReversed.DESCRIPTOR.full_name: EventHandler(
                    balance_events.PaymentReversed, on_payment_reversed
                ),
                balance_events.WriteOffMade.DESCRIPTOR.full_name: EventHandler(
                    balance_events.WriteOffMade, on_write_off_made
                ),
            },
            advisory_locks=_locks_of(balance_events.PaymentRecorded.DESCRIPTOR.full_name),
        ),
    ]
