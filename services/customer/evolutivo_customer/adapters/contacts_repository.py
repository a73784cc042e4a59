"""Loads and stores contacts."""

from __future__ import annotations

import uuid
from collections.abc import Collection
from datetime import datetime
from typing import Any

from sqlalchemy import delete, insert, literal, select, tuple_, update
from sqlalchemy.ext.asyncio import AsyncSession

from evolutivo_customer.adapters.orm import contacts
from evolutivo_customer.adapters.proto_contacts import postal_from_json, postal_to_json
from evolutivo_customer.domain.contacts import Channel, Contact, ContactDetails, ContactRole


class ContactRepository:
    def __init__(self, session: AsyncSession) -> None:
        self._session = session

    async def add(self, contact: Contact) -> None:
        await self._session.execute(insert(contacts).values(**_row(contact)))

    async def get(self, account_id: uuid.UUID, contact_id: uuid.UUID, for_update: bool = True) -> Contact | None:
        t = contacts
        query = select(t).where(t.c.account_id == account_id, t.c.contact_id == contact_id)
        if for_update:
            query = query.with_for_update()
        row = (await self._session.execute(query)).first()
        return _contact(row._mapping) if row else None

    async def save(self, contact: Contact) -> None:
        await self._session.execute(
            update(contacts).where(contacts.c.contact_id == contact.contact_id).values(**_row(contact))
        )

    async def remove(self, contact: Contact) -> None:
        await self._session.execute(delete(contacts).where(contacts.c.contact_id == contact.contact_id))

    async def for_account(
        self, account_id: uuid.UUID, roles: Collection[ContactRole] | None = None, for_update: bool = False
    ) -> list[Contact]:
        """The account's contacts (only those with one of `roles`, when given), oldest first."""
        t = contacts
        query = select(t).where(t.c.account_id == account_id).order_by(t.c.create_time, t.c.contact_id)
        if roles is not None:
            query = query.where(t.c.role.in_([r.value for r in roles]))
        if for_update:
            query = query.with_for_update()
        return [_contact(row._mapping) for row in await self._session.execute(query)]

    async def page(self, account_id: uuid.UUID, after: tuple[datetime, uuid.UUID] | None, limit: int) -> list[Contact]:
        """Keyset page in (create_time, contact_id) order."""
        t = contacts
        query = select(t).where(t.c.account_id == account_id).order_by(t.c.create_time, t.c.contact_id).limit(limit)
        if after is not None:
            query = query.where(tuple_(t.c.create_time, t.c.contact_id) > tuple_(literal(after[0]), literal(after[1])))
        return [_contact(row._mapping) for row in await self._session.execute(query)]


def _row(contact: Contact) -> dict[str, Any]:
    d = contact.details
    return {
        "contact_id": contact.contact_id,
        "account_id": contact.account_id,
        "role": contact.role.value,
        "name": d.name,
        "channel": contact.channel.value,
        "email": d.email,
        "phone": d.phone,
        "postal_address": postal_to_json(d.postal_address) if d.postal_address is not None else None,
        "create_time": contact.create_time,
        "update_time": contact.update_time,
    }


def _contact(row: Any) -> Contact:
    channel = Channel(row["channel"])
    return Contact(
        contact_id=row["contact_id"],
        account_id=row["account_id"],
        details=ContactDetails(
            role=ContactRole(row["role"]),
            name=row["name"],
            email=row["email"] if channel is Channel.EMAIL else None,
            phone=row["phone"] if channel is Channel.PHONE else None,
            postal_address=postal_from_json(row["postal_address"]) if channel is Channel.POSTAL else None,
        ),
        create_time=row["create_time"],
        update_time=row["update_time"],
    )
