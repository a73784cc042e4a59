"""Events customer applies, from the other services' streams."""

from __future__ import annotations

import uuid

from evolutivo.charging.v1 import events_pb2 as charging_events
from evolutivo_runtime.messaging.consumer import EventHandler, Subscription
from evolutivo_runtime.messaging.envelope import EventMeta
from evolutivo_runtime.messaging.streams import stream_name

from evolutivo_customer.service_layer import accounts
from evolutivo_customer.service_layer.unit_of_work import CustomerUnitOfWork

CHARGES_CREATED = "evolutivo.charging.v1.charges.created"


async def on_charges_created(uow: CustomerUnitOfWork, event: charging_events.ChargesCreated, meta: EventMeta) -> None:
    """The accounts charged now have charges: their currency is fixed from here on."""
    await accounts.note_charges(uow, {uuid.UUID(c.account_id) for c in event.charges})


def subscriptions() -> list[Subscription[CustomerUnitOfWork]]:
    return [
        Subscription(
            durable="customer",
            stream=stream_name("charging"),
            subjects=[CHARGES_CREATED],
            handlers={
                charging_events.ChargesCreated.DESCRIPTOR.full_name: EventHandler(
                    charging_events.ChargesCreated, on_charges_created
                ),
            },
        )
    ]
