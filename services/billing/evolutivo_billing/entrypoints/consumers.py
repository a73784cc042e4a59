"""Events billing applies, from the other services' streams."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import datetime

from evolutivo.balance.v1 import events_pb2 as balance_events
from evolutivo.balance.v1 import payment_pb2
from evolutivo.charging.v1 import events_pb2 as charging_events
from evolutivo.customer.v1 import account_pb2
from evolutivo.customer.v1 import events_pb2 as customer_events
from evolutivo_runtime.messaging.consumer import BatchHandler, EventHandler, Subscription
from evolutivo_runtime.messaging.envelope import EventMeta
from evolutivo_runtime.messaging.streams import stream_name
from evolutivo_runtime.money import from_money
from evolutivo_runtime.timestamps import from_timestamp

from evolutivo_billing.adapters import bills_proto, collections_proto, documents_proto, proto
from evolutivo_billing.adapters.bills_repository import ReceivedPayment
from evolutivo_billing.service_layer import bills, collections, delivery, handlers, payments
from evolutivo_billing.service_layer.unit_of_work import BillingUnitOfWork

ACCOUNT_CREATED = "evolutivo.customer.v1.account.created"
ACCOUNT_STATUS_CHANGED = "evolutivo.customer.v1.account.status_changed"
BILLING_PROFILE_CHANGED = "evolutivo.customer.v1.account.billing_profile_changed"
# For documents and delivery (docs/billing.md, "Documents"): the customer details billing keeps.
ACCOUNT_UPDATED = "evolutivo.customer.v1.account.updated"
CONTACT_CHANGED = "evolutivo.customer.v1.contact.changed"
PERSONAL_DATA_ERASED = "evolutivo.customer.v1.account.personal_data_erased"
CHARGES_CREATED = "evolutivo.charging.v1.charges.created"
PAYMENT_RECORDED = "evolutivo.balance.v1.payment.recorded"
PAYMENT_REVERSED = "evolutivo.balance.v1.payment.reversed"


def _create_time(account: account_pb2.Account) -> datetime | None:
    """When customer created the account: the instant its first bill cycle starts from."""
    return from_timestamp(account.create_time) if account.HasField("create_time") else None


def _facts(account: account_pb2.Account, profile: account_pb2.BillingProfile) -> handlers.AccountFacts:
    return handlers.AccountFacts(
        uuid.UUID(account.account_id),
        account.currency_code,
        account.time_zone,
        proto.profile_from_customer_pb(profile),
        _create_time(account),
        proto.threshold_from_customer_pb(profile, account.currency_code),
    )


async def on_account_created(uow: BillingUnitOfWork, event: customer_events.AccountCreated, meta: EventMeta) -> None:
    account = event.account
    await delivery.record_account(uow, documents_proto.account_details_from_pb(account, meta.occurred_at))
    await handlers.open_bill_unit(
        uow,
        uuid.UUID(account.account_id),
        account.currency_code,
        account.time_zone,
        proto.profile_from_customer_pb(account.billing_profile),
        uow.clock.now(),
        # The first cycle starts on the local day the account was created (the event's time if
        # the account does not say), however late billing applies the event.
        _create_time(account) or meta.occurred_at,
        proto.threshold_from_customer_pb(account.billing_profile, account.currency_code),
    )
    await collections.record_account_facts(uow, collections_proto.account_facts_from_pb(account, meta.occurred_at))


async def on_account_status_changed(
    uow: BillingUnitOfWork, event: customer_events.AccountStatusChanged, meta: EventMeta
) -> None:
    status = event.change.status if event.HasField("change") else event.account.status
    # The change's own time orders an account's status changes; the event's time if it has none.
    change_time: datetime = (
        from_timestamp(event.change.change_time) if event.change.HasField("change_time") else meta.occurred_at
    )
    await handlers.record_account_status(
        uow,
        _facts(event.account, event.account.billing_profile),
        proto.status_from_customer_pb(status),
        change_time,
    )
    await collections.record_account_facts(
        uow, collections_proto.account_facts_from_pb(event.account, meta.occurred_at)
    )


async def on_billing_profile_changed(
    uow: BillingUnitOfWork, event: customer_events.BillingProfileChanged, meta: EventMeta
) -> None:
    change_time = from_timestamp(event.change_time) if event.HasField("change_time") else meta.occurred_at
    # Opened from this event (it overtook AccountCreated), the unit starts with the previous profile.
    previous = event.previous if event.HasField("previous") else event.account.billing_profile
    # The delivery method is part of the profile: documents and delivery follow it at once.
    await delivery.record_account(uow, documents_proto.account_details_from_pb(event.account, meta.occurred_at))
    await handlers.schedule_profile_change(
        uow,
        _facts(event.account, previous),
        proto.profile_from_customer_pb(event.account.billing_profile),
        change_time,
        proto.threshold_from_customer_pb(event.account.billing_profile, event.account.currency_code),
    )
    # Exemption and the named scenario apply to collections at once (docs/collections.md).
    await collections.record_account_facts(
        uow, collections_proto.account_facts_from_pb(event.account, meta.occurred_at)
    )


async def on_account_updated(uow: BillingUnitOfWork, event: customer_events.AccountUpdated, meta: EventMeta) -> None:
    await delivery.record_account(uow, documents_proto.account_details_from_pb(event.account, meta.occurred_at))
    await collections.record_account_facts(
        uow, collections_proto.account_facts_from_pb(event.account, meta.occurred_at)
    )


async def on_contact_changed(uow: BillingUnitOfWork, event: customer_events.ContactChanged, meta: EventMeta) -> None:
    removed = event.kind == customer_events.CHANGE_KIND_REMOVED
    await delivery.record_contact(uow, documents_proto.contact_from_pb(event.contact, removed, meta.occurred_at))


async def on_personal_data_erased(
    uow: BillingUnitOfWork, event: customer_events.PersonalDataErased, meta: EventMeta
) -> None:
    await delivery.erase_personal_data(uow, documents_proto.account_details_from_pb(event.account, meta.occurred_at))


async def on_charges_created(uow: BillingUnitOfWork, event: charging_events.ChargesCreated, meta: EventMeta) -> None:
    await bills.record_charges(uow, [bills_proto.charge_from_pb(c, event.currency_code) for c in event.charges])


async def on_charges_created_batch(
    uow: BillingUnitOfWork, batch: Sequence[tuple[charging_events.ChargesCreated, EventMeta]]
) -> None:
    """A fetched batch's ChargesCreated recorded in one call (single RecordUsage calls and stream
    slices each publish their own message): record_charges skips charges it holds already, so the
    effect is on_charges_created's applied one by one, for one lookup per account instead of one
    per account and message."""
    await bills.record_charges(
        uow, [bills_proto.charge_from_pb(c, event.currency_code) for event, _ in batch for c in event.charges]
    )


def _payment(payment: payment_pb2.Payment, meta: EventMeta) -> ReceivedPayment:
    amount = from_money(payment.amount)
    return ReceivedPayment(
        payment_id=uuid.UUID(payment.payment_id),
        account_id=uuid.UUID(payment.account_id),
        currency_code=payment.amount.currency_code,
        amount=amount,
        unallocated=amount,
        reversed=False,
        received_time=from_timestamp(payment.received_time) if payment.HasField("received_time") else meta.occurred_at,
    )


async def on_payment_recorded(uow: BillingUnitOfWork, event: balance_events.PaymentRecorded, meta: EventMeta) -> None:
    await payments.record_payment(uow, _payment(event.payment, meta))
    # The account's collections case closes when its overdue debt is paid.
    await collections.review_account(uow, uuid.UUID(event.payment.account_id))


async def on_payment_reversed(uow: BillingUnitOfWork, event: balance_events.PaymentReversed, meta: EventMeta) -> None:
    await payments.reverse_payment(uow, _payment(event.payment, meta))
    await collections.review_account(uow, uuid.UUID(event.payment.account_id))


def subscriptions() -> list[Subscription[BillingUnitOfWork]]:
    return [
        Subscription(
            durable="billing",
            stream=stream_name("customer"),
            subjects=[
                ACCOUNT_CREATED,
                ACCOUNT_STATUS_CHANGED,
                BILLING_PROFILE_CHANGED,
                ACCOUNT_UPDATED,
                CONTACT_CHANGED,
                PERSONAL_DATA_ERASED,
            ],
            handlers={
                customer_events.AccountCreated.DESCRIPTOR.full_name: EventHandler(
                    customer_events.AccountCreated, on_account_created
                ),
                customer_events.AccountStatusChanged.DESCRIPTOR.full_name: EventHandler(
                    customer_events.AccountStatusChanged, on_account_status_changed
                ),
                customer_events.BillingProfileChanged.DESCRIPTOR.full_name: EventHandler(
                    customer_events.BillingProfileChanged, on_billing_profile_changed
                ),
                customer_events.AccountUpdated.DESCRIPTOR.full_name: EventHandler(
                    customer_events.AccountUpdated, on_account_updated
                ),
                customer_events.ContactChanged.DESCRIPTOR.full_name: EventHandler(
                    customer_events.ContactChanged, on_contact_changed
                ),
                customer_events.PersonalDataErased.DESCRIPTOR.full_name: EventHandler(
                    customer_events.PersonalDataErased, on_personal_data_erased
                ),
            },
        ),
        Subscription(
            durable="billing",
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
            durable="billing",
            stream=stream_name("balance"),
            subjects=[PAYMENT_RECORDED, PAYMENT_REVERSED],
            handlers={
                balance_events.PaymentRecorded.DESCRIPTOR.full_name: EventHandler(
                    balance_events.PaymentRecorded, on_payment_recorded
                ),
                balance_events.PaymentReversed.DESCRIPTOR.full_name: EventHandler(
                    balance_events.PaymentReversed, on_payment_reversed
                ),
            },
        ),
    ]
