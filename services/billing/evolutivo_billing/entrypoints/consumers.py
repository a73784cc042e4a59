"""Events billing applies, from the other services' streams."""

from __future__ import annotations

import uuid

from evolutivo.customer.v1 import events_pb2 as customer_events
from evolutivo_runtime.messaging.consumer import EventHandler, Subscription
from evolutivo_runtime.messaging.envelope import EventMeta
from evolutivo_runtime.messaging.streams import stream_name

from evolutivo_billing.adapters import proto
from evolutivo_billing.service_layer import handlers
from evolutivo_billing.service_layer.unit_of_work import BillingUnitOfWork

ACCOUNT_CREATED = "evolutivo.customer.v1.account.created"


async def on_account_created(uow: BillingUnitOfWork, event: customer_events.AccountCreated, meta: EventMeta) -> None:
    account = event.account
    await handlers.open_bill_unit(
        uow,
        uuid.UUID(account.account_id),
        account.currency_code,
        account.time_zone,
        proto.profile_from_customer_pb(account.billing_profile),
        uow.clock.now(),
    )


def subscriptions() -> list[Subscription[BillingUnitOfWork]]:
    return [
        Subscription(
            durable="billing",
            stream=stream_name("customer"),
            subjects=[ACCOUNT_CREATED],
            handlers={
                customer_events.AccountCreated.DESCRIPTOR.full_name: EventHandler(
                    customer_events.AccountCreated, on_account_created
                ),
            },
        )
    ]
