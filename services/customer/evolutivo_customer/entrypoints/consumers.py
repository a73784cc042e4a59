"""Events customer applies, from the other services' streams."""

from __future__ import annotations

import functools
import uuid
from collections.abc import Sequence

from evolutivo.charging.v1 import events_pb2 as charging_events
from evolutivo_runtime.messaging.consumer import BatchHandler, EventHandler, Subscription
from evolutivo_runtime.messaging.envelope import EventMeta
from evolutivo_runtime.messaging.streams import stream_name

from evolutivo_customer.service_layer import accounts
from evolutivo_customer.service_layer.unit_of_work import CustomerUnitOfWork

CHARGES_CREATED = "evolutivo.charging.v1.charges.created"


async def on_charges_created(
    uow: CustomerUnitOfWork,
    event: charging_events.ChargesCreated,
    meta: EventMeta,
    charged: accounts.ChargedAccounts | None = None,
) -> None:
    """The accounts charged now have charges: their currency is fixed from here on."""
    await on_charges_created_batch(uow, [(event, meta)], charged)


async def on_charges_created_batch(
    uow: CustomerUnitOfWork,
    batch: Sequence[tuple[charging_events.ChargesCreated, EventMeta]],
    charged: accounts.ChargedAccounts | None = None,
) -> None:
    """A fetched batch's ChargesCreated in one call: every RecordUsage group, batch call and stream
    slice publishes its own message, and one lock-and-mark of all their accounts costs what one
    message's did. Marking is idempotent and order-free, so the effect is on_charges_created's
    applied one by one."""
    await accounts.note_charges(uow, {uuid.UUID(c.account_id) for event, _ in batch for c in event.charges}, charged)


def subscriptions(charged: accounts.ChargedAccounts | None = None) -> list[Subscription[CustomerUnitOfWork]]:
    """`charged`: the replica's accounts known charged (a new, empty one if not given). A
    ChargesCreated naming only those is acknowledged without a transaction: once an account is
    charged, the rest of its usage (every group of calls, every batch) would lock its row to find
    nothing to mark."""
    known = accounts.ChargedAccounts() if charged is None else charged
    event_type = charging_events.ChargesCreated.DESCRIPTOR.full_name
    return [
        Subscription(
            durable="customer",
            stream=stream_name("charging"),
            subjects=[CHARGES_CREATED],
            handlers={
                event_type: EventHandler(
                    charging_events.ChargesCreated, functools.partial(on_charges_created, charged=known)
                ),
            },
            batch_handlers={
                event_type: BatchHandler(functools.partial(on_charges_created_batch, charged=known)),
            },
            settled={event_type: lambda event: known.all_of(c.account_id for c in event.charges)},
        )
    ]
