"""The contact RPCs of CustomerService: translation only."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from datetime import datetime

from evolutivo.customer.v1 import contact_pb2
from evolutivo.customer.v1 import customer_service_pb2 as pb
from evolutivo_runtime.errors import InvalidArgument
from evolutivo_runtime.idempotency import run_idempotent
from evolutivo_runtime.ids import parse_request_id, parse_uuid
from evolutivo_runtime.pagination import decode_keyset, encode_keyset, page_size
from evolutivo_runtime.server import Context
from google.protobuf import field_mask_pb2

from evolutivo_customer.adapters import proto_contacts
from evolutivo_customer.domain.contacts import Contact, ContactDetails
from evolutivo_customer.service_layer import contacts
from evolutivo_customer.service_layer.unit_of_work import CustomerUnitOfWork

_CHANNEL_PATHS = ("email", "phone", "postal_address")
_UPDATE_PATHS = {"role", "name", *_CHANNEL_PATHS}


def merge_contact_update(
    pb_contact: contact_pb2.Contact, mask: field_mask_pb2.FieldMask
) -> Callable[[Contact], ContactDetails]:
    """Checks the mask now (before any read) and returns how to merge it into the current contact.

    The channel is one value: naming email, phone or postal_address in the mask replaces the
    contact's channel with the one the request sets, which must be among the named paths."""
    if not mask.paths:
        raise InvalidArgument("update_mask", "is required: name the fields to change, e.g. email")
    paths = set(mask.paths)
    for path in mask.paths:
        if path not in _UPDATE_PATHS:
            raise InvalidArgument("update_mask", f"{path!r} cannot be updated; paths are {sorted(_UPDATE_PATHS)}")
    role = proto_contacts.role_from_pb(pb_contact.role) if "role" in paths else None
    channel_paths = [p for p in _CHANNEL_PATHS if p in paths]
    if channel_paths and pb_contact.WhichOneof("channel") not in channel_paths:
        raise InvalidArgument(
            f"contact.{channel_paths[0]}", "is named in update_mask but not set: a contact needs exactly one channel"
        )
    email, phone, postal_address = proto_contacts.channel_from_pb(pb_contact)

    def merge(current: Contact) -> ContactDetails:
        merged = current.details
        if "role" in paths:
            merged = replace(merged, role=role)
        if "name" in paths:
            merged = replace(merged, name=pb_contact.name)
        if channel_paths:
            merged = replace(merged, email=email, phone=phone, postal_address=postal_address)
        return merged

    return merge


class ContactsApi:
    """Mixed into CustomerServicer."""

    _uow: Callable[[], CustomerUnitOfWork]

    async def AddContact(self, request: pb.AddContactRequest, context: Context) -> pb.AddContactResponse:
        account_id = parse_uuid("account_id", request.account_id)
        if not request.HasField("contact"):
            raise InvalidArgument("contact", "is required")
        details = proto_contacts.details_from_pb(request.contact)
        request_id = parse_request_id(request.request_id)

        async def perform(uow: CustomerUnitOfWork) -> pb.AddContactResponse:
            contact = await contacts.add_contact(uow, account_id, details)
            return pb.AddContactResponse(contact=proto_contacts.contact_to_pb(contact))

        return await run_idempotent(self._uow(), request_id, "AddContact", pb.AddContactResponse, perform)

    async def UpdateContact(self, request: pb.UpdateContactRequest, context: Context) -> pb.UpdateContactResponse:
        account_id = parse_uuid("contact.account_id", request.contact.account_id)
        contact_id = parse_uuid("contact.contact_id", request.contact.contact_id)
        merge = merge_contact_update(request.contact, request.update_mask)

        async def perform(uow: CustomerUnitOfWork) -> pb.UpdateContactResponse:
            contact = await contacts.update_contact(uow, account_id, contact_id, merge)
            return pb.UpdateContactResponse(contact=proto_contacts.contact_to_pb(contact))

        return await run_idempotent(self._uow(), None, "UpdateContact", pb.UpdateContactResponse, perform)

    async def RemoveContact(self, request: pb.RemoveContactRequest, context: Context) -> pb.RemoveContactResponse:
        account_id = parse_uuid("account_id", request.account_id)
        contact_id = parse_uuid("contact_id", request.contact_id)

        async def perform(uow: CustomerUnitOfWork) -> pb.RemoveContactResponse:
            await contacts.remove_contact(uow, account_id, contact_id)
            return pb.RemoveContactResponse()

        return await run_idempotent(self._uow(), None, "RemoveContact", pb.RemoveContactResponse, perform)

    async def ListContacts(self, request: pb.ListContactsRequest, context: Context) -> pb.ListContactsResponse:
        account_id = parse_uuid("account_id", request.account_id)
        size = page_size(request.page_size)
        key = decode_keyset(request.page_token, 2)
        try:
            after = (datetime.fromisoformat(key[0]), parse_uuid("page_token", key[1])) if key else None
        except ValueError:
            raise InvalidArgument("page_token", "is not a token this service issued") from None
        if after is not None and after[0].tzinfo is None:
            raise InvalidArgument("page_token", "is not a token this service issued")
        found = await contacts.list_contacts(self._uow(), account_id, after, size + 1)
        page = found[:size]
        token = encode_keyset(page[-1].create_time.isoformat(), str(page[-1].contact_id)) if len(found) > size else ""
        return pb.ListContactsResponse(contacts=[proto_contacts.contact_to_pb(c) for c in page], next_page_token=token)
