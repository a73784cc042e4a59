"""ErasePersonalData against a real, migrated customer database: only closed accounts, the account,
its contacts and its payment methods (removed ones too) anonymised, the financial traces kept and
listed, events without personal data, and a second call that answers the same and changes nothing."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import evolutivo_customer
import pytest
from evolutivo.customer.v1 import account_pb2, contact_pb2, events_pb2, payment_method_pb2
from evolutivo.customer.v1 import customer_service_pb2 as pb
from evolutivo_customer.adapters import contact_events, payment_method_events
from evolutivo_customer.adapters.orm import accounts, contacts, outbox, payment_methods, request_log
from evolutivo_customer.domain.model import ERASED
from evolutivo_customer.entrypoints.grpc_accounts import AccountsApi
from evolutivo_customer.entrypoints.grpc_contacts import ContactsApi
from evolutivo_customer.entrypoints.grpc_payment_methods import PaymentMethodsApi
from evolutivo_customer.entrypoints.grpc_privacy import PrivacyApi
from evolutivo_runtime.errors import FailedPrecondition, InvalidArgument, NotFound
from google.type import date_pb2, postal_address_pb2
from sqlalchemy import select
from support.customer import CustomerServiceDb, MixinState, stored_details
from support.databases import MigratedDatabase

MIGRATIONS = Path(evolutivo_customer.__file__).resolve().parent / "migrations"
NOW = datetime(2031, 5, 17, 9, 30, tzinfo=UTC)
IBAN = "ES9121000418450200051332"
TOKEN = "pm_1NfakeTokenAbCd"
NO_CONTEXT: Any = None
# What must not survive anywhere in the customer database's rows written by the erasure.
PERSONAL = ("Ana López García", "ana.lopez@example.com", "+34612345678", "Calle Mayor 1", IBAN, TOKEN, "B12345674")
assert contact_events and payment_method_events  # their encoders, as the service's app imports them


class Servicer(AccountsApi, ContactsApi, PaymentMethodsApi, PrivacyApi, MixinState):
    """The mixins under test."""


class CustomerDb(CustomerServiceDb):
    @property
    def api(self) -> Servicer:
        return Servicer(self.uow)

    async def outbox_rows(self) -> list[Any]:
        return await self.rows(select(outbox).order_by(outbox.c.seq))


@pytest.fixture
async def db(migrated_database: MigratedDatabase) -> AsyncIterator[CustomerDb]:
    async with CustomerDb.open(await migrated_database("customer", MIGRATIONS), NOW) as database:
        yield database


async def customer_with_everything(db: CustomerDb) -> str:
    """An individual with contacts on every channel, a SEPA mandate, a card and a removed card."""
    api = db.api
    created = await api.CreateAccount(
        pb.CreateAccountRequest(
            account=account_pb2.Account(
                type=account_pb2.ACCOUNT_TYPE_INDIVIDUAL,
                display_name="Ana López García",
                currency_code="EUR",
                time_zone="Europe/Madrid",
                country_code="ES",
                tax_id="B12345674",
                date_of_birth=date_pb2.Date(year=1980, month=2, day=29),
                labels={"segment": "retail"},
            )
        ),
        NO_CONTEXT,
    )
    account_id = created.account.account_id
    for contact in (
        contact_pb2.Contact(
            role=contact_pb2.CONTACT_ROLE_PRIMARY, name="Ana López García", email="ana.lopez@example.com"
        ),
        contact_pb2.Contact(role=contact_pb2.CONTACT_ROLE_COLLECTIONS, name="Ana", phone="+34612345678"),
        contact_pb2.Contact(
            role=contact_pb2.CONTACT_ROLE_BILLING,
            postal_address=postal_address_pb2.PostalAddress(
                region_code="ES", address_lines=["Calle Mayor 1"], locality="Madrid", recipients=["Ana López García"]
            ),
        ),
    ):
        await api.AddContact(pb.AddContactRequest(account_id=account_id, contact=contact), NO_CONTEXT)
    await api.AddPaymentMethod(
        pb.AddPaymentMethodRequest(
            account_id=account_id,
            payment_method=payment_method_pb2.PaymentMethod(
                sepa_direct_debit=payment_method_pb2.SepaDirectDebitDetails(
                    iban=IBAN,
                    bic="CAIXESBBXXX",
                    mandate_id="MANDATE-0001",
                    mandate_signature_date=date_pb2.Date(year=2031, month=1, day=15),
                    account_holder="Ana López García",
                )
            ),
        ),
        NO_CONTEXT,
    )
    for _ in range(2):
        added = await api.AddPaymentMethod(
            pb.AddPaymentMethodRequest(
                account_id=account_id,
                payment_method=payment_method_pb2.PaymentMethod(
                    card=payment_method_pb2.CardDetails(
                        provider="stripe",
                        provider_token=TOKEN,
                        brand="visa",
                        last4="4242",
                        expiry_month=12,
                        expiry_year=2033,
                    )
                ),
            ),
            NO_CONTEXT,
        )
    await api.RemovePaymentMethod(
        pb.RemovePaymentMethodRequest(account_id=account_id, payment_method_id=added.payment_method.payment_method_id),
        NO_CONTEXT,
    )
    return account_id


async def close(db: CustomerDb, account_id: str) -> None:
    await db.api.CloseAccount(
        pb.CloseAccountRequest(account_id=account_id, reason="customer asked", actor=account_pb2.STATUS_ACTOR_MANUAL),
        NO_CONTEXT,
    )


async def erase(db: CustomerDb, account_id: str, request_id: str = "") -> pb.ErasePersonalDataResponse:
    return await db.api.ErasePersonalData(
        pb.ErasePersonalDataRequest(account_id=account_id, request_id=request_id), NO_CONTEXT
    )


async def test_only_a_closed_account_is_erased(db: CustomerDb) -> None:
    account_id = await customer_with_everything(db)
    before = (await db.rows(select(accounts)), await db.rows(select(contacts)), len(await db.outbox_rows()))
    with pytest.raises(FailedPrecondition) as refused:
        await erase(db, account_id, str(uuid.uuid4()))
    assert refused.value.reason == "ACCOUNT_NOT_CLOSED"
    assert (await db.rows(select(accounts)), await db.rows(select(contacts)), len(await db.outbox_rows())) == before
    assert await db.rows(select(request_log)) == []


async def test_erasure_anonymises_the_account_its_contacts_and_payment_methods(db: CustomerDb) -> None:
    account_id = await customer_with_everything(db)
    await close(db, account_id)
    published_before = len(await db.outbox_rows())
    db.clock.advance(timedelta(days=1))

    response = await erase(db, account_id, str(uuid.uuid4()))

    account = response.account
    assert account.personal_data_erased
    assert account.display_name == ERASED
    assert (account.tax_id, dict(account.labels), account.HasField("date_of_birth")) == ("", {}, False)
    assert (account.account_number, account.currency_code, account.status) == (
        "A-00000001",
        "EUR",
        account_pb2.ACCOUNT_STATUS_CLOSED,
    )
    assert list(response.erased) == [
        "display_name",
        "tax_id",
        "date_of_birth",
        "labels",
        "contacts",
        "payment_methods",
    ]
    retained = " ".join(response.retained)
    for kept in ("billing", "balance", "charging", "statutory retention", "mandate id"):
        assert kept in retained

    # Contacts: kept as rows, role and channel type intact, every value anonymised.
    rows = await db.rows(select(contacts).order_by(contacts.c.create_time, contacts.c.contact_id))
    assert len(rows) == 3
    by_channel = {r.channel: r for r in rows}
    assert {r.name for r in rows} == {ERASED}
    assert by_channel["email"].email == ERASED and by_channel["email"].role == "primary"
    assert by_channel["phone"].phone == ERASED
    assert by_channel["postal"].postal_address == {"regionCode": "ES", "addressLines": [ERASED]}
    listed = await db.api.ListContacts(pb.ListContactsRequest(account_id=account_id), NO_CONTEXT)
    assert {c.name for c in listed.contacts} == {ERASED}

    # Payment methods, the removed one too: what finance needs stays, the rest goes.
    methods = {
        (r.type, r.remove_time is None): stored_details(r.details) for r in await db.rows(select(payment_methods))
    }
    sepa = methods[("sepa_direct_debit", True)]
    assert sepa == {
        "iban": "ES91****************1332",
        "bic": "CAIXESBBXXX",
        "mandate_id": "MANDATE-0001",
        "mandate_signature_date": "2031-01-15",
        "account_holder": ERASED,
        "erased": True,
    }
    for active in (True, False):
        card = methods[("card", active)]
        assert card["provider_token"] == "**************AbCd"
        assert (card["brand"], card["last4"], card["erased"]) == ("visa", "4242", True)
    listed_methods = await db.api.ListPaymentMethods(pb.ListPaymentMethodsRequest(account_id=account_id), NO_CONTEXT)
    assert [m.WhichOneof("details") for m in listed_methods.payment_methods] == ["sepa_direct_debit", "card"]

    # Nothing personal is left in the rows, nor in the events the erasure published.
    stored = repr(await db.rows(select(accounts))) + repr(rows) + repr(methods)
    assert not [p for p in PERSONAL if p in stored]
    published = (await db.outbox_rows())[published_before:]
    assert [r.subject.removeprefix("evolutivo.customer.v1.") for r in published] == [
        "account.personal_data_erased",
        "contact.changed",
        "contact.changed",
        "contact.changed",
    ]
    assert not [p for p in PERSONAL for r in published if p.encode() in r.payload]
    erased_event = events_pb2.PersonalDataErased.FromString(published[0].payload)
    assert erased_event.erase_time.ToDatetime(tzinfo=UTC) == NOW + timedelta(days=1)
    changed = [events_pb2.ContactChanged.FromString(r.payload) for r in published[1:]]
    assert {c.kind for c in changed} == {events_pb2.CHANGE_KIND_UPDATED}
    assert {c.contact.name for c in changed} == {ERASED}

    # The account is no longer found by its former name or email.
    for query in ("López", "ana.lopez@example.com"):
        found = await db.api.ListAccounts(pb.ListAccountsRequest(query=query), NO_CONTEXT)
        assert list(found.accounts) == []


async def test_erasing_again_answers_the_same_and_changes_nothing(db: CustomerDb) -> None:
    account_id = await customer_with_everything(db)
    await close(db, account_id)
    request_id = str(uuid.uuid4())
    first = await erase(db, account_id, request_id)
    published = len(await db.outbox_rows())
    state = (await db.rows(select(accounts)), await db.rows(select(contacts)), await db.rows(select(payment_methods)))
    db.clock.advance(timedelta(days=30))

    retried = await erase(db, account_id, request_id)
    assert retried == first
    again = await erase(db, account_id)
    assert again == first
    other_id = await erase(db, account_id, str(uuid.uuid4()))
    assert (list(other_id.erased), list(other_id.retained)) == (list(first.erased), list(first.retained))
    assert other_id.account == first.account

    assert len(await db.outbox_rows()) == published
    assert (
        await db.rows(select(accounts)),
        await db.rows(select(contacts)),
        await db.rows(select(payment_methods)),
    ) == state


async def test_erasure_of_a_missing_account_or_with_a_bad_id(db: CustomerDb) -> None:
    with pytest.raises(NotFound):
        await erase(db, str(uuid.uuid4()))
    with pytest.raises(InvalidArgument) as bad:
        await erase(db, "not-a-uuid")
    assert bad.value.field == "account_id"
    with pytest.raises(InvalidArgument) as bad_request_id:
        await erase(db, str(uuid.uuid4()), "nope")
    assert bad_request_id.value.field == "request_id"
