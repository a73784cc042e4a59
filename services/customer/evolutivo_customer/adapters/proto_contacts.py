"""Translation between contacts and evolutivo.customer.v1.Contact, and the JSON form of postal
addresses at rest (google.type.PostalAddress in the protobuf JSON mapping)."""

from __future__ import annotations

from typing import Any

from evolutivo.customer.v1 import contact_pb2
from evolutivo_runtime.errors import InvalidArgument
from google.protobuf import json_format
from google.type import postal_address_pb2

from evolutivo_customer.domain.contacts import Contact, ContactDetails, ContactRole, PostalAddress

ROLES: dict[int, ContactRole] = {
    contact_pb2.CONTACT_ROLE_PRIMARY: ContactRole.PRIMARY,
    contact_pb2.CONTACT_ROLE_BILLING: ContactRole.BILLING,
    contact_pb2.CONTACT_ROLE_TECHNICAL: ContactRole.TECHNICAL,
    contact_pb2.CONTACT_ROLE_COLLECTIONS: ContactRole.COLLECTIONS,
}
_ROLES_PB: dict[ContactRole, int] = {v: k for k, v in ROLES.items()}


def role_from_pb(value: int, field: str = "contact.role") -> ContactRole | None:
    """None when unset (the domain says it is required); an unknown number is refused here."""
    if value == contact_pb2.CONTACT_ROLE_UNSPECIFIED:
        return None
    if value not in ROLES:
        raise InvalidArgument(field, "is not a known contact role")
    return ROLES[value]


def postal_from_pb(pb: postal_address_pb2.PostalAddress) -> PostalAddress:
    return PostalAddress(
        region_code=pb.region_code,
        address_lines=tuple(pb.address_lines),
        locality=pb.locality,
        postal_code=pb.postal_code,
        administrative_area=pb.administrative_area,
        sublocality=pb.sublocality,
        sorting_code=pb.sorting_code,
        language_code=pb.language_code,
        recipients=tuple(pb.recipients),
        organization=pb.organization,
        revision=pb.revision,
    )


def postal_to_pb(address: PostalAddress) -> postal_address_pb2.PostalAddress:
    return postal_address_pb2.PostalAddress(
        revision=address.revision,
        region_code=address.region_code,
        language_code=address.language_code,
        postal_code=address.postal_code,
        sorting_code=address.sorting_code,
        administrative_area=address.administrative_area,
        locality=address.locality,
        sublocality=address.sublocality,
        address_lines=list(address.address_lines),
        recipients=list(address.recipients),
        organization=address.organization,
    )


def postal_to_json(address: PostalAddress) -> dict[str, Any]:
    return json_format.MessageToDict(postal_to_pb(address))


def postal_from_json(value: dict[str, Any]) -> PostalAddress:
    return postal_from_pb(json_format.ParseDict(value, postal_address_pb2.PostalAddress()))


def channel_from_pb(pb: contact_pb2.Contact) -> tuple[str | None, str | None, PostalAddress | None]:
    """(email, phone, postal_address): the one the oneof holds (even if empty), the others None."""
    channel = pb.WhichOneof("channel")
    return (
        pb.email if channel == "email" else None,
        pb.phone if channel == "phone" else None,
        postal_from_pb(pb.postal_address) if channel == "postal_address" else None,
    )


def details_from_pb(pb: contact_pb2.Contact) -> ContactDetails:
    """The caller's values, unvalidated (the domain checks them)."""
    email, phone, postal_address = channel_from_pb(pb)
    return ContactDetails(
        role=role_from_pb(pb.role), name=pb.name, email=email, phone=phone, postal_address=postal_address
    )


def details_to_pb(details: ContactDetails) -> contact_pb2.Contact:
    pb = contact_pb2.Contact(
        role=_ROLES_PB[details.role] if details.role else contact_pb2.CONTACT_ROLE_UNSPECIFIED,  # type: ignore[arg-type]
        name=details.name,
    )
    if details.email is not None:
        pb.email = details.email
    elif details.phone is not None:
        pb.phone = details.phone
    elif details.postal_address is not None:
        pb.postal_address.CopyFrom(postal_to_pb(details.postal_address))
    return pb


def contact_to_pb(contact: Contact) -> contact_pb2.Contact:
    pb = details_to_pb(contact.details)
    pb.contact_id = str(contact.contact_id)
    pb.account_id = str(contact.account_id)
    pb.create_time.FromDatetime(contact.create_time)
    pb.update_time.FromDatetime(contact.update_time)
    return pb
