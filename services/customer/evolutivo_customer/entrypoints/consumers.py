"""Events customer applies, from the other services' streams."""

from __future__ import annotations

import uuid
from collections.abc import Sequence

from evolutivo.charging.v1 import events_pb2 as charging_events
from evolutivo_runtime.messaging.consumer import BatchHandler, EventHandler, Subscription
from evolutivo_runtime.messaging.envelope import EventMeta
from evolutivo_runtime.messaging.streams import stream_name

from evolutivo_customer.service_layer import accounts
from evolutivo_customer.service_layer.unit_of_work import CustomerUnitOfWork

CHARGES_CREATED = "evolutivo.charging.v1.charges.created"


async def on_charges_created(uow: CustomerUnitOfWork, event: charging_events.ChargesCreated, meta: EventMeta) -> None:
    """The accounts charged now have charges: their currency is fixed from here on."""
    await on_charges_created_batch(uow, [(event, meta)])


async def on_charges_created_batch(
    uow: CustomerUnitOfWork, batch: Sequence[tuple[charging_events.ChargesCreated, EventMeta]]
) -> None:
    """A fetched batch's ChargesCreated in one call: every RecordUsage group, batch call and stream
    slice publishes its own message, and one lock-and-mark of all their accounts costs what one
    message's did. Marking is idempotent and order-free, so the effect is on_charges_created's
    applied one by one."""
    await accounts.note_charges(uow, {uuid.UUID(c.account_id) for event, _ in batch for c in event.charges})


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
            batch_handlers={
                charging_events.ChargesCreated.DESCRIPTOR.full_name: BatchHandler(on_charges_created_batch),
            },
        )
    ]
