"""Events balance applies, from the other services' streams."""

from __future__ import annotations

import uuid

from evolutivo.customer.v1 import events_pb2 as customer_events
from evolutivo_runtime.messaging.consumer import EventHandler, Subscription
from evolutivo_runtime.messaging.envelope import EventMeta
from evolutivo_runtime.messaging.streams import stream_name

from evolutivo_balance.service_layer import handlers
from evolutivo_balance.service_layer.unit_of_work import BalanceUnitOfWork

ACCOUNT_CREATED = "evolutivo.customer.v1.account.created"


async def on_account_created(uow: BalanceUnitOfWork, event: customer_events.AccountCreated, meta: EventMeta) -> None:
    account = event.account
    await handlers.open_default_group(uow, uuid.UUID(account.account_id), account.currency_code, uow.clock.now())


def subscriptions() -> list[Subscription[BalanceUnitOfWork]]:
    return [
        Subscription(
            durable="balance",
            stream=stream_name("customer"),
            subjects=[ACCOUNT_CREATED],
            handlers={
                customer_events.AccountCreated.DESCRIPTOR.full_name: EventHandler(
                    customer_events.AccountCreated, on_account_created
                ),
            },
        )
    ]
