"""Events charging applies, from the other services' streams."""

from __future__ import annotations

import uuid

from evolutivo.customer.v1 import events_pb2 as customer_events
from evolutivo_runtime.messaging.consumer import EventHandler, Subscription
from evolutivo_runtime.messaging.envelope import EventMeta
from evolutivo_runtime.messaging.streams import stream_name

from evolutivo_charging.adapters import proto
from evolutivo_charging.service_layer import handlers
from evolutivo_charging.service_layer.unit_of_work import ChargingUnitOfWork

ACCOUNT_CREATED = "evolutivo.customer.v1.account.created"


async def on_account_created(uow: ChargingUnitOfWork, event: customer_events.AccountCreated, meta: EventMeta) -> None:
    account = event.account
    await handlers.learn_account(
        uow,
        uuid.UUID(account.account_id),
        account.currency_code,
        account.time_zone,
        proto.status_from_customer_pb(account.status),
        uow.clock.now(),
    )


def subscriptions() -> list[Subscription[ChargingUnitOfWork]]:
    return [
        Subscription(
            durable="charging",
            stream=stream_name("customer"),
            subjects=[ACCOUNT_CREATED],
            handlers={
                customer_events.AccountCreated.DESCRIPTOR.full_name: EventHandler(
                    customer_events.AccountCreated, on_account_created
                ),
            },
        )
    ]
