"""Contact rules on the pure domain model, their protobuf translation, the UpdateContact mask and
the ContactChanged event (no database, no gRPC)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from evolutivo.customer.v1 import contact_pb2, events_pb2
from evolutivo_customer.adapters import contact_events, proto_contacts
from evolutivo_customer.adapters.events import encode
from evolutivo_customer.domain.contacts import (
    ChangeKind,
    Channel,
    Contact,
    ContactChanged,
    ContactDetails,
    ContactRole,
    PostalAddress,
    normalise_email,
    normalise_phone,
    recipients,
)
from evolutivo_customer.domain.model import (
    ERASED,
    Account,
    AccountDetails,
    AccountType,
    BillingProfile,
    StatusActor,
)
from evolutivo_customer.entrypoints.grpc_contacts import merge_contact_update
from evolutivo_runtime.errors import FailedPrecondition, InvalidArgument
from google.protobuf import field_mask_pb2
from google.type import postal_address_pb2

NOW = datetime(2026, 3, 31, 10, 0, tzinfo=UTC)
assert contact_events  # registers ContactChanged on encode


def account(country_code: str = "ES") -> Account:
    details = AccountDetails(
        display_name="Acme Distribuciones SL",
        currency_code="EUR",
        time_zone="Europe/Madrid",
        country_code=country_code,
    )
    return Account.open(AccountType.BUSINESS, details, BillingProfile(bill_cycle_day=1), "A-00000001", NOW)


def closed_account() -> Account:
    acc = account()
    acc.close("moved away", StatusActor.MANUAL, "op-1", Decimal(0), False, [], NOW)
    return acc


def email_contact(role: ContactRole = ContactRole.BILLING, email: str = "billing@example.com") -> ContactDetails:
    return ContactDetails(role=role, name="Accounts payable", email=email)


def refused_field(acc: Account, details: ContactDetails) -> str:
    with pytest.raises(InvalidArgument) as refused:
        Contact.add(acc, details, NOW)
    return refused.value.field


# Email.


@pytest.mark.parametrize(
    ("given", "stored"),
    [
        ("  Ana.Lopez@Example.COM ", "Ana.Lopez@example.com"),
        ("a+tag@sub.example.co.uk", "a+tag@sub.example.co.uk"),
        ("ana@Bücher.DE", "ana@bücher.de"),
        ("o'brien@example.ie", "o'brien@example.ie"),
    ],
)
def test_email_is_trimmed_and_its_domain_lower_cased(given: str, stored: str) -> None:
    assert normalise_email(given, "contact.email") == stored


@pytest.mark.parametrize(
    "bad",
    [
        "",
        "   ",
        "no-at-sign",
        "@example.com",
        "ana@",
        "ana@localhost",
        "ana@example",
        "ana@example.123",
        "ana@-example.com",
        "ana@example-.com",
        "ana@exa mple.com",
        "ana@example..com",
        "ana..lopez@example.com",
        ".ana@example.com",
        "ana.@example.com",
        "ana lopez@example.com",
        "ana@b@example.com",
        '"ana"@example.com',
        "a" * 65 + "@example.com",
        "ana@" + "a" * 250 + ".com",
    ],
)
def test_bad_emails_are_refused_naming_the_field(bad: str) -> None:
    with pytest.raises(InvalidArgument) as refused:
        normalise_email(bad, "contact.email")
    assert refused.value.field == "contact.email"


# Phone.


@pytest.mark.parametrize(
    ("given", "region", "stored"),
    [
        ("+34912345678", "", "+34912345678"),
        ("+34 912 34 56 78", "", "+34912345678"),
        ("912 345 678", "ES", "+34912345678"),
        ("+1 (650) 253-0000", "ES", "+16502530000"),
    ],
)
def test_phone_is_stored_in_e164(given: str, region: str, stored: str) -> None:
    assert normalise_phone(given, region, "contact.phone") == stored


@pytest.mark.parametrize(("bad", "region"), [("", "ES"), ("+34 123", ""), ("912345678", ""), ("call me", "ES")])
def test_bad_phones_are_refused_naming_the_field(bad: str, region: str) -> None:
    with pytest.raises(InvalidArgument) as refused:
        normalise_phone(bad, region, "contact.phone")
    assert refused.value.field == "contact.phone"


def test_a_national_phone_number_is_read_in_the_accounts_country() -> None:
    contact = Contact.add(account("ES"), ContactDetails(ContactRole.PRIMARY, phone="612 34 56 78"), NOW)
    assert contact.details.phone == "+34612345678"
    assert refused_field(account(""), ContactDetails(ContactRole.PRIMARY, phone="612 34 56 78")) == "contact.phone"


# Postal address.


def address(**overrides: object) -> PostalAddress:
    values: dict[str, object] = {
        "region_code": "es",
        "address_lines": ("Calle Mayor 1", "  ", "3º B"),
        "locality": " Madrid ",
        "postal_code": "28013",
    }
    values.update(overrides)
    return PostalAddress(**values)  # type: ignore[arg-type]


def test_a_postal_address_is_normalised() -> None:
    contact = Contact.add(account(), ContactDetails(ContactRole.BILLING, postal_address=address()), NOW)
    stored = contact.details.postal_address
    assert stored == PostalAddress(
        region_code="ES", address_lines=("Calle Mayor 1", "3º B"), locality="Madrid", postal_code="28013"
    )
    assert contact.channel is Channel.POSTAL


def test_a_locality_alone_or_an_address_line_alone_is_enough() -> None:
    Contact.add(account(), ContactDetails(ContactRole.BILLING, postal_address=address(address_lines=())), NOW)
    Contact.add(account(), ContactDetails(ContactRole.BILLING, postal_address=address(locality="")), NOW)


@pytest.mark.parametrize(
    ("overrides", "field_name"),
    [
        ({"region_code": ""}, "contact.postal_address.region_code"),
        ({"region_code": "XX"}, "contact.postal_address.region_code"),
        ({"region_code": "ESP"}, "contact.postal_address.region_code"),
        ({"address_lines": (" ",), "locality": " "}, "contact.postal_address.address_lines"),
        ({"address_lines": ("x" * 501,)}, "contact.postal_address.address_lines[0]"),
        ({"address_lines": tuple(f"line {i}" for i in range(11))}, "contact.postal_address.address_lines"),
        ({"postal_code": "1" * 501}, "contact.postal_address.postal_code"),
        ({"language_code": "not a tag!"}, "contact.postal_address.language_code"),
        ({"revision": 1}, "contact.postal_address.revision"),
    ],
)
def test_bad_postal_addresses_are_refused_naming_the_field(overrides: dict[str, object], field_name: str) -> None:
    details = ContactDetails(ContactRole.BILLING, postal_address=address(**overrides))
    assert refused_field(account(), details) == field_name


# Role, name, channel, account status.


def test_role_is_required() -> None:
    assert refused_field(account(), ContactDetails(None, email="a@example.com")) == "contact.role"


def test_exactly_one_channel_is_required() -> None:
    assert refused_field(account(), ContactDetails(ContactRole.PRIMARY)) == "contact.channel"
    both = ContactDetails(ContactRole.PRIMARY, email="a@example.com", phone="+34912345678")
    assert refused_field(account(), both) == "contact.channel"


def test_an_empty_channel_value_is_refused() -> None:
    assert refused_field(account(), ContactDetails(ContactRole.PRIMARY, email="")) == "contact.email"
    assert refused_field(account(), ContactDetails(ContactRole.PRIMARY, phone="")) == "contact.phone"


def test_names_are_at_most_200_characters() -> None:
    Contact.add(account(), ContactDetails(ContactRole.PRIMARY, name="n" * 200, email="a@example.com"), NOW)
    too_long = ContactDetails(ContactRole.PRIMARY, name="n" * 201, email="a@example.com")
    assert refused_field(account(), too_long) == "contact.name"


def test_a_closed_account_gets_no_contact_changes() -> None:
    acc = account()
    contact = Contact.add(acc, email_contact(), NOW)
    closed = closed_account()
    for change in (
        lambda: Contact.add(closed, email_contact(), NOW),
        lambda: contact.update(closed, email_contact(email="new@example.com"), NOW),
        lambda: contact.remove(closed),
    ):
        with pytest.raises(FailedPrecondition) as refused:
            change()
        assert refused.value.reason == "ACCOUNT_CLOSED"


# Changes and their events.


def test_add_records_contact_added() -> None:
    acc = account()
    contact = Contact.add(acc, email_contact(email="Billing@EXAMPLE.com"), NOW)
    assert contact.account_id == acc.account_id
    assert contact.details.email == "Billing@example.com"
    assert (contact.create_time, contact.update_time) == (NOW, NOW)
    [event] = contact.events
    assert isinstance(event, ContactChanged)
    assert event.kind is ChangeKind.ADDED
    assert event.contact.contact_id == contact.contact_id


def test_update_records_what_changed_and_the_event_keeps_its_snapshot() -> None:
    acc = account()
    contact = Contact.add(acc, email_contact(), NOW)
    contact.events.clear()
    later = NOW + timedelta(hours=1)
    changed = contact.update(acc, ContactDetails(ContactRole.BILLING, name="AP", phone="+34912345678"), later)
    assert changed == ["name", "email", "phone"]
    assert contact.channel is Channel.PHONE
    assert contact.update_time == later
    [event] = contact.events
    assert event.kind is ChangeKind.UPDATED
    contact.update(acc, ContactDetails(ContactRole.PRIMARY, name="AP", phone="+34912345678"), later)
    assert event.contact.role is ContactRole.BILLING  # the first event still says what was then


def test_an_update_that_changes_nothing_records_nothing() -> None:
    acc = account()
    contact = Contact.add(acc, email_contact(), NOW)
    contact.events.clear()
    assert contact.update(acc, email_contact(email=" billing@EXAMPLE.com "), NOW + timedelta(hours=1)) == []
    assert contact.events == []
    assert contact.update_time == NOW


def test_an_invalid_update_changes_nothing() -> None:
    acc = account()
    contact = Contact.add(acc, email_contact(), NOW)
    before = contact.details
    with pytest.raises(InvalidArgument):
        contact.update(acc, email_contact(email="broken"), NOW)
    assert contact.details == before


def test_remove_records_contact_removed_with_the_contact_as_it_was() -> None:
    acc = account()
    contact = Contact.add(acc, email_contact(), NOW)
    contact.remove(acc)
    assert [e.kind for e in contact.events] == [ChangeKind.ADDED, ChangeKind.REMOVED]
    assert contact.events[-1].contact.details.email == "billing@example.com"


def test_erase_anonymises_every_channel_and_only_once() -> None:
    acc = account()
    by_email = Contact.add(acc, email_contact(), NOW)
    by_phone = Contact.add(acc, ContactDetails(ContactRole.PRIMARY, name="Ana", phone="+34912345678"), NOW)
    by_post = Contact.add(acc, ContactDetails(ContactRole.BILLING, name="Ana", postal_address=address()), NOW)
    for contact in (by_email, by_phone, by_post):
        contact.events.clear()
        assert contact.erase(NOW) is True
        assert contact.erased
        assert contact.details.name == ERASED
        assert contact.events[0].kind is ChangeKind.UPDATED
        assert contact.erase(NOW) is False
    assert by_email.details.email == ERASED
    assert by_phone.details.phone == ERASED
    assert by_post.details.postal_address == PostalAddress(region_code="ES", address_lines=(ERASED,))
    assert by_email.role is ContactRole.BILLING and by_email.channel is Channel.EMAIL


# Who documents go to.


def test_recipients_fall_back_to_primary_contacts() -> None:
    acc = account()
    primary = Contact.add(acc, email_contact(ContactRole.PRIMARY, "owner@example.com"), NOW)
    billing = Contact.add(acc, email_contact(ContactRole.BILLING, "ap@example.com"), NOW)
    technical = Contact.add(acc, email_contact(ContactRole.TECHNICAL, "it@example.com"), NOW)
    everyone = [primary, billing, technical]
    assert recipients(everyone, ContactRole.BILLING) == [billing]
    assert recipients(everyone, ContactRole.COLLECTIONS) == [primary]
    assert recipients(everyone, ContactRole.PRIMARY) == [primary]
    assert recipients([technical], ContactRole.BILLING) == []
    billing.erase(NOW)
    assert recipients(everyone, ContactRole.BILLING) == [primary]


# Protobuf translation.


def test_contact_round_trips_through_protobuf() -> None:
    acc = account()
    contact = Contact.add(acc, ContactDetails(ContactRole.COLLECTIONS, name="Ana", postal_address=address()), NOW)
    pb = proto_contacts.contact_to_pb(contact)
    assert pb.WhichOneof("channel") == "postal_address"
    assert (pb.contact_id, pb.account_id) == (str(contact.contact_id), str(acc.account_id))
    assert pb.role == contact_pb2.CONTACT_ROLE_COLLECTIONS
    assert list(pb.postal_address.address_lines) == ["Calle Mayor 1", "3º B"]
    assert pb.create_time.ToDatetime(tzinfo=UTC) == NOW
    assert proto_contacts.details_from_pb(pb) == contact.details
    assert proto_contacts.postal_from_json(proto_contacts.postal_to_json(address())) == address()


def test_an_explicitly_empty_channel_is_kept_as_set() -> None:
    details = proto_contacts.details_from_pb(contact_pb2.Contact(role=contact_pb2.CONTACT_ROLE_PRIMARY, email=""))
    assert details.email == ""
    assert proto_contacts.details_from_pb(contact_pb2.Contact()).channel is None


def test_an_unknown_role_number_is_refused() -> None:
    with pytest.raises(InvalidArgument) as refused:
        proto_contacts.details_from_pb(contact_pb2.Contact(role=99, email="a@example.com"))  # type: ignore[arg-type]
    assert refused.value.field == "contact.role"


# The update mask.


def mask(*paths: str) -> field_mask_pb2.FieldMask:
    return field_mask_pb2.FieldMask(paths=list(paths))


def test_the_mask_merges_only_the_named_fields() -> None:
    acc = account()
    contact = Contact.add(acc, email_contact(), NOW)
    request = contact_pb2.Contact(role=contact_pb2.CONTACT_ROLE_TECHNICAL, name="IT", phone="+34912345678")
    assert merge_contact_update(request, mask("name"))(contact) == ContactDetails(
        ContactRole.BILLING, name="IT", email="billing@example.com"
    )
    assert merge_contact_update(request, mask("role", "phone"))(contact) == ContactDetails(
        ContactRole.TECHNICAL, name="Accounts payable", phone="+34912345678"
    )
    # Naming every channel path replaces the channel with the one the request sets.
    merged = merge_contact_update(request, mask("email", "phone", "postal_address"))(contact)
    assert (merged.email, merged.phone, merged.postal_address) == (None, "+34912345678", None)


def test_an_unknown_role_outside_the_mask_is_ignored() -> None:
    contact = Contact.add(account(), email_contact(), NOW)
    request = contact_pb2.Contact(role=42, name="New")  # type: ignore[arg-type]
    assert merge_contact_update(request, mask("name"))(contact).name == "New"


@pytest.mark.parametrize(
    ("request_", "paths", "field_name"),
    [
        (contact_pb2.Contact(name="x"), (), "update_mask"),
        (contact_pb2.Contact(name="x"), ("name", "contact_id"), "update_mask"),
        (contact_pb2.Contact(name="x"), ("postal_address.locality",), "update_mask"),
        (contact_pb2.Contact(email="a@example.com"), ("phone",), "contact.phone"),
        (contact_pb2.Contact(), ("email",), "contact.email"),
    ],
)
def test_bad_masks_are_refused_before_any_read(
    request_: contact_pb2.Contact, paths: tuple[str, ...], field_name: str
) -> None:
    with pytest.raises(InvalidArgument) as refused:
        merge_contact_update(request_, mask(*paths))
    assert refused.value.field == field_name


def test_clearing_the_role_through_the_mask_is_refused_by_the_domain() -> None:
    acc = account()
    contact = Contact.add(acc, email_contact(), NOW)
    merged = merge_contact_update(contact_pb2.Contact(), mask("role"))(contact)
    with pytest.raises(InvalidArgument) as refused:
        contact.update(acc, merged, NOW)
    assert refused.value.field == "contact.role"


# The event.


@pytest.mark.parametrize(
    ("kind", "pb_kind"),
    [
        (ChangeKind.ADDED, events_pb2.CHANGE_KIND_ADDED),
        (ChangeKind.UPDATED, events_pb2.CHANGE_KIND_UPDATED),
        (ChangeKind.REMOVED, events_pb2.CHANGE_KIND_REMOVED),
    ],
)
def test_contact_changed_is_published_with_the_contact(kind: ChangeKind, pb_kind: int) -> None:
    contact = Contact.add(account(), email_contact(), NOW)
    subject, message = encode(ContactChanged(kind, contact))
    assert subject == "evolutivo.customer.v1.contact.changed"
    assert isinstance(message, events_pb2.ContactChanged)
    assert message.kind == pb_kind
    assert message.contact.email == "billing@example.com"
    assert message.contact.contact_id == str(contact.contact_id)


def test_postal_json_uses_the_protobuf_json_mapping() -> None:
    stored = proto_contacts.postal_to_json(address(region_code="ES", address_lines=("Calle Mayor 1",)))
    assert stored["regionCode"] == "ES"
    assert stored["addressLines"] == ["Calle Mayor 1"]
    parsed = postal_address_pb2.PostalAddress(region_code="ES", locality="Madrid")
    assert proto_contacts.postal_from_pb(parsed).locality == "Madrid"
