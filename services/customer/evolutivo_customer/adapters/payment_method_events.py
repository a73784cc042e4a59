"""Payment-method domain events -> evolutivo.customer.v1 events (registered on events.encode).
Every payment method in an event is masked."""

from __future__ import annotations

from evolutivo.customer.v1 import events_pb2
from google.protobuf.message import Message

from evolutivo_customer.adapters.events import SUBJECT, encode
from evolutivo_customer.adapters.proto_payment_methods import payment_method_to_pb
from evolutivo_customer.domain.payment_methods import (
    DefaultPaymentMethodChanged,
    PaymentMethodAdded,
    PaymentMethodRemoved,
)


@encode.register
def _(event: PaymentMethodAdded) -> tuple[str, Message]:
    return f"{SUBJECT}.payment_method.added", events_pb2.PaymentMethodAdded(
        payment_method=payment_method_to_pb(event.payment_method)
    )


@encode.register
def _(event: PaymentMethodRemoved) -> tuple[str, Message]:
    return f"{SUBJECT}.payment_method.removed", events_pb2.PaymentMethodRemoved(
        account_id=str(event.account_id), payment_method_id=str(event.payment_method_id)
    )


@encode.register
def _(event: DefaultPaymentMethodChanged) -> tuple[str, Message]:
    previous = event.previous_payment_method_id
    return f"{SUBJECT}.payment_method.default_changed", events_pb2.DefaultPaymentMethodChanged(
        payment_method=payment_method_to_pb(event.payment_method),
        previous_payment_method_id=str(previous) if previous else "",
    )
