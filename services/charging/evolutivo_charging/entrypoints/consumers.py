"""Events charging applies, from the other services' streams."""

from __future__ import annotations

import uuid

from evolutivo.customer.v1 import events_pb2 as customer_events
from evolutivo_runtime.messaging.consumer import EventHandler, Subscription
from evolutivo_runtime.messaging.envelope import EventMeta
from evolutivo_runtime.messaging.streams import stream_name
from evolutivo_runtime.timestamps import from_timestamp

from evolutivo_charging.adapters import proto
from evolutivo_charging.service_layer import handlers
from evolutivo_charging.service_layer.unit_of_work import ChargingUnitOfWork

ACCOUNT_CREATED = "evolutivo.customer.v1.account.created"
ACCOUNT_STATUS_CHANGED = "evolutivo.customer.v1.account.status_changed"


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


async def on_account_status_changed(
    uow: ChargingUnitOfWork, event: customer_events.AccountStatusChanged, meta: EventMeta
) -> None:
    account = event.account
    status = event.change.status if event.HasField("change") else account.status
    # The change's own time orders an account's status changes; the event's time if it has none.
    change_time = from_timestamp(event.change.change_time) if event.change.HasField("change_time") else meta.occurred_at
    await handlers.change_status(
        uow,
        uuid.UUID(account.account_id),
        account.currency_code,
        account.time_zone,
        proto.status_from_customer_pb(status),
        change_time,
        uow.clock.now(),
    )


def subscriptions() -> list[Subscription[ChargingUnitOfWork]]:
    return [
        Subscription(
            durable="charging",
            stream=stream_name("customer"),
            subjects=[ACCOUNT_CREATED, ACCOUNT_STATUS_CHANGED],
            handlers={
                customer_events.AccountCreated.DESCRIPTOR.full_name: EventHandler(
                    customer_events.AccountCreated, on_account_created
                ),
                customer_events.AccountStatusChanged.DESCRIPTOR.full_name: EventHandler(
                    customer_events.AccountStatusChanged, on_account_status_changed
                ),
            },
        )
    ]
