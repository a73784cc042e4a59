"""Domain events -> the protobuf events balance publishes, and their subjects.

`encode` dispatches on the event's type (functools.singledispatch); each event registers below.
No event is published per charge booked: see docs/balance.md.
"""

from __future__ import annotations

import functools

from evolutivo.balance.v1 import events_pb2
from google.protobuf.message import Message

from evolutivo_balance.adapters import proto
from evolutivo_balance.domain.credit import Direction
from evolutivo_balance.domain.model import (
    AdjustmentMade,
    BalanceGroupClosed,
    BalanceGroupCreated,
    CreditLimitExceeded,
    CreditLimitRestored,
    CreditThresholdCrossed,
    PaymentRecorded,
    PaymentReversed,
    RefundMade,
    WriteOffMade,
)

SUBJECT = "evolutivo.balance.v1"
BALANCE_GROUP_CREATED = f"{SUBJECT}.balance_group.created"
BALANCE_GROUP_CLOSED = f"{SUBJECT}.balance_group.closed"
PAYMENT_RECORDED = f"{SUBJECT}.payment.recorded"
PAYMENT_REVERSED = f"{SUBJECT}.payment.reversed"
ADJUSTMENT_MADE = f"{SUBJECT}.adjustment.made"
WRITE_OFF_MADE = f"{SUBJECT}.write_off.made"
REFUND_MADE = f"{SUBJECT}.refund.made"
CREDIT_THRESHOLD_CROSSED = f"{SUBJECT}.credit_threshold.crossed"
CREDIT_LIMIT_EXCEEDED = f"{SUBJECT}.credit_limit.exceeded"
CREDIT_LIMIT_RESTORED = f"{SUBJECT}.credit_limit.restored"

_DIRECTIONS = {
    Direction.UP: events_pb2.CREDIT_THRESHOLD_DIRECTION_UP,
    Direction.DOWN: events_pb2.CREDIT_THRESHOLD_DIRECTION_DOWN,
}


@functools.singledispatch
def encode(event: object) -> tuple[str, Message]:
    raise TypeError(f"no protobuf event for {type(event).__name__}")


@encode.register
def _(event: BalanceGroupCreated) -> tuple[str, Message]:
    return BALANCE_GROUP_CREATED, events_pb2.BalanceGroupCreated(
        balance_group=proto.group_to_pb(event.group, event.group.create_time)
    )


@encode.register
def _(event: BalanceGroupClosed) -> tuple[str, Message]:
    return BALANCE_GROUP_CLOSED, events_pb2.BalanceGroupClosed(
        balance_group=proto.group_to_pb(event.group, event.group.close_time or event.group.create_time)
    )


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


@encode.register
def _(event: WriteOffMade) -> tuple[str, Message]:
    return WRITE_OFF_MADE, events_pb2.WriteOffMade(entry=proto.entry_to_pb(event.entry))


@encode.register
def _(event: RefundMade) -> tuple[str, Message]:
    return REFUND_MADE, events_pb2.RefundMade(entry=proto.entry_to_pb(event.entry))


@encode.register
def _(event: CreditLimitExceeded) -> tuple[str, Message]:
    currency_code = event.group.currency_code
    return CREDIT_LIMIT_EXCEEDED, events_pb2.CreditLimitExceeded(
        balance_group=proto.group_to_pb(event.group, event.at),
        credit_limit=proto.optional_amount(event.limit, currency_code),
        credit_state_version=event.version,
    )


@encode.register
def _(event: CreditLimitRestored) -> tuple[str, Message]:
    currency_code = event.group.currency_code
    return CREDIT_LIMIT_RESTORED, events_pb2.CreditLimitRestored(
        balance_group=proto.group_to_pb(event.group, event.at),
        credit_limit=proto.optional_amount(event.limit, currency_code),
        credit_state_version=event.version,
    )


@encode.register
def _(event: CreditThresholdCrossed) -> tuple[str, Message]:
    currency_code, crossing = event.group.currency_code, event.crossing
    return CREDIT_THRESHOLD_CROSSED, events_pb2.CreditThresholdCrossed(
        balance_group=proto.group_to_pb(event.group, event.at),
        threshold=proto.threshold_to_pb(crossing.threshold, currency_code),
        threshold_amount=proto.optional_amount(crossing.level, currency_code),
        direction=_DIRECTIONS[crossing.direction],
        credit_limit=proto.optional_amount(crossing.limit, currency_code),
        threshold_state_version=crossing.version,
    )
