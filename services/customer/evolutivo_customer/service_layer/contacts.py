"""Use cases on an account's contacts. Writes run inside the unit of work the caller opened and
commits (see accounts.py); reads open their own."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from datetime import datetime

from evolutivo_runtime.errors import NotFound

from evolutivo_customer.domain.contacts import Contact, ContactDetails, ContactRole, recipients
from evolutivo_customer.service_layer.accounts import load
from evolutivo_customer.service_layer.unit_of_work import CustomerUnitOfWork


async def add_contact(uow: CustomerUnitOfWork, account_id: uuid.UUID, details: ContactDetails) -> Contact:
    # Locks the account row: a contact is never added to an account being closed meanwhile.
    account = await load(uow, account_id)
    contact = Contact.add(account, details, uow.clock.now())
    await uow.contacts.add(contact)
    uow.track(contact)
    return contact


async def _load_contact(uow: CustomerUnitOfWork, account_id: uuid.UUID, contact_id: uuid.UUID) -> Contact:
    contact = await uow.contacts.get(account_id, contact_id)
    if contact is None:
        raise NotFound("contact", str(contact_id))
    return contact


async def update_contact(
    uow: CustomerUnitOfWork,
    account_id: uuid.UUID,
    contact_id: uuid.UUID,
    merge: Callable[[Contact], ContactDetails],
) -> Contact:
    """`merge` builds the new details from the current contact (the update mask)."""
    account = await load(uow, account_id)
    contact = await _load_contact(uow, account_id, contact_id)
    if contact.update(account, merge(contact), uow.clock.now()):
        await uow.contacts.save(contact)
        uow.track(contact)
    return contact


async def remove_contact(uow: CustomerUnitOfWork, account_id: uuid.UUID, contact_id: uuid.UUID) -> Contact:
    account = await load(uow, account_id)
    contact = await _load_contact(uow, account_id, contact_id)
    contact.remove(account)
    await uow.contacts.remove(contact)
    uow.track(contact)
    return contact


async def list_contacts(
    uow: CustomerUnitOfWork, account_id: uuid.UUID, after: tuple[datetime, uuid.UUID] | None, limit: int
) -> list[Contact]:
    async with uow:
        await load(uow, account_id, for_update=False)
        return await uow.contacts.page(account_id, after, limit)


async def contacts_for(uow: CustomerUnitOfWork, account_id: uuid.UUID, role: ContactRole) -> list[Contact]:
    """Who a document goes to: bills to the BILLING contacts, reminders to the COLLECTIONS ones,
    each falling back to the PRIMARY contacts when the account has none of that role."""
    async with uow:
        await load(uow, account_id, for_update=False)
        found = await uow.contacts.for_account(account_id, roles={role, ContactRole.PRIMARY})
    return recipients(found, role)
