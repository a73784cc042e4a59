"""Contact domain events -> evolutivo.customer.v1.ContactChanged (registered on events.encode)."""

from __future__ import annotations

from evolutivo.customer.v1 import events_pb2
from google.protobuf.message import Message

from evolutivo_customer.adapters.events import SUBJECT, encode
from evolutivo_customer.adapters.proto_contacts import contact_to_pb
from evolutivo_customer.domain.contacts import ChangeKind, ContactChanged

_KINDS = {
    ChangeKind.ADDED: events_pb2.CHANGE_KIND_ADDED,
    ChangeKind.UPDATED: events_pb2.CHANGE_KIND_UPDATED,
    ChangeKind.REMOVED: events_pb2.CHANGE_KIND_REMOVED,
}


@encode.register
def _(event: ContactChanged) -> tuple[str, Message]:
    return f"{SUBJECT}.contact.changed", events_pb2.ContactChanged(
        kind=_KINDS[event.kind], contact=contact_to_pb(event.contact)
    )
