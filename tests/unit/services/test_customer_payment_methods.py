"""Payment-method rules on the pure domain model: validation, the one default, removal, masking,
erasure, and their protobuf translation and events (no database, no gRPC)."""

from __future__ import annotations

import uuid
from dataclasses import replace
from datetime import UTC, date, datetime
from decimal import Decimal

import pytest
from evolutivo.customer.v1 import events_pb2, payment_method_pb2
from evolutivo_customer.adapters import payment_method_events
from evolutivo_customer.adapters.events import encode
from evolutivo_customer.adapters.proto_payment_methods import details_from_pb, payment_method_to_pb
from evolutivo_customer.domain.model import ERASED, Account, AccountDetails, AccountType, BillingProfile, StatusActor
from evolutivo_customer.domain.payment_methods import (
    AccountPaymentMethods,
    BankTransferDetails,
    CardDetails,
    DefaultPaymentMethodChanged,
    PaymentDetails,
    PaymentMethod,
    PaymentMethodAdded,
    PaymentMethodRemoved,
    PaymentMethodType,
    PayOnInvoiceDetails,
    SepaDirectDebitDetails,
    check_details,
    mask_iban,
    mask_token,
)
from evolutivo_runtime.errors import FailedPrecondition, InvalidArgument, NotFound
from google.type import date_pb2

# 23:30 UTC on 31 March is already 1 April in Madrid.
NOW = datetime(2026, 3, 31, 23, 30, tzinfo=UTC)
IBAN = "ES9121000418450200051332"
FULL_WIDTH_DIGITS = str.maketrans("0123456789", "".join(chr(0xFF10 + d) for d in range(10)))
assert payment_method_events  # registers the payment-method events on encode


def account(time_zone: str = "Europe/Madrid") -> Account:
    details = AccountDetails(display_name="Acme", currency_code="EUR", time_zone=time_zone, country_code="ES")
    return Account.open(AccountType.BUSINESS, details, BillingProfile(bill_cycle_day=1), "A-00000042", NOW)


def card(**overrides: object) -> CardDetails:
    values: dict[str, object] = {
        "provider": " stripe ",
        "provider_token": "pm_1NfakeTokenAbCd",
        "brand": "Visa",
        "last4": "4242",
        "expiry_month": 12,
        "expiry_year": 2030,
    }
    values.update(overrides)
    return CardDetails(**values)  # type: ignore[arg-type]


def sepa(**overrides: object) -> SepaDirectDebitDetails:
    values: dict[str, object] = {
        "iban": "es91 2100 0418 4502 0005 1332",
        "bic": "caixesbbxxx",
        "mandate_id": "MANDATE-2026/0001",
        "mandate_signature_date": date(2026, 3, 1),
        "account_holder": "Ana López",
    }
    values.update(overrides)
    return SepaDirectDebitDetails(**values)  # type: ignore[arg-type]


def refused_field(details: PaymentDetails | None, acc: Account | None = None) -> str:
    with pytest.raises(InvalidArgument) as refused:
        check_details(details, acc or account(), NOW)
    return refused.value.field


def methods(acc: Account | None = None) -> AccountPaymentMethods:
    return AccountPaymentMethods(acc or account(), [])


# Cards.


def test_a_card_is_normalised() -> None:
    checked = check_details(card(), account(), NOW)
    assert checked == CardDetails("stripe", "pm_1NfakeTokenAbCd", "visa", "4242", 12, 2030)


@pytest.mark.parametrize(
    ("overrides", "field_name"),
    [
        ({"provider": " "}, "payment_method.card.provider"),
        ({"provider": "p" * 101}, "payment_method.card.provider"),
        ({"provider_token": ""}, "payment_method.card.provider_token"),
        ({"provider_token": "tok with spaces"}, "payment_method.card.provider_token"),
        ({"provider_token": "t" * 501}, "payment_method.card.provider_token"),
        ({"provider_token": "**************AbCd"}, "payment_method.card.provider_token"),
        ({"brand": "b" * 51}, "payment_method.card.brand"),
        ({"last4": ""}, "payment_method.card.last4"),
        ({"last4": "424"}, "payment_method.card.last4"),
        ({"last4": "42424"}, "payment_method.card.last4"),
        ({"last4": "42a2"}, "payment_method.card.last4"),
        ({"last4": "4242".translate(FULL_WIDTH_DIGITS)}, "payment_method.card.last4"),
        ({"expiry_month": 0}, "payment_method.card.expiry_month"),
        ({"expiry_month": 13}, "payment_method.card.expiry_month"),
        ({"expiry_year": 0}, "payment_method.card.expiry_year"),
        ({"expiry_year": 2025}, "payment_method.card.expiry_year"),
        ({"expiry_year": 2200}, "payment_method.card.expiry_year"),
    ],
)
def test_bad_cards_are_refused_naming_the_field(overrides: dict[str, object], field_name: str) -> None:
    assert refused_field(card(**overrides)) == field_name


def test_a_card_expiring_this_month_is_valid_in_the_accounts_time_zone() -> None:
    # It is April in Madrid: a card expiring in March has expired there, not yet in UTC.
    check_details(card(expiry_month=4, expiry_year=2026), account(), NOW)
    assert refused_field(card(expiry_month=3, expiry_year=2026)) == "payment_method.card.expiry_year"
    check_details(card(expiry_month=3, expiry_year=2026), account("UTC"), NOW)


# SEPA direct debit.


def test_a_sepa_mandate_is_normalised() -> None:
    checked = check_details(sepa(), account(), NOW)
    assert checked == SepaDirectDebitDetails(IBAN, "MANDATE-2026/0001", date(2026, 3, 1), "CAIXESBBXXX", "Ana López")


def test_bic_is_optional() -> None:
    checked = check_details(sepa(bic=" "), account(), NOW)
    assert isinstance(checked, SepaDirectDebitDetails)
    assert checked.bic == ""


@pytest.mark.parametrize(
    ("overrides", "field_name"),
    [
        ({"iban": ""}, "payment_method.sepa_direct_debit.iban"),
        ({"iban": "ES9121000418450200051333"}, "payment_method.sepa_direct_debit.iban"),
        ({"iban": "ES91210004184502000513"}, "payment_method.sepa_direct_debit.iban"),
        ({"iban": "XX9121000418450200051332"}, "payment_method.sepa_direct_debit.iban"),
        ({"iban": "not an iban"}, "payment_method.sepa_direct_debit.iban"),
        ({"bic": "CAIXESB"}, "payment_method.sepa_direct_debit.bic"),
        ({"bic": "CAIXXXBBXXX"}, "payment_method.sepa_direct_debit.bic"),
        ({"mandate_id": " "}, "payment_method.sepa_direct_debit.mandate_id"),
        ({"mandate_id": "M" * 36}, "payment_method.sepa_direct_debit.mandate_id"),
        ({"mandate_id": "MANDATE_1"}, "payment_method.sepa_direct_debit.mandate_id"),
        ({"mandate_id": "MANDATO-ÑANDÚ"}, "payment_method.sepa_direct_debit.mandate_id"),
        ({"mandate_signature_date": None}, "payment_method.sepa_direct_debit.mandate_signature_date"),
        ({"mandate_signature_date": date(2026, 4, 2)}, "payment_method.sepa_direct_debit.mandate_signature_date"),
        ({"account_holder": "n" * 201}, "payment_method.sepa_direct_debit.account_holder"),
    ],
)
def test_bad_mandates_are_refused_naming_the_field(overrides: dict[str, object], field_name: str) -> None:
    assert refused_field(sepa(**overrides)) == field_name


def test_a_mandate_signed_today_in_the_accounts_zone_is_accepted() -> None:
    check_details(sepa(mandate_id="M" * 35, mandate_signature_date=date(2026, 4, 1)), account(), NOW)
    assert refused_field(sepa(mandate_signature_date=date(2026, 4, 1)), account("UTC")) == (
        "payment_method.sepa_direct_debit.mandate_signature_date"
    )


# Bank transfer, pay on invoice, none.


def test_a_bank_transfer_reference_defaults_to_the_account_number() -> None:
    assert check_details(BankTransferDetails(" "), account(), NOW) == BankTransferDetails("A-00000042")
    assert check_details(BankTransferDetails(" INV-7 "), account(), NOW) == BankTransferDetails("INV-7")
    assert refused_field(BankTransferDetails("r" * 141)) == "payment_method.bank_transfer.payment_reference"


def test_pay_on_invoice_needs_nothing_and_a_type_is_required() -> None:
    assert check_details(PayOnInvoiceDetails(), account(), NOW) == PayOnInvoiceDetails()
    assert refused_field(None) == "payment_method.details"


# The one default.


def test_the_first_method_becomes_the_default() -> None:
    book = methods()
    first = book.add(PayOnInvoiceDetails(), make_default=False, now=NOW)
    assert first.is_default and book.default is first
    assert [type(e) for e in book.events] == [PaymentMethodAdded, DefaultPaymentMethodChanged]
    changed = book.events[1]
    assert isinstance(changed, DefaultPaymentMethodChanged)
    assert changed.previous_payment_method_id is None
    assert book.events[0].payment_method.is_default  # type: ignore[attr-defined]


def test_later_methods_are_not_default_unless_asked() -> None:
    book = methods()
    first = book.add(PayOnInvoiceDetails(), False, NOW)
    book.events.clear()
    book.added.clear()  # as the repository's save leaves it
    second = book.add(card(), False, NOW)
    assert (first.is_default, second.is_default) == (True, False)
    assert [type(e) for e in book.events] == [PaymentMethodAdded]
    book.events.clear()
    third = book.add(sepa(), True, NOW)
    assert [m.is_default for m in book.methods] == [False, False, True]
    assert [type(e) for e in book.events] == [PaymentMethodAdded, DefaultPaymentMethodChanged]
    assert book.events[1].previous_payment_method_id == first.payment_method_id  # type: ignore[attr-defined]
    assert book.default is third
    # What the repository writes: the old default's row, and the new rows.
    assert [m.payment_method_id for m in book.changed] == [first.payment_method_id]
    assert [m.payment_method_id for m in book.added] == [second.payment_method_id, third.payment_method_id]


def test_set_default_moves_it_and_again_changes_nothing() -> None:
    book = methods()
    first = book.add(PayOnInvoiceDetails(), False, NOW)
    second = book.add(card(), False, NOW)
    book.events.clear()
    assert book.set_default(second.payment_method_id) is second
    assert (first.is_default, second.is_default) == (False, True)
    [event] = book.events
    assert isinstance(event, DefaultPaymentMethodChanged)
    assert (event.payment_method.payment_method_id, event.previous_payment_method_id) == (
        second.payment_method_id,
        first.payment_method_id,
    )
    book.events.clear()
    book.set_default(second.payment_method_id)
    assert book.events == []
    with pytest.raises(NotFound):
        book.set_default(uuid.uuid4())


def test_the_default_is_removed_only_when_it_is_the_last() -> None:
    book = methods()
    first = book.add(PayOnInvoiceDetails(), False, NOW)
    second = book.add(card(), False, NOW)
    with pytest.raises(FailedPrecondition) as refused:
        book.remove(first.payment_method_id, NOW)
    assert refused.value.reason == "DEFAULT_PAYMENT_METHOD"
    assert "set another default first" in refused.value.message
    assert first.remove_time is None and len(book.methods) == 2
    book.events.clear()
    book.remove(second.payment_method_id, NOW)
    assert second.remove_time == NOW
    assert book.events == [PaymentMethodRemoved(second.account_id, second.payment_method_id)]
    book.remove(first.payment_method_id, NOW)
    assert book.methods == [] and book.default is None
    with pytest.raises(NotFound):
        book.remove(first.payment_method_id, NOW)


def test_a_closed_account_gets_no_payment_method_changes() -> None:
    acc = account()
    book = methods(acc)
    method = book.add(PayOnInvoiceDetails(), False, NOW)
    acc.close("gone", StatusActor.MANUAL, "op", Decimal(0), False, [], NOW)
    for change in (
        lambda: book.add(card(), False, NOW),
        lambda: book.set_default(method.payment_method_id),
        lambda: book.remove(method.payment_method_id, NOW),
    ):
        with pytest.raises(FailedPrecondition) as refused:
            change()
        assert refused.value.reason == "ACCOUNT_CLOSED"


def test_an_invalid_method_adds_nothing() -> None:
    book = methods()
    with pytest.raises(InvalidArgument):
        book.add(sepa(iban="ES0000000000000000000000"), True, NOW)
    assert (book.methods, book.events, book.added) == ([], [], [])


# Masking.


def test_masks() -> None:
    assert mask_iban(IBAN) == "ES91****************1332"
    assert mask_iban(mask_iban(IBAN)) == mask_iban(IBAN)
    assert mask_token("pm_1NfakeTokenAbCd") == "**************AbCd"
    assert mask_token("abcd") == "****"


def test_reads_and_events_are_masked() -> None:
    book = methods()
    by_card = book.add(card(), False, NOW)
    by_sepa = book.add(sepa(), True, NOW)
    card_pb, sepa_pb = payment_method_to_pb(by_card), payment_method_to_pb(by_sepa)
    assert card_pb.card.provider_token == "**************AbCd"
    assert (card_pb.card.last4, card_pb.card.brand, card_pb.card.expiry_year) == ("4242", "visa", 2030)
    assert sepa_pb.sepa_direct_debit.iban == "ES91****************1332"
    assert sepa_pb.sepa_direct_debit.mandate_id == "MANDATE-2026/0001"
    assert sepa_pb.is_default and not card_pb.is_default
    # The stored method keeps the full values; only what leaves is masked.
    assert by_sepa.details.iban == IBAN  # type: ignore[union-attr]
    for event in book.events:
        _, message = encode(event)
        assert IBAN not in str(message) and "pm_1NfakeTokenAbCd" not in str(message)


def test_events_are_published_on_their_subjects() -> None:
    book = methods()
    first = book.add(sepa(), False, NOW)
    second = book.add(PayOnInvoiceDetails(), True, NOW)
    book.remove(first.payment_method_id, NOW)
    encoded = [encode(e) for e in book.events]
    assert [s for s, _ in encoded] == [
        "evolutivo.customer.v1.payment_method.added",
        "evolutivo.customer.v1.payment_method.default_changed",
        "evolutivo.customer.v1.payment_method.added",
        "evolutivo.customer.v1.payment_method.default_changed",
        "evolutivo.customer.v1.payment_method.removed",
    ]
    added = encoded[0][1]
    assert isinstance(added, events_pb2.PaymentMethodAdded)
    assert added.payment_method.sepa_direct_debit.iban == "ES91****************1332"
    first_default = encoded[1][1]
    assert isinstance(first_default, events_pb2.DefaultPaymentMethodChanged)
    assert first_default.previous_payment_method_id == ""
    moved = encoded[3][1]
    assert isinstance(moved, events_pb2.DefaultPaymentMethodChanged)
    assert (moved.payment_method.payment_method_id, moved.previous_payment_method_id) == (
        str(second.payment_method_id),
        str(first.payment_method_id),
    )
    removed = encoded[4][1]
    assert removed == events_pb2.PaymentMethodRemoved(
        account_id=str(first.account_id), payment_method_id=str(first.payment_method_id)
    )


# Erasure.


def test_erasure_keeps_what_finance_needs() -> None:
    book = methods()
    by_card = book.add(card(), False, NOW)
    by_sepa = book.add(sepa(), False, NOW)
    by_transfer = book.add(BankTransferDetails(""), False, NOW)
    for method in (by_card, by_sepa, by_transfer):
        assert method.erase() is True
        assert method.erase() is False
        assert method.erased
    assert by_card.details == CardDetails("stripe", "**************AbCd", "visa", "4242", 12, 2030)
    assert by_sepa.details == SepaDirectDebitDetails(
        "ES91****************1332", "MANDATE-2026/0001", date(2026, 3, 1), "CAIXESBBXXX", ERASED
    )
    assert by_transfer.details == BankTransferDetails("A-00000042")


# Protobuf translation.


def test_details_from_protobuf() -> None:
    pb = payment_method_pb2.PaymentMethod(
        sepa_direct_debit=payment_method_pb2.SepaDirectDebitDetails(
            iban=IBAN, mandate_id="M-1", mandate_signature_date=date_pb2.Date(year=2026, month=3, day=1)
        )
    )
    assert details_from_pb(pb) == SepaDirectDebitDetails(IBAN, "M-1", date(2026, 3, 1))
    no_date = payment_method_pb2.PaymentMethod(sepa_direct_debit=payment_method_pb2.SepaDirectDebitDetails(iban=IBAN))
    assert details_from_pb(no_date).mandate_signature_date is None  # type: ignore[union-attr]
    assert details_from_pb(payment_method_pb2.PaymentMethod()) is None
    on_invoice = payment_method_pb2.PaymentMethod(pay_on_invoice=payment_method_pb2.PayOnInvoiceDetails())
    assert details_from_pb(on_invoice) == PayOnInvoiceDetails()
    transfer = payment_method_pb2.PaymentMethod(bank_transfer=payment_method_pb2.BankTransferDetails())
    assert details_from_pb(transfer) == BankTransferDetails("")


def test_a_partial_signature_date_is_refused_naming_the_field() -> None:
    pb = payment_method_pb2.PaymentMethod(
        sepa_direct_debit=payment_method_pb2.SepaDirectDebitDetails(
            mandate_signature_date=date_pb2.Date(year=2026, month=3)
        )
    )
    with pytest.raises(InvalidArgument) as refused:
        details_from_pb(pb)
    assert refused.value.field == "payment_method.sepa_direct_debit.mandate_signature_date"


def test_every_type_translates_to_its_oneof() -> None:
    acc = account()
    for details, oneof in (
        (card(), "card"),
        (sepa(), "sepa_direct_debit"),
        (BankTransferDetails("R"), "bank_transfer"),
        (PayOnInvoiceDetails(), "pay_on_invoice"),
    ):
        method = PaymentMethod(uuid.uuid4(), acc.account_id, details, False, NOW)
        assert payment_method_to_pb(method).WhichOneof("details") == oneof
        assert method.type is PaymentMethodType(oneof)
        assert replace(method, erased=True).masked().details == details.masked()
