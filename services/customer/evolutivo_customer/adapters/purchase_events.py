"""Purchase events, registered with adapters.events.encode."""

from __future__ import annotations

from evolutivo.customer.v1 import events_pb2
from google.protobuf.message import Message

from evolutivo_customer.adapters.events import SUBJECT, encode
from evolutivo_customer.adapters.proto_purchases import purchase_to_pb
from evolutivo_customer.domain.purchases import PurchaseCreated, PurchaseEnded


@encode.register
def _(event: PurchaseCreated) -> tuple[str, Message]:
    purchase = purchase_to_pb(event.purchase, event.purchase.create_time)
    return f"{SUBJECT}.purchase.created", events_pb2.PurchaseCreated(
        purchase=purchase, currency_code=event.purchase.currency_code, time_zone=event.time_zone
    )


@encode.register
def _(event: PurchaseEnded) -> tuple[str, Message]:
    # The state as of the change: ENDED at its end time, or CANCELLED.
    p = event.purchase
    at = p.cancel_time or p.end_time or p.create_time
    return f"{SUBJECT}.purchase.ended", events_pb2.PurchaseEnded(purchase=purchase_to_pb(p, at))
