"""Domain events -> the protobuf events balance publishes, and their subjects.

`encode` dispatches on the event's type (functools.singledispatch); each event registers below.
No event is published per charge booked: see docs/balance.md.
"""

from __future__ import annotations

import functools

from evolutivo.balance.v1 import events_pb2
from google.protobuf.message import Message

from evolutivo_balance.adapters import proto
from evolutivo_balance.domain.model import (
    AdjustmentMade,
    BalanceGroupClosed,
    BalanceGroupCreated,
    PaymentRecorded,
    PaymentReversed,
)

SUBJECT = "evolutivo.balance.v1"
BALANCE_GROUP_CREATED = f"{SUBJECT}.balance_group.created"
BALANCE_GROUP_CLOSED = f"{SUBJECT}.balance_group.closed"
PAYMENT_RECORDED = f"{SUBJECT}.payment.recorded"
PAYMENT_REVERSED = f"{SUBJECT}.payment.reversed"
ADJUSTMENT_MADE = f"{SUBJECT}.adjustment.made"


@functools.singledispatch
def encode(event: object) -> tuple[str, Message]:
    raise TypeError(f"no protobuf event for {type(event).__name__}")


@encode.register
def _(event: BalanceGroupCreated) -> tuple[str, Message]:
    return BALANCE_GROUP_CREATED, events_pb2.BalanceGroupCreated(balance_group=proto.group_to_pb(event.group))


@encode.register
def _(event: BalanceGroupClosed) -> tuple[str, Message]:
    return BALANCE_GROUP_CLOSED, events_pb2.BalanceGroupClosed(balance_group=proto.group_to_pb(event.group))


@encode.register
def _(event: PaymentRecorded) -> tuple[str, Message]:
    return PAYMENT_RECORDED, events_pb2.PaymentRecorded(
        payment=proto.payment_to_pb(event.payment), entry=proto.entry_to_pb(event.entry)
    )


@encode.register
def _(event: PaymentReversed) -> tuple[str, Message]:
    return PAYMENT_REVERSED, events_pb2.PaymentReversed(
        payment=proto.payment_to_pb(event.payment), entry=proto.entry_to_pb(event.entry)
    )


@encode.register
def _(event: AdjustmentMade) -> tuple[str, Message]:
    return ADJUSTMENT_MADE, events_pb2.AdjustmentMade(entry=proto.entry_to_pb(event.entry))
