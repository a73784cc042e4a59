"""Events the ERP gateway applies, from the other services' streams."""

from __future__ import annotations

import uuid

from evolutivo.customer.v1 import events_pb2 as customer_events
from evolutivo_runtime.messaging.consumer import EventHandler, Subscription
from evolutivo_runtime.messaging.envelope import EventMeta
from evolutivo_runtime.messaging.streams import stream_name

from evolutivo_erp_gateway.domain.model import EntityType
from evolutivo_erp_gateway.service_layer import handlers
from evolutivo_erp_gateway.service_layer.unit_of_work import ErpGatewayUnitOfWork

ACCOUNT_CREATED = "evolutivo.customer.v1.account.created"


async def on_account_created(uow: ErpGatewayUnitOfWork, event: customer_events.AccountCreated, meta: EventMeta) -> None:
    # The customer waits, PENDING, until a connection to an ERP exists to send it to.
    await handlers.await_sync(uow, EntityType.CUSTOMER, uuid.UUID(event.account.account_id), uow.clock.now())


def subscriptions() -> list[Subscription[ErpGatewayUnitOfWork]]:
    return [
        Subscription(
            durable="erp_gateway",
            stream=stream_name("customer"),
            subjects=[ACCOUNT_CREATED],
            handlers={
                customer_events.AccountCreated.DESCRIPTOR.full_name: EventHandler(
                    customer_events.AccountCreated, on_account_created
                ),
            },
        )
    ]
