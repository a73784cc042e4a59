"""Events charging applies, from the other services' streams."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import replace
from datetime import datetime
from typing import Any

from evolutivo.balance.v1 import balance_pb2
from evolutivo.balance.v1 import events_pb2 as balance_events
from evolutivo.billing.v1 import bill_cycle_pb2
from evolutivo.billing.v1 import events_pb2 as billing_events
from evolutivo.customer.v1 import account_pb2
from evolutivo.customer.v1 import events_pb2 as customer_events
from evolutivo_runtime.messaging.consumer import BatchHandler, EventHandler, Subscription
from evolutivo_runtime.messaging.envelope import EventMeta
from evolutivo_runtime.messaging.streams import stream_name
from evolutivo_runtime.timestamps import from_timestamp

from evolutivo_charging.adapters import proto, usage_proto
from evolutivo_charging.domain.usage import BillCycleStatus, CreditState
from evolutivo_charging.service_layer import fees, handlers, rerating, usage
from evolutivo_charging.service_layer.unit_of_work import ChargingUnitOfWork

ACCOUNT_CREATED = "evolutivo.customer.v1.account.created"
ACCOUNT_UPDATED = "evolutivo.customer.v1.account.updated"
ACCOUNT_STATUS_CHANGED = "evolutivo.customer.v1.account.status_changed"
PURCHASE_CREATED = "evolutivo.customer.v1.purchase.created"
PURCHASE_ENDED = "evolutivo.customer.v1.purchase.ended"
BILL_CYCLE_OPENED = "evolutivo.billing.v1.bill_cycle.opened"
BILL_CYCLE_CLOSED = "evolutivo.billing.v1.bill_cycle.closed"
CREDIT_LIMIT_EXCEEDED = "evolutivo.balance.v1.credit_limit.exceeded"
CREDIT_LIMIT_RESTORED = "evolutivo.balance.v1.credit_limit.restored"


# The fields of AccountUpdated.changed_fields charging keeps.
_DETAILS_KEPT = frozenset({"currency_code", "time_zone"})


def _account_time(account: account_pb2.Account, meta: EventMeta) -> datetime:
    """As of when the event's account is: its update time; the event's time if it has none."""
    return from_timestamp(account.update_time) if account.HasField("update_time") else meta.occurred_at


async def on_account_created(uow: ChargingUnitOfWork, event: customer_events.AccountCreated, meta: EventMeta) -> None:
    account = event.account
    await handlers.learn_account(
        uow,
        uuid.UUID(account.account_id),
        account.currency_code,
        account.time_zone,
        proto.status_from_customer_pb(account.status),
        uow.clock.now(),
        _account_time(account, meta),
    )


async def on_account_updated(uow: ChargingUnitOfWork, event: customer_events.AccountUpdated, meta: EventMeta) -> None:
    if _DETAILS_KEPT.isdisjoint(event.changed_fields):
        return  # a change charging does not keep (display name, contacts...)
    account = event.account
    await handlers.update_details(
        uow,
        uuid.UUID(account.account_id),
        account.currency_code,
        account.time_zone,
        proto.status_from_customer_pb(account.status),
        _account_time(account, meta),
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
        _account_time(account, meta),
    )


async def on_purchase_created(uow: ChargingUnitOfWork, event: customer_events.PurchaseCreated, meta: EventMeta) -> None:
    purchase = usage_proto.purchase_from_pb(event.purchase)
    now = uow.clock.now()
    await usage.learn_purchase(uow, purchase, now)
    # Its fees due now: a one-time fee once it has started, the in-advance fee of its open cycle.
    await fees.purchase_learnt(uow, purchase.purchase_id, now)


async def on_purchase_ended(uow: ChargingUnitOfWork, event: customer_events.PurchaseEnded, meta: EventMeta) -> None:
    purchase = usage_proto.purchase_from_pb(event.purchase)
    now = uow.clock.now()
    # Customer publishes a purchase's ends in order; the event's time orders them here.
    await usage.end_purchase(uow, purchase, meta.occurred_at, now)
    # It may be how charging learns the purchase (its PurchaseCreated still on the way).
    await fees.purchase_learnt(uow, purchase.purchase_id, now)


async def on_bill_cycle_opened(uow: ChargingUnitOfWork, event: billing_events.BillCycleOpened, meta: EventMeta) -> None:
    cycle = usage_proto.cycle_from_pb(event.bill_cycle)
    now = uow.clock.now()
    await usage.open_cycle(uow, cycle, now)
    # In-advance fees of the cycle.
    await fees.cycles_learnt(uow, cycle.account_id, [cycle.bill_cycle_id], now)


async def on_bill_cycle_closed(uow: ChargingUnitOfWork, event: billing_events.BillCycleClosed, meta: EventMeta) -> None:
    cycle = usage_proto.cycle_from_pb(event.bill_cycle)
    next_cycle = usage_proto.cycle_from_pb(event.next_bill_cycle) if event.HasField("next_bill_cycle") else None
    now = uow.clock.now()
    await usage.close_cycle(uow, cycle, next_cycle, now)
    # In-arrears fees of the closed cycle (billed in the next), in-advance fees of the next.
    learnt = [cycle.bill_cycle_id] + ([next_cycle.bill_cycle_id] if next_cycle is not None else [])
    await fees.cycles_learnt(uow, cycle.account_id, learnt, now)


def _cycle_event(event: Any) -> fees.CycleEvent:
    """What on_bill_cycle_opened / on_bill_cycle_closed record, in their order."""
    if isinstance(event, billing_events.BillCycleOpened):
        cycle = usage_proto.cycle_from_pb(event.bill_cycle)
        return fees.CycleEvent(cycle.account_id, (replace(cycle, status=BillCycleStatus.OPEN),))
    if isinstance(event, billing_events.BillCycleClosed):
        cycle = usage_proto.cycle_from_pb(event.bill_cycle)
        recorded = [replace(cycle, status=BillCycleStatus.CLOSED)]
        if event.HasField("next_bill_cycle"):
            recorded.append(replace(usage_proto.cycle_from_pb(event.next_bill_cycle), status=BillCycleStatus.OPEN))
        return fees.CycleEvent(cycle.account_id, tuple(recorded))
    raise TypeError(f"not a cycle event: {type(event).__name__}")


async def on_bill_cycle_events(uow: ChargingUnitOfWork, batch: Sequence[tuple[Any, EventMeta]]) -> None:
    """A fetched batch's BillCycleOpened and BillCycleClosed together (fees.cycle_events_learnt):
    the effects of on_bill_cycle_opened / on_bill_cycle_closed applied one by one in the batch's
    order, in a few statements. Should it raise, the consumer applies them one by one.

    A BillCycleOpened that comes right after the BillCycleClosed naming the same cycle as its next
    (field for field), with no other event of that account between them (billing's outbox order when
    it closes a cycle), is left out: the account's cycles are as the close left them, that cycle
    recorded, and the close computed its fees already (a fee key is charged once), so applying it
    would change nothing; in the bill run it is a third of what this handler decodes."""
    # Per account: the next cycle its last event in the batch named, if that event was a close.
    named_next: dict[str, bill_cycle_pb2.BillCycle] = {}
    learnt: list[fees.CycleEvent] = []
    for event, _ in batch:
        account = event.bill_cycle.account_id
        following = named_next.pop(account, None)
        if isinstance(event, billing_events.BillCycleOpened) and following == event.bill_cycle:
            continue
        if isinstance(event, billing_events.BillCycleClosed) and event.HasField("next_bill_cycle"):
            named_next[account] = event.next_bill_cycle
        learnt.append(_cycle_event(event))
    await fees.cycle_events_learnt(uow, learnt, uow.clock.now())


# One instance for both types: a batch's opened and closed cycles are applied in one call, in order.
_CYCLE_EVENTS: BatchHandler[ChargingUnitOfWork] = BatchHandler(on_bill_cycle_events)


def _credit_state(group: balance_pb2.BalanceGroup, exceeded: bool, version: int) -> CreditState:
    if not group.name:
        raise ValueError("credit limit event: balance_group.name is required")
    return CreditState(
        account_id=usage_proto.uuid_field(group.account_id, "balance_group.account_id"),
        balance_group_name=group.name,
        is_default=group.is_default,
        exceeded=exceeded,
        credit_state_version=version,
    )


async def on_credit_limit_exceeded(
    uow: ChargingUnitOfWork, event: balance_events.CreditLimitExceeded, meta: EventMeta
) -> None:
    state = _credit_state(event.balance_group, True, event.credit_state_version)
    await rerating.apply_credit_state(uow, state, uow.clock.now())


async def on_credit_limit_restored(
    uow: ChargingUnitOfWork, event: balance_events.CreditLimitRestored, meta: EventMeta
) -> None:
    state = _credit_state(event.balance_group, False, event.credit_state_version)
    await rerating.apply_credit_state(uow, state, uow.clock.now())


def subscriptions() -> list[Subscription[ChargingUnitOfWork]]:
    """Customer's and billing's events (balance's: `balance_subscriptions`)."""
    return [
        Subscription(
            durable="charging",
            stream=stream_name("customer"),
            subjects=[ACCOUNT_CREATED, ACCOUNT_UPDATED, ACCOUNT_STATUS_CHANGED, PURCHASE_CREATED, PURCHASE_ENDED],
            handlers={
                customer_events.AccountCreated.DESCRIPTOR.full_name: EventHandler(
                    customer_events.AccountCreated, on_account_created
                ),
                customer_events.AccountUpdated.DESCRIPTOR.full_name: EventHandler(
                    customer_events.AccountUpdated, on_account_updated
                ),
                customer_events.AccountStatusChanged.DESCRIPTOR.full_name: EventHandler(
                    customer_events.AccountStatusChanged, on_account_status_changed
                ),
                customer_events.PurchaseCreated.DESCRIPTOR.full_name: EventHandler(
                    customer_events.PurchaseCreated, on_purchase_created
                ),
                customer_events.PurchaseEnded.DESCRIPTOR.full_name: EventHandler(
                    customer_events.PurchaseEnded, on_purchase_ended
                ),
            },
        ),
        Subscription(
            durable="charging",
            stream=stream_name("billing"),
            subjects=[BILL_CYCLE_OPENED, BILL_CYCLE_CLOSED],
            handlers={
                billing_events.BillCycleOpened.DESCRIPTOR.full_name: EventHandler(
                    billing_events.BillCycleOpened, on_bill_cycle_opened
                ),
                billing_events.BillCycleClosed.DESCRIPTOR.full_name: EventHandler(
                    billing_events.BillCycleClosed, on_bill_cycle_closed
                ),
            },
            batch_handlers={
                billing_events.BillCycleOpened.DESCRIPTOR.full_name: _CYCLE_EVENTS,
                billing_events.BillCycleClosed.DESCRIPTOR.full_name: _CYCLE_EVENTS,
            },
        ),
    ]


def balance_subscriptions() -> list[Subscription[ChargingUnitOfWork]]:
    """Balance's credit-limit events (docs/charging.md, "Credit limits")."""
    return [
        Subscription(
            durable="charging",
            stream=stream_name("balance"),
            subjects=[CREDIT_LIMIT_EXCEEDED, CREDIT_LIMIT_RESTORED],
            handlers={
                balance_events.CreditLimitExceeded.DESCRIPTOR.full_name: EventHandler(
                    balance_events.CreditLimitExceeded, on_credit_limit_exceeded
                ),
                balance_events.CreditLimitRestored.DESCRIPTOR.full_name: EventHandler(
                    balance_events.CreditLimitRestored, on_credit_limit_restored
                ),
            },
        ),
    ]


def all_subscriptions() -> list[Subscription[ChargingUnitOfWork]]:
    """Every subscription the service binds (app.py)."""
    return [*subscriptions(), *balance_subscriptions()]
