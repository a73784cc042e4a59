"""Erasure of a closed account's personal data (the right to erasure), keeping the financial
records the law requires. Runs inside the unit of work the caller opened and commits.

What is erased:
- the account: display name -> ERASED marker, tax id, date of birth and labels cleared
  (Account.erase_personal_data);
- every contact is anonymised in place, not deleted: its name and its email / phone become the
  ERASED marker, a postal address keeps only its country (region_code) with one ERASED line. The
  contact's id, role and channel type stay, so the account's history still reads; each one records
  a ContactChanged(UPDATED) carrying the anonymised contact, so consumers overwrite their copies;
- every payment method, removed ones included: a card's provider token is cut to its last four
  characters, a SEPA mandate's IBAN is cut to its masked form (country, check digits, last four)
  and its account holder's name becomes the ERASED marker.

What is kept, and why: the account's identifiers, status (with its last change), currency, time
zone, country and billing profile, and its provisioned services (the financial records refer to
them); payment methods' type, card provider, brand, last
four digits and expiry, the masked IBAN, BIC, mandate id and signature date, and bank-transfer
references (to trace past payments, direct debits and chargebacks); and, in the other services,
the charges, ledger, payments and bills, which statutory retention keeps.

Erasing again changes nothing and answers the same.
"""

from __future__ import annotations

import uuid

from evolutivo_customer.domain.model import Account
from evolutivo_customer.service_layer.accounts import load
from evolutivo_customer.service_layer.unit_of_work import CustomerUnitOfWork

# What ErasePersonalData answers in `erased` (the parts of the account anonymised; see above for how).
ERASED_FIELDS = ("display_name", "tax_id", "date_of_birth", "labels", "contacts", "payment_methods")
# And in `retained`: what was kept, and why.
RETAINED_RECORDS = (
    "account: id, number, type, status and its last change, currency, time zone, country and billing profile, "
    "to which the financial records refer",
    "provisioned services (kind, identifier, status): the charges and rated usage refer to them",
    "payment methods: type, card provider, brand, last four digits and expiry, masked IBAN, BIC, "
    "SEPA mandate id and signature date, bank-transfer reference: kept to trace past payments, direct debits "
    "and chargebacks (card tokens cut to their last four characters, IBANs masked, account holders erased)",
    "charges and rated usage (charging service): kept for statutory retention",
    "balances, ledger entries and payments (balance service): kept for statutory retention",
    "bills and invoices (billing service): kept for statutory retention",
)


async def erase_personal_data(uow: CustomerUnitOfWork, account_id: uuid.UUID) -> Account:
    """Refused (FAILED_PRECONDITION) unless the account is closed; idempotent."""
    account = await load(uow, account_id)
    version = account.version
    now = uow.clock.now()
    account.erase_personal_data(now)
    if account.version != version:
        await uow.accounts.save(account, version)
        uow.track(account)
    # Also when the account was erased before: whatever is still personal is erased now.
    for contact in await uow.contacts.for_account(account_id, for_update=True):
        if contact.erase(now):
            await uow.contacts.save(contact)
            uow.track(contact)
    for method in await uow.payment_methods.for_account(account_id, include_removed=True, for_update=True):
        if method.erase():
            await uow.payment_methods.save_details(method)
    return account
