"""Catalog events -> the protobuf events charging publishes, and their subjects.

`encode` turns the catalog's events into evolutivo.charging.v1 events and hands any other event
to adapters.events.encode. (Once adapters/events.py dispatches with functools.singledispatch,
these two become `@events.encode.register` functions and the unit of work takes events.encode.)
"""

from __future__ import annotations

import functools

from evolutivo.charging.v1 import events_pb2
from google.protobuf.message import Message

from evolutivo_charging.adapters import events
from evolutivo_charging.adapters.catalog_proto import offer_to_pb
from evolutivo_charging.service_layer.catalog import ChargeOfferActivated, ChargeOfferRetired

SUBJECT = "evolutivo.charging.v1"
ACTIVATED = f"{SUBJECT}.charge_offer.activated"
RETIRED = f"{SUBJECT}.charge_offer.retired"


@functools.singledispatch
def encode(event: object) -> tuple[str, Message]:
    return events.encode(event)


@encode.register
def _(event: ChargeOfferActivated) -> tuple[str, Message]:
    return ACTIVATED, events_pb2.ChargeOfferActivated(
        charge_offer=offer_to_pb(event.offer),
        replaced=offer_to_pb(event.replaced) if event.replaced is not None else None,
    )


@encode.register
def _(event: ChargeOfferRetired) -> tuple[str, Message]:
    return RETIRED, events_pb2.ChargeOfferRetired(charge_offer=offer_to_pb(event.offer))
