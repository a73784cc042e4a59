"""Translation for documents and delivery: customer's accounts and contacts (from its events) into
what billing keeps, and documents and deliveries into the evolutivo.billing.v1 messages."""

from __future__ import annotations

import uuid
from datetime import datetime

from evolutivo.billing.v1 import document_pb2
from evolutivo.customer.v1 import account_pb2, contact_pb2
from evolutivo_runtime.timestamps import from_timestamp, to_timestamp

from evolutivo_billing.domain.delivery import BillDelivery, DeliveryState
from evolutivo_billing.domain.documents import (
    AccountContact,
    AccountDetails,
    ContactRole,
    DeliveryMethod,
    PostalAddress,
    StoredDocument,
)

_ROLES = {
    contact_pb2.CONTACT_ROLE_PRIMARY: ContactRole.PRIMARY,
    contact_pb2.CONTACT_ROLE_BILLING: ContactRole.BILLING,
    contact_pb2.CONTACT_ROLE_TECHNICAL: ContactRole.TECHNICAL,
    contact_pb2.CONTACT_ROLE_COLLECTIONS: ContactRole.COLLECTIONS,
}
_METHODS = {
    account_pb2.DELIVERY_METHOD_POSTAL: DeliveryMethod.POSTAL,
    account_pb2.DELIVERY_METHOD_PORTAL: DeliveryMethod.PORTAL,
}
_STATES = {
    DeliveryState.PENDING: document_pb2.BILL_DELIVERY_STATE_PENDING,
    DeliveryState.SENT: document_pb2.BILL_DELIVERY_STATE_SENT,
    DeliveryState.FAILED: document_pb2.BILL_DELIVERY_STATE_FAILED,
    DeliveryState.NO_RECIPIENT: document_pb2.BILL_DELIVERY_STATE_NO_RECIPIENT,
    DeliveryState.NOT_BY_EMAIL: document_pb2.BILL_DELIVERY_STATE_NOT_BY_EMAIL,
}


def account_details_from_pb(account: account_pb2.Account, fallback_time: datetime) -> AccountDetails:
    """The account as customer published it; its update time orders it (`fallback_time`, the
    event's, when it has none). An unspecified delivery method is email."""
    return AccountDetails(
        account_id=uuid.UUID(account.account_id),
        update_time=from_timestamp(account.update_time) if account.HasField("update_time") else fallback_time,
        account_number=account.account_number,
        display_name=account.display_name,
        tax_id=account.tax_id,
        country_code=account.country_code,
        locale=account.locale,
        delivery_method=_METHODS.get(account.billing_profile.delivery.method, DeliveryMethod.EMAIL),
        personal_data_erased=account.personal_data_erased,
    )


def contact_from_pb(contact: contact_pb2.Contact, removed: bool, fallback_time: datetime) -> AccountContact:
    address = None
    if contact.WhichOneof("channel") == "postal_address":
        pa = contact.postal_address
        address = PostalAddress(
            recipients=tuple(pa.recipients),
            organization=pa.organization,
            address_lines=tuple(pa.address_lines),
            postal_code=pa.postal_code,
            locality=pa.locality,
            administrative_area=pa.administrative_area,
            region_code=pa.region_code,
        )
    return AccountContact(
        contact_id=uuid.UUID(contact.contact_id),
        account_id=uuid.UUID(contact.account_id),
        role=_ROLES.get(contact.role, ContactRole.UNSPECIFIED),
        update_time=from_timestamp(contact.update_time) if contact.HasField("update_time") else fallback_time,
        name=contact.name,
        email=contact.email if contact.WhichOneof("channel") == "email" else None,
        postal_address=address,
        removed=removed,
    )


def document_to_pb(document: StoredDocument) -> document_pb2.BillDocument:
    return document_pb2.BillDocument(
        bill_id=str(document.bill_id),
        content_type=document.content_type,
        file_name=document.file_name,
        content=document.content,
        sha256=document.sha256,
        render_time=to_timestamp(document.render_time),
    )


def delivery_to_pb(delivery: BillDelivery) -> document_pb2.BillDelivery:
    return document_pb2.BillDelivery(
        bill_id=str(delivery.bill_id),
        account_id=str(delivery.account_id),
        state=_STATES[delivery.state],
        attempts=delivery.attempts,
        last_error=delivery.last_error,
        last_attempt_time=to_timestamp(delivery.last_attempt_time),
        next_attempt_time=to_timestamp(delivery.next_attempt_time),
        sent_time=to_timestamp(delivery.sent_time),
        recipients=list(delivery.recipients),
        message_id=delivery.message_id,
        create_time=to_timestamp(delivery.create_time),
    )
