"""Events balance applies, from the other services' streams."""

from __future__ import annotations

import uuid

from evolutivo.charging.v1 import events_pb2 as charging_events
from evolutivo.charging.v1 import usage_pb2
from evolutivo.customer.v1 import events_pb2 as customer_events
from evolutivo_runtime.messaging.consumer import EventHandler, Subscription
from evolutivo_runtime.messaging.envelope import EventMeta
from evolutivo_runtime.messaging.streams import stream_name
from evolutivo_runtime.money import from_money
from evolutivo_runtime.timestamps import from_timestamp

from evolutivo_balance.domain.model import Charge
from evolutivo_balance.service_layer import handlers
from evolutivo_balance.service_layer.unit_of_work import BalanceUnitOfWork

ACCOUNT_CREATED = "evolutivo.customer.v1.account.created"
ACCOUNT_UPDATED = "evolutivo.customer.v1.account.updated"
CHARGES_CREATED = "evolutivo.charging.v1.charges.created"


async def on_account_created(uow: BalanceUnitOfWork, event: customer_events.AccountCreated, meta: EventMeta) -> None:
    account = event.account
    await handlers.open_default_group(uow, uuid.UUID(account.account_id), account.currency_code, uow.clock.now())


async def on_account_updated(uow: BalanceUnitOfWork, event: customer_events.AccountUpdated, meta: EventMeta) -> None:
    if "currency_code" in event.changed_fields:
        account = event.account
        await handlers.change_currency(uow, uuid.UUID(account.account_id), account.currency_code, uow.clock.now())


def charge_from_pb(charge: usage_pb2.RatedCharge, currency_code: str) -> Charge:
    """A malformed charge raises: its message is retried, then dead-lettered, never half-booked."""
    return Charge(
        charge_id=uuid.UUID(charge.charge_id),
        account_id=uuid.UUID(charge.account_id),
        balance_group=charge.balance_group,
        amount=from_money(charge.amount),
        currency_code=charge.amount.currency_code or currency_code,
        rate_time=from_timestamp(charge.rate_time) if charge.HasField("rate_time") else None,
        reverses_charge_id=uuid.UUID(charge.reverses_charge_id) if charge.reverses_charge_id else None,
    )


async def on_charges_created(uow: BalanceUnitOfWork, event: charging_events.ChargesCreated, meta: EventMeta) -> None:
    """Books the charges; their groups' balances move when the whole fetched batch commits."""
    charges = [charge_from_pb(c, event.currency_code) for c in event.charges]
    await handlers.book_charges(uow, charges, uow.clock.now())


def subscriptions() -> list[Subscription[BalanceUnitOfWork]]:
    return [
        Subscription(
            durable="balance",
            stream=stream_name("customer"),
            subjects=[ACCOUNT_CREATED, ACCOUNT_UPDATED],
            handlers={
                customer_events.AccountCreated.DESCRIPTOR.full_name: EventHandler(
                    customer_events.AccountCreated, on_account_created
                ),
                customer_events.AccountUpdated.DESCRIPTOR.full_name: EventHandler(
                    customer_events.AccountUpdated, on_account_updated
                ),
            },
        ),
        Subscription(
            durable="balance",
            stream=stream_name("charging"),
            subjects=[CHARGES_CREATED],
            handlers={
                charging_events.ChargesCreated.DESCRIPTOR.full_name: EventHandler(
                    charging_events.ChargesCreated, on_charges_created
                ),
            },
        ),
    ]
