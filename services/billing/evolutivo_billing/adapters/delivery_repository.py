"""Loads and stores what billing keeps of customer's accounts and contacts, the bills' documents
and their deliveries."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import and_, or_, select, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from evolutivo_billing.adapters.orm import account_contacts, account_details, bill_deliveries, bill_documents
from evolutivo_billing.domain.delivery import BillDelivery, DeliveryState
from evolutivo_billing.domain.documents import (
    AccountContact,
    AccountDetails,
    ContactRole,
    Customer,
    DeliveryMethod,
    PostalAddress,
    StoredDocument,
)


def _address_json(address: PostalAddress | None) -> dict[str, Any] | None:
    if address is None:
        return None
    return {
        "recipients": list(address.recipients),
        "organization": address.organization,
        "address_lines": list(address.address_lines),
        "postal_code": address.postal_code,
        "locality": address.locality,
        "administrative_area": address.administrative_area,
        "region_code": address.region_code,
    }


def _address(value: dict[str, Any] | None) -> PostalAddress | None:
    if value is None:
        return None
    return PostalAddress(
        recipients=tuple(value.get("recipients", ())),
        organization=value.get("organization", ""),
        address_lines=tuple(value.get("address_lines", ())),
        postal_code=value.get("postal_code", ""),
        locality=value.get("locality", ""),
        administrative_area=value.get("administrative_area", ""),
        region_code=value.get("region_code", ""),
    )


class CustomerRepository:
    """account_details and account_contacts: customer's facts, each kept only when not older than
    what billing has (events of one account can be applied out of order across replicas)."""

    def __init__(self, session: AsyncSession) -> None:
        self._session = session

    async def save_account(self, details: AccountDetails) -> None:
        """Upserts the account's details unless billing has a newer version. Erasure sticks: an
        older, unerased version arriving later does not bring the personal data back."""
        t = account_details
        row = {
            "account_id": details.account_id,
            "account_number": details.account_number,
            "display_name": details.display_name,
            "tax_id": details.tax_id,
            "country_code": details.country_code,
            "locale": details.locale,
            "delivery_method": details.delivery_method.value,
            "personal_data_erased": details.personal_data_erased,
            "update_time": details.update_time,
        }
        stmt = insert(t).values(row)
        await self._session.execute(
            stmt.on_conflict_do_update(
                index_elements=[t.c.account_id],
                set_={k: stmt.excluded[k] for k in row if k != "account_id"},
                where=and_(t.c.update_time <= stmt.excluded.update_time, ~t.c.personal_data_erased),
            )
        )

    async def erase(self, details: AccountDetails) -> None:
        """Customer erased the account's personal data: its details as erased (whatever their
        time), and every contact billing keeps of it without name, email or address."""
        t = account_details
        row = {
            "account_id": details.account_id,
            "account_number": details.account_number,
            "display_name": details.display_name,
            "tax_id": details.tax_id,
            "country_code": details.country_code,
            "locale": details.locale,
            "delivery_method": details.delivery_method.value,
            "personal_data_erased": True,
            "update_time": details.update_time,
        }
        stmt = insert(t).values(row)
        await self._session.execute(
            stmt.on_conflict_do_update(
                index_elements=[t.c.account_id],
                set_={
                    "display_name": stmt.excluded.display_name,
                    "tax_id": stmt.excluded.tax_id,
                    "personal_data_erased": True,
                },
            )
        )
        c = account_contacts
        await self._session.execute(
            update(c).where(c.c.account_id == details.account_id).values(name="", email=None, postal_address=None)
        )

    async def is_erased(self, account_id: uuid.UUID) -> bool:
        t = account_details
        erased = await self._session.scalar(select(t.c.personal_data_erased).where(t.c.account_id == account_id))
        return bool(erased)

    async def save_contact(self, contact: AccountContact) -> None:
        """Upserts the contact unless billing has a newer version of it; a removed contact stays
        removed (a change as old as its removal does not bring it back)."""
        t = account_contacts
        row = {
            "contact_id": contact.contact_id,
            "account_id": contact.account_id,
            "role": contact.role.value,
            "name": contact.name,
            "email": contact.email,
            "postal_address": _address_json(contact.postal_address),
            "removed": contact.removed,
            "update_time": contact.update_time,
        }
        stmt = insert(t).values(row)
        await self._session.execute(
            stmt.on_conflict_do_update(
                index_elements=[t.c.contact_id],
                set_={k: stmt.excluded[k] for k in row if k != "contact_id"},
                where=and_(
                    t.c.update_time <= stmt.excluded.update_time,
                    or_(stmt.excluded.removed, ~t.c.removed),
                ),
            )
        )

    async def customer(self, account_id: uuid.UUID) -> Customer:
        a = account_details
        row = (await self._session.execute(select(a).where(a.c.account_id == account_id))).one_or_none()
        details = (
            AccountDetails(
                account_id=row.account_id,
                update_time=row.update_time,
                account_number=row.account_number,
                display_name=row.display_name,
                tax_id=row.tax_id,
                country_code=row.country_code,
                locale=row.locale,
                delivery_method=DeliveryMethod(row.delivery_method),
                personal_data_erased=row.personal_data_erased,
            )
            if row is not None
            else None
        )
        c = account_contacts
        rows = await self._session.execute(
            select(c).where(c.c.account_id == account_id).order_by(c.c.update_time, c.c.contact_id)
        )
        contacts = tuple(
            AccountContact(
                contact_id=r.contact_id,
                account_id=r.account_id,
                role=ContactRole(r.role),
                update_time=r.update_time,
                name=r.name,
                email=r.email,
                postal_address=_address(r.postal_address),
                removed=r.removed,
            )
            for r in rows
        )
        return Customer(account_id, details, contacts)


class DocumentRepository:
    def __init__(self, session: AsyncSession) -> None:
        self._session = session

    async def get(self, bill_id: uuid.UUID) -> StoredDocument | None:
        t = bill_documents
        row = (await self._session.execute(select(t).where(t.c.bill_id == bill_id))).one_or_none()
        if row is None:
            return None
        return StoredDocument(
            row.bill_id, row.content_type, row.file_name, bytes(row.content), row.sha256, row.render_time
        )

    async def add(self, document: StoredDocument) -> None:
        """Keeps the document unless the bill has one already (the first rendering stays)."""
        t = bill_documents
        await self._session.execute(
            insert(t)
            .values(
                bill_id=document.bill_id,
                content_type=document.content_type,
                file_name=document.file_name,
                content=document.content,
                sha256=document.sha256,
                render_time=document.render_time,
            )
            .on_conflict_do_nothing(index_elements=[t.c.bill_id])
        )


def _delivery(row: Any) -> BillDelivery:
    return BillDelivery(
        bill_id=row.bill_id,
        account_id=row.account_id,
        state=DeliveryState(row.state),
        create_time=row.create_time,
        attempts=row.attempts,
        next_attempt_time=row.next_attempt_time,
        last_attempt_time=row.last_attempt_time,
        last_error=row.last_error,
        sent_time=row.sent_time,
        recipients=tuple(row.recipients),
        message_id=row.message_id,
    )


def _delivery_row(delivery: BillDelivery) -> dict[str, Any]:
    return {
        "account_id": delivery.account_id,
        "state": delivery.state.value,
        "attempts": delivery.attempts,
        "next_attempt_time": delivery.next_attempt_time,
        "last_attempt_time": delivery.last_attempt_time,
        "last_error": delivery.last_error,
        "sent_time": delivery.sent_time,
        "recipients": list(delivery.recipients),
        "message_id": delivery.message_id,
    }


class DeliveryRepository:
    def __init__(self, session: AsyncSession) -> None:
        self._session = session

    async def get(self, bill_id: uuid.UUID, for_update: bool = False) -> BillDelivery | None:
        t = bill_deliveries
        query = select(t).where(t.c.bill_id == bill_id)
        if for_update:
            query = query.with_for_update()
        row = (await self._session.execute(query)).one_or_none()
        return _delivery(row) if row is not None else None

    async def claim_due(self, now: datetime) -> BillDelivery | None:
        """The earliest due PENDING delivery no other transaction holds, locked until this
        transaction ends (`SKIP LOCKED`: replicas claim different ones)."""
        t = bill_deliveries
        query = (
            select(t)
            .where(t.c.state == DeliveryState.PENDING.value, t.c.next_attempt_time <= now)
            .order_by(t.c.next_attempt_time, t.c.bill_id)
            .limit(1)
            .with_for_update(skip_locked=True)
        )
        row = (await self._session.execute(query)).one_or_none()
        return _delivery(row) if row is not None else None

    async def add(self, delivery: BillDelivery) -> None:
        """A delivery for a bill that has none (issued before billing kept deliveries)."""
        t = bill_deliveries
        await self._session.execute(
            insert(t)
            .values(bill_id=delivery.bill_id, create_time=delivery.create_time, **_delivery_row(delivery))
            .on_conflict_do_nothing(index_elements=[t.c.bill_id])
        )

    async def save(self, delivery: BillDelivery) -> None:
        t = bill_deliveries
        await self._session.execute(update(t).where(t.c.bill_id == delivery.bill_id).values(**_delivery_row(delivery)))
