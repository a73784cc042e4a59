"""Contacts and payment methods against a real, migrated customer database, through the servicer
mixins (and, at the end, over real gRPC behind the runtime's interceptors): the rules, the events
in the outbox, idempotent request ids, refused input that changes nothing, the one default under
concurrency, masking, and card data refused before it reaches the service."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Awaitable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import evolutivo_customer
import grpc
import pytest
from evolutivo.customer.v1 import account_pb2, contact_pb2, events_pb2, payment_method_pb2
from evolutivo.customer.v1 import customer_service_pb2 as pb
from evolutivo.customer.v1 import customer_service_pb2_grpc as pb_grpc
from evolutivo_customer.adapters import contact_events, payment_method_events
from evolutivo_customer.adapters.orm import contacts, outbox, payment_methods, request_log
from evolutivo_customer.domain.contacts import ContactRole
from evolutivo_customer.entrypoints.grpc_accounts import AccountsApi
from evolutivo_customer.entrypoints.grpc_contacts import ContactsApi
from evolutivo_customer.entrypoints.grpc_payment_methods import PaymentMethodsApi
from evolutivo_customer.service_layer.contacts import contacts_for
from evolutivo_runtime.errors import FailedPrecondition, InvalidArgument, NotFound
from evolutivo_runtime.server.interceptors import ServiceInterceptor
from evolutivo_runtime.server.sensitive_data import SensitiveDataGuard
from google.protobuf import field_mask_pb2
from google.type import date_pb2, postal_address_pb2
from sqlalchemy import select
from support.customer import CustomerServiceDb, MixinState, stored_details
from support.databases import MigratedDatabase
from support.rpc import bad_request_fields, serving

MIGRATIONS = Path(evolutivo_customer.__file__).resolve().parent / "migrations"
NOW = datetime(2031, 5, 17, 9, 30, tzinfo=UTC)
IBAN = "ES9121000418450200051332"
# A valid IBAN whose digits pass the Luhn check: the card-number guard must let it through.
LUHN_IBAN = "DK5000400440116243"
VISA = "4111111111111111"
NO_CONTEXT: Any = None
RACING_REQUEST_ID = "7d0e8a51-0000-4000-8000-000000000001"
assert contact_events and payment_method_events  # their encoders, as the service's app imports them


class Servicer(AccountsApi, ContactsApi, PaymentMethodsApi, MixinState):
    """The mixins under test."""


class GrpcServicer(Servicer, pb_grpc.CustomerServiceServicer):
    """The mixins under test on a real server; the RPCs of others answer UNIMPLEMENTED."""


class CustomerDb(CustomerServiceDb):
    @property
    def api(self) -> Servicer:
        return Servicer(self.uow)

    async def published(self, subject_suffix: str = "") -> list[Any]:
        rows = await self.rows(select(outbox).order_by(outbox.c.seq))
        return [r for r in rows if r.subject.endswith(subject_suffix)]

    async def snapshot(self) -> tuple[int, ...]:
        return tuple([await self.count(t) for t in (contacts, payment_methods, outbox, request_log)])


@pytest.fixture
async def db(migrated_database: MigratedDatabase) -> AsyncIterator[CustomerDb]:
    async with CustomerDb.open(await migrated_database("customer", MIGRATIONS), NOW, pool_size=10) as database:
        yield database


async def new_account(db: CustomerDb, country_code: str = "ES") -> str:
    created = await db.api.CreateAccount(
        pb.CreateAccountRequest(
            request_id=str(uuid.uuid4()),
            account=account_pb2.Account(
                type=account_pb2.ACCOUNT_TYPE_BUSINESS,
                display_name="Acme Distribuciones SL",
                currency_code="EUR",
                time_zone="Europe/Madrid",
                country_code=country_code,
            ),
        ),
        NO_CONTEXT,
    )
    return created.account.account_id


async def close(db: CustomerDb, account_id: str) -> None:
    await db.api.CloseAccount(
        pb.CloseAccountRequest(account_id=account_id, reason="left", actor=account_pb2.STATUS_ACTOR_MANUAL),
        NO_CONTEXT,
    )


def email(address: str, role: int = contact_pb2.CONTACT_ROLE_BILLING, name: str = "AP") -> contact_pb2.Contact:
    return contact_pb2.Contact(role=role, name=name, email=address)  # type: ignore[arg-type]


async def add_contact(db: CustomerDb, account_id: str, contact: contact_pb2.Contact, request_id: str = "") -> Any:
    response = await db.api.AddContact(
        pb.AddContactRequest(account_id=account_id, contact=contact, request_id=request_id), NO_CONTEXT
    )
    return response.contact


# Contacts.


async def test_add_update_list_and_remove_a_contact(db: CustomerDb) -> None:
    account_id = await new_account(db)
    added = await add_contact(db, account_id, email("AP@Example.COM"))
    assert added.email == "AP@example.com"
    assert added.account_id == account_id
    assert added.role == contact_pb2.CONTACT_ROLE_BILLING

    db.clock.advance(timedelta(minutes=1))
    updated = await db.api.UpdateContact(
        pb.UpdateContactRequest(
            contact=contact_pb2.Contact(
                account_id=account_id, contact_id=added.contact_id, phone="612 34 56 78", name="ignored"
            ),
            update_mask=field_mask_pb2.FieldMask(paths=["email", "phone"]),
        ),
        NO_CONTEXT,
    )
    assert updated.contact.WhichOneof("channel") == "phone"
    assert updated.contact.phone == "+34612345678"  # read in the account's country
    assert updated.contact.name == "AP"  # not in the mask
    assert updated.contact.update_time.ToDatetime(tzinfo=UTC) == NOW + timedelta(minutes=1)

    listed = await db.api.ListContacts(pb.ListContactsRequest(account_id=account_id), NO_CONTEXT)
    assert list(listed.contacts) == [updated.contact]

    await db.api.RemoveContact(pb.RemoveContactRequest(account_id=account_id, contact_id=added.contact_id), NO_CONTEXT)
    assert await db.count(contacts) == 0
    with pytest.raises(NotFound):
        await db.api.RemoveContact(
            pb.RemoveContactRequest(account_id=account_id, contact_id=added.contact_id), NO_CONTEXT
        )

    changes = [events_pb2.ContactChanged.FromString(r.payload) for r in await db.published(".contact.changed")]
    assert [c.kind for c in changes] == [
        events_pb2.CHANGE_KIND_ADDED,
        events_pb2.CHANGE_KIND_UPDATED,
        events_pb2.CHANGE_KIND_REMOVED,
    ]
    assert changes[0].contact.email == "AP@example.com"
    assert changes[1].contact.phone == "+34612345678"
    assert changes[2].contact.contact_id == added.contact_id


async def test_a_postal_address_is_stored_as_protobuf_json(db: CustomerDb) -> None:
    account_id = await new_account(db)
    added = await add_contact(
        db,
        account_id,
        contact_pb2.Contact(
            role=contact_pb2.CONTACT_ROLE_PRIMARY,
            postal_address=postal_address_pb2.PostalAddress(
                region_code="es", address_lines=["Calle Mayor 1"], locality="Madrid", postal_code="28013"
            ),
        ),
    )
    (row,) = await db.rows(select(contacts.c.channel, contacts.c.postal_address))
    assert row.channel == "postal"
    assert row.postal_address == {
        "regionCode": "ES",
        "addressLines": ["Calle Mayor 1"],
        "locality": "Madrid",
        "postalCode": "28013",
    }
    listed = await db.api.ListContacts(pb.ListContactsRequest(account_id=account_id), NO_CONTEXT)
    assert listed.contacts[0].postal_address == added.postal_address


async def test_add_contact_with_a_request_id_happens_once(db: CustomerDb) -> None:
    account_id = await new_account(db)
    request_id = str(uuid.uuid4())
    first = await add_contact(db, account_id, email("ap@example.com"), request_id)
    again = await add_contact(db, account_id, email("ap@example.com"), request_id)
    assert again == first
    racing = await asyncio.gather(
        *(
            add_contact(db, account_id, email("it@example.com"), "7d0e8a51-0000-4000-8000-000000000001")
            for _ in range(5)
        )
    )
    assert len({c.contact_id for c in racing}) == 1
    assert await db.count(contacts) == 2
    assert len(await db.published(".contact.changed")) == 2


@pytest.mark.parametrize(
    ("contact", "field_name"),
    [
        (contact_pb2.Contact(email="a@example.com"), "contact.role"),
        (contact_pb2.Contact(role=contact_pb2.CONTACT_ROLE_BILLING), "contact.channel"),
        (email("not-an-email"), "contact.email"),
        (contact_pb2.Contact(role=contact_pb2.CONTACT_ROLE_BILLING, phone="+34 123"), "contact.phone"),
        (email("a@example.com", name="n" * 201), "contact.name"),
        (
            contact_pb2.Contact(
                role=contact_pb2.CONTACT_ROLE_BILLING,
                postal_address=postal_address_pb2.PostalAddress(locality="Madrid"),
            ),
            "contact.postal_address.region_code",
        ),
        (
            contact_pb2.Contact(
                role=contact_pb2.CONTACT_ROLE_BILLING, postal_address=postal_address_pb2.PostalAddress(region_code="ES")
            ),
            "contact.postal_address.address_lines",
        ),
    ],
)
async def test_bad_contacts_are_refused_naming_the_field_and_change_nothing(
    db: CustomerDb, contact: contact_pb2.Contact, field_name: str
) -> None:
    account_id = await new_account(db)
    before = await db.snapshot()
    request_id = str(uuid.uuid4())
    with pytest.raises(InvalidArgument) as refused:
        await add_contact(db, account_id, contact, request_id)
    assert refused.value.field == field_name
    assert await db.snapshot() == before
    # The refused call did not spend its request id.
    await add_contact(db, account_id, email("fixed@example.com"), request_id)


async def test_contact_calls_name_missing_things(db: CustomerDb) -> None:
    account_id = await new_account(db)
    with pytest.raises(NotFound) as no_account:
        await add_contact(db, str(uuid.uuid4()), email("a@example.com"))
    assert no_account.value.reason == "ACCOUNT_NOT_FOUND"
    with pytest.raises(NotFound) as no_contact:
        await db.api.UpdateContact(
            pb.UpdateContactRequest(
                contact=contact_pb2.Contact(account_id=account_id, contact_id=str(uuid.uuid4()), name="x"),
                update_mask=field_mask_pb2.FieldMask(paths=["name"]),
            ),
            NO_CONTEXT,
        )
    assert no_contact.value.reason == "CONTACT_NOT_FOUND"
    with pytest.raises(InvalidArgument) as no_id:
        await db.api.UpdateContact(pb.UpdateContactRequest(contact=contact_pb2.Contact(name="x")), NO_CONTEXT)
    assert no_id.value.field == "contact.account_id"
    # Another account's contact is not found through this one.
    other = await add_contact(db, await new_account(db), email("x@example.com"))
    with pytest.raises(NotFound):
        await db.api.RemoveContact(
            pb.RemoveContactRequest(account_id=account_id, contact_id=other.contact_id), NO_CONTEXT
        )


async def test_a_closed_accounts_contacts_cannot_change(db: CustomerDb) -> None:
    account_id = await new_account(db)
    contact = await add_contact(db, account_id, email("a@example.com"))
    await close(db, account_id)
    before = await db.snapshot()
    with pytest.raises(FailedPrecondition) as refused:
        await add_contact(db, account_id, email("b@example.com"))
    assert refused.value.reason == "ACCOUNT_CLOSED"
    with pytest.raises(FailedPrecondition):
        await db.api.RemoveContact(
            pb.RemoveContactRequest(account_id=account_id, contact_id=contact.contact_id), NO_CONTEXT
        )
    assert await db.snapshot() == before


async def test_contacts_are_paged_in_creation_order(db: CustomerDb) -> None:
    account_id = await new_account(db)
    for i in range(7):
        if i % 3 == 0:
            db.clock.advance(timedelta(seconds=1))  # some share an instant: ties go by id
        await add_contact(db, account_id, email(f"c{i}@example.com"))
    seen, token, sizes = [], "", []
    while True:
        page = await db.api.ListContacts(
            pb.ListContactsRequest(account_id=account_id, page_size=3, page_token=token), NO_CONTEXT
        )
        sizes.append(len(page.contacts))
        seen += list(page.contacts)
        token = page.next_page_token
        if not token:
            break
    assert sizes == [3, 3, 1]
    keys = [(c.create_time.ToDatetime(), uuid.UUID(c.contact_id)) for c in seen]
    assert keys == sorted(keys) and len(set(keys)) == 7
    with pytest.raises(InvalidArgument) as bad_token:
        await db.api.ListContacts(pb.ListContactsRequest(account_id=account_id, page_token="garbage!"), NO_CONTEXT)
    assert bad_token.value.field == "page_token"


async def test_contacts_for_falls_back_to_primary(db: CustomerDb) -> None:
    account_id = await new_account(db)
    await add_contact(db, account_id, email("owner@example.com", contact_pb2.CONTACT_ROLE_PRIMARY))
    await add_contact(db, account_id, email("it@example.com", contact_pb2.CONTACT_ROLE_TECHNICAL))
    await add_contact(db, account_id, email("ap@example.com", contact_pb2.CONTACT_ROLE_BILLING))
    billing = await contacts_for(db.uow(), uuid.UUID(account_id), ContactRole.BILLING)
    assert [c.details.email for c in billing] == ["ap@example.com"]
    collections = await contacts_for(db.uow(), uuid.UUID(account_id), ContactRole.COLLECTIONS)
    assert [c.details.email for c in collections] == ["owner@example.com"]


async def test_accounts_are_found_by_a_contacts_email(db: CustomerDb) -> None:
    account_id = await new_account(db)
    await add_contact(db, account_id, email("facturas@acme.example"))
    found = await db.api.ListAccounts(pb.ListAccountsRequest(query="FACTURAS@acme"), NO_CONTEXT)
    assert [a.account_id for a in found.accounts] == [account_id]


# Payment methods.


def sepa(iban: str = IBAN, mandate_id: str = "MANDATE-0001") -> payment_method_pb2.PaymentMethod:
    return payment_method_pb2.PaymentMethod(
        sepa_direct_debit=payment_method_pb2.SepaDirectDebitDetails(
            iban=iban,
            bic="CAIXESBBXXX",
            mandate_id=mandate_id,
            mandate_signature_date=date_pb2.Date(year=2031, month=5, day=2),
            account_holder="Ana López",
        )
    )


def card(token: str = "pm_1NfakeTokenAbCd") -> payment_method_pb2.PaymentMethod:
    return payment_method_pb2.PaymentMethod(
        card=payment_method_pb2.CardDetails(
            provider="stripe", provider_token=token, brand="visa", last4="4242", expiry_month=5, expiry_year=2031
        )
    )


async def add_method(
    db: CustomerDb,
    account_id: str,
    method: payment_method_pb2.PaymentMethod,
    make_default: bool = False,
    request_id: str = "",
) -> payment_method_pb2.PaymentMethod:
    response = await db.api.AddPaymentMethod(
        pb.AddPaymentMethodRequest(
            account_id=account_id, payment_method=method, make_default=make_default, request_id=request_id
        ),
        NO_CONTEXT,
    )
    return response.payment_method


async def listed(db: CustomerDb, account_id: str) -> list[payment_method_pb2.PaymentMethod]:
    return list(
        (
            await db.api.ListPaymentMethods(pb.ListPaymentMethodsRequest(account_id=account_id), NO_CONTEXT)
        ).payment_methods
    )


async def test_the_first_method_is_the_default_and_reads_are_masked(db: CustomerDb) -> None:
    account_id = await new_account(db)
    first = await add_method(db, account_id, sepa(" es91 2100 0418 4502 0005 1332 "))
    assert first.is_default
    assert first.sepa_direct_debit.iban == "ES91****************1332"
    assert first.sepa_direct_debit.mandate_id == "MANDATE-0001"
    db.clock.advance(timedelta(seconds=1))
    second = await add_method(db, account_id, card())
    assert not second.is_default
    assert second.card.provider_token == "**************AbCd"
    db.clock.advance(timedelta(seconds=1))
    transfer = await add_method(db, account_id, payment_method_pb2.PaymentMethod(bank_transfer={}))
    assert transfer.bank_transfer.payment_reference == "A-00000001"

    assert [m.payment_method_id for m in await listed(db, account_id)] == [
        first.payment_method_id,
        second.payment_method_id,
        transfer.payment_method_id,
    ]
    # Stored in full (the provider needs them), compact and upper-case.
    stored = {
        r.type: stored_details(r.details)
        for r in await db.rows(select(payment_methods.c.type, payment_methods.c.details))
    }
    assert stored["sepa_direct_debit"]["iban"] == IBAN
    assert stored["card"]["provider_token"] == "pm_1NfakeTokenAbCd"
    # Nothing unmasked leaves in an event.
    payloads = [r.payload for r in await db.published(".payment_method.added")]
    assert len(payloads) == 3
    assert not [p for p in payloads if IBAN.encode() in p or b"pm_1NfakeTokenAbCd" in p]
    (became_default,) = [
        events_pb2.DefaultPaymentMethodChanged.FromString(r.payload)
        for r in await db.published(".payment_method.default_changed")
    ]
    assert became_default.payment_method.payment_method_id == first.payment_method_id
    assert became_default.previous_payment_method_id == ""


async def test_make_default_and_set_default_move_the_one_default(db: CustomerDb) -> None:
    account_id = await new_account(db)
    first = await add_method(db, account_id, sepa())
    second = await add_method(db, account_id, card(), make_default=True)
    assert second.is_default
    methods = await listed(db, account_id)
    assert [(m.payment_method_id, m.is_default) for m in methods] == [
        (second.payment_method_id, True),
        (first.payment_method_id, False),
    ]
    back = await db.api.SetDefaultPaymentMethod(
        pb.SetDefaultPaymentMethodRequest(account_id=account_id, payment_method_id=first.payment_method_id),
        NO_CONTEXT,
    )
    assert back.payment_method.is_default
    assert back.payment_method.sepa_direct_debit.iban == "ES91****************1332"
    assert [m.is_default for m in await listed(db, account_id)] == [True, False]
    moves = [
        events_pb2.DefaultPaymentMethodChanged.FromString(r.payload)
        for r in await db.published(".payment_method.default_changed")
    ]
    assert [(m.payment_method.payment_method_id, m.previous_payment_method_id) for m in moves] == [
        (first.payment_method_id, ""),
        (second.payment_method_id, first.payment_method_id),
        (first.payment_method_id, second.payment_method_id),
    ]
    with pytest.raises(NotFound):
        await db.api.SetDefaultPaymentMethod(
            pb.SetDefaultPaymentMethodRequest(account_id=account_id, payment_method_id=str(uuid.uuid4())), NO_CONTEXT
        )


async def test_the_default_is_removed_only_last(db: CustomerDb) -> None:
    account_id = await new_account(db)
    first = await add_method(db, account_id, sepa())
    second = await add_method(db, account_id, card())

    def remove(method: payment_method_pb2.PaymentMethod) -> Awaitable[pb.RemovePaymentMethodResponse]:
        return db.api.RemovePaymentMethod(
            pb.RemovePaymentMethodRequest(account_id=account_id, payment_method_id=method.payment_method_id),
            NO_CONTEXT,
        )

    with pytest.raises(FailedPrecondition) as refused:
        await remove(first)
    assert refused.value.reason == "DEFAULT_PAYMENT_METHOD"
    assert "set another default first" in refused.value.message
    await remove(second)
    assert [m.payment_method_id for m in await listed(db, account_id)] == [first.payment_method_id]
    await remove(first)
    assert await listed(db, account_id) == []
    # Soft removal: the rows stay, with their removal time.
    rows = await db.rows(select(payment_methods.c.remove_time))
    assert [r.remove_time for r in rows] == [NOW, NOW]
    removed = [events_pb2.PaymentMethodRemoved.FromString(r.payload) for r in await db.published(".removed")]
    assert [r.payment_method_id for r in removed] == [second.payment_method_id, first.payment_method_id]
    with pytest.raises(NotFound):
        await remove(first)
    # A new first method becomes the default again.
    assert (await add_method(db, account_id, card())).is_default


async def test_add_payment_method_with_a_request_id_happens_once(db: CustomerDb) -> None:
    account_id = await new_account(db)
    request_id = str(uuid.uuid4())
    first = await add_method(db, account_id, sepa(), request_id=request_id)
    again = await add_method(db, account_id, sepa(), request_id=request_id)
    assert again == first
    assert await db.count(payment_methods) == 1
    assert len(await db.published(".payment_method.added")) == 1


async def test_concurrent_first_methods_make_exactly_one_default(db: CustomerDb) -> None:
    account_id = await new_account(db)
    added = await asyncio.gather(*(add_method(db, account_id, card(f"pm_token_{i}")) for i in range(6)))
    assert sum(m.is_default for m in added) == 1
    assert sum(m.is_default for m in await listed(db, account_id)) == 1
    await asyncio.gather(
        *(
            db.api.SetDefaultPaymentMethod(
                pb.SetDefaultPaymentMethodRequest(account_id=account_id, payment_method_id=m.payment_method_id),
                NO_CONTEXT,
            )
            for m in added
        )
    )
    assert sum(m.is_default for m in await listed(db, account_id)) == 1


@pytest.mark.parametrize(
    ("method", "field_name"),
    [
        (sepa(iban="ES9121000418450200051333"), "payment_method.sepa_direct_debit.iban"),
        (sepa(iban="ES91 2100"), "payment_method.sepa_direct_debit.iban"),
        (sepa(mandate_id="M" * 36), "payment_method.sepa_direct_debit.mandate_id"),
        (card(token=""), "payment_method.card.provider_token"),
        (payment_method_pb2.PaymentMethod(), "payment_method.details"),
        (
            payment_method_pb2.PaymentMethod(
                card=payment_method_pb2.CardDetails(
                    provider="stripe", provider_token="pm_x", last4="4242", expiry_month=4, expiry_year=2031
                )
            ),
            "payment_method.card.expiry_year",
        ),
    ],
)
async def test_bad_payment_methods_are_refused_and_change_nothing(
    db: CustomerDb, method: payment_method_pb2.PaymentMethod, field_name: str
) -> None:
    account_id = await new_account(db)
    await add_method(db, account_id, card())
    before = await db.snapshot()
    with pytest.raises(InvalidArgument) as refused:
        await add_method(db, account_id, method, make_default=True, request_id=str(uuid.uuid4()))
    assert refused.value.field == field_name
    assert await db.snapshot() == before


async def test_a_closed_accounts_payment_methods_cannot_change(db: CustomerDb) -> None:
    account_id = await new_account(db)
    await add_method(db, account_id, card())
    await close(db, account_id)
    with pytest.raises(FailedPrecondition) as refused:
        await add_method(db, account_id, sepa())
    assert refused.value.reason == "ACCOUNT_CLOSED"
    assert len(await listed(db, account_id)) == 1  # still readable


# Over real gRPC, behind the runtime's interceptors.


@pytest.fixture
async def stub(db: CustomerDb) -> AsyncIterator[pb_grpc.CustomerServiceAsyncStub]:
    domain = "customer.evolutivo.io"
    async with serving(
        pb_grpc.add_CustomerServiceServicer_to_server,
        GrpcServicer(db.uow),
        ServiceInterceptor(domain, guards=[SensitiveDataGuard()]),
    ) as channel:
        yield pb_grpc.CustomerServiceStub(channel)


async def test_card_data_never_reaches_the_service(db: CustomerDb, stub: pb_grpc.CustomerServiceAsyncStub) -> None:
    account_id = await new_account(db)
    before = await db.snapshot()
    for request, field_name in (
        (
            pb.AddPaymentMethodRequest(account_id=account_id, payment_method=card(token=VISA)),
            "payment_method.card.provider_token",
        ),
        (
            pb.AddPaymentMethodRequest(account_id=account_id, payment_method=card(token="4111 1111 1111 1111")),
            "payment_method.card.provider_token",
        ),
        (
            pb.AddContactRequest(account_id=account_id, contact=email("a@example.com", name=f"card {VISA}")),
            "contact.name",
        ),
    ):
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await (
                stub.AddPaymentMethod(request)
                if isinstance(request, pb.AddPaymentMethodRequest)
                else stub.AddContact(request)
            )
        assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert bad_request_fields(refused.value) == [field_name]
        assert VISA not in (refused.value.details() or "")
    with pytest.raises(grpc.aio.AioRpcError) as cvv:
        await stub.CreateAccount(
            pb.CreateAccountRequest(
                account=account_pb2.Account(
                    type=account_pb2.ACCOUNT_TYPE_INDIVIDUAL,
                    display_name="Ana",
                    currency_code="EUR",
                    time_zone="UTC",
                    labels={"cvv": "123"},
                )
            )
        )
    assert bad_request_fields(cvv.value) == ['account.labels["cvv"]']
    assert await db.snapshot() == before


async def test_bad_input_over_grpc_names_the_field(db: CustomerDb, stub: pb_grpc.CustomerServiceAsyncStub) -> None:
    account_id = await new_account(db)
    # An IBAN whose digits happen to pass the Luhn check is not a card number.
    added = await stub.AddPaymentMethod(
        pb.AddPaymentMethodRequest(account_id=account_id, payment_method=sepa(iban=LUHN_IBAN))
    )
    assert added.payment_method.sepa_direct_debit.iban == "DK50**********6243"
    with pytest.raises(grpc.aio.AioRpcError) as bad_iban:
        await stub.AddPaymentMethod(
            pb.AddPaymentMethodRequest(account_id=account_id, payment_method=sepa(iban="DK5000400440116244"))
        )
    assert bad_iban.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert bad_request_fields(bad_iban.value) == ["payment_method.sepa_direct_debit.iban"]
    with pytest.raises(grpc.aio.AioRpcError) as bad_id:
        await stub.RemovePaymentMethod(pb.RemovePaymentMethodRequest(account_id=account_id, payment_method_id="nope"))
    assert bad_request_fields(bad_id.value) == ["payment_method_id"]
    await stub.AddPaymentMethod(pb.AddPaymentMethodRequest(account_id=account_id, payment_method=card()))
    with pytest.raises(grpc.aio.AioRpcError) as removing_default:
        await stub.RemovePaymentMethod(
            pb.RemovePaymentMethodRequest(
                account_id=account_id, payment_method_id=added.payment_method.payment_method_id
            )
        )
    assert removing_default.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    with pytest.raises(grpc.aio.AioRpcError) as too_long:
        await stub.AddContact(
            pb.AddContactRequest(account_id=account_id, contact=email("a@example.com", name="n" * 201))
        )
    assert bad_request_fields(too_long.value) == ["contact.name"]
