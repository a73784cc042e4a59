"""Domain events -> the protobuf events charging publishes, and their subjects.

`encode` dispatches on the event's type (functools.singledispatch); each event registers below.
"""

from __future__ import annotations

import functools

from evolutivo.charging.v1 import events_pb2
from google.protobuf.message import Message

from evolutivo_charging.adapters.catalog_proto import offer_to_pb
from evolutivo_charging.adapters.usage_proto import charge_to_pb
from evolutivo_charging.domain.catalog import ChargeOfferActivated, ChargeOfferRetired
from evolutivo_charging.domain.usage import ChargesCreated

SUBJECT = "evolutivo.charging.v1"
CHARGE_OFFER_ACTIVATED = f"{SUBJECT}.charge_offer.activated"
CHARGE_OFFER_RETIRED = f"{SUBJECT}.charge_offer.retired"
CHARGES_CREATED = f"{SUBJECT}.charges.created"


@functools.singledispatch
def encode(event: object) -> tuple[str, Message]:
    raise TypeError(f"no protobuf event for {type(event).__name__}")


@encode.register
def _(event: ChargeOfferActivated) -> tuple[str, Message]:
    return CHARGE_OFFER_ACTIVATED, events_pb2.ChargeOfferActivated(
        charge_offer=offer_to_pb(event.offer),
        replaced=offer_to_pb(event.replaced) if event.replaced is not None else None,
    )


@encode.register
def _(event: ChargeOfferRetired) -> tuple[str, Message]:
    return CHARGE_OFFER_RETIRED, events_pb2.ChargeOfferRetired(charge_offer=offer_to_pb(event.offer))


@encode.register
def _(event: ChargesCreated) -> tuple[str, Message]:
    return CHARGES_CREATED, events_pb2.ChargesCreated(
        charges=[charge_to_pb(c) for c in event.charges], currency_code=event.currency_code
    )
