"""Bill documents and delivery, pure: the PDF of an issued bill (its number, lines, taxes, totals
and payment instructions, read back with pypdf; the same bill renders the same bytes), money
formatted exactly from Decimal, who a bill goes to, the delivery's states and backoff, and the
email message built for it."""

from __future__ import annotations

import email
import email.policy
import io
import uuid
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from types import SimpleNamespace
from typing import Any, cast

import pypdf
import pytest
from evolutivo.billing.v1 import document_pb2
from evolutivo.customer.v1 import account_pb2, contact_pb2
from evolutivo.customer.v1 import events_pb2 as customer_events
from evolutivo_billing.adapters import documents_proto, pdf
from evolutivo_billing.adapters.smtp import to_message
from evolutivo_billing.domain.bills import Bill, BillLine, BillNumber, BillStatus, BillTax, LineKey, Period
from evolutivo_billing.domain.delivery import BillDelivery, DeliveryAlreadySent, DeliveryState, Email, RetryPolicy
from evolutivo_billing.domain.delivery import message_id as make_message_id
from evolutivo_billing.domain.documents import (
    AccountContact,
    AccountDetails,
    ContactRole,
    Customer,
    DeliveryMethod,
    PostalAddress,
    Seller,
    document_view,
    email_subject,
    email_text,
    format_money,
    format_period,
    format_rate,
)
from evolutivo_billing.entrypoints.consumers import subscriptions
from evolutivo_runtime.timestamps import to_timestamp
from google.type import postal_address_pb2

ISSUED_AT = datetime(2031, 6, 14, 22, 5, tzinfo=UTC)
SELLER = Seller(
    name="Evolutivo Telecom S.L.",
    address_lines=("Calle Mayor 1", "28013 Madrid", "ES"),
    tax_id="ESB12345678",
    email="billing@evolutivo.test",
    payment_instructions=("IBAN ES91 2100 0418 4502 0005 1332", "BIC CAIXESBBXXX"),
)


def line(number: int, offer: str, charge: str, tax: str, quantity: str, amount: str) -> BillLine:
    key = LineKey(date(2031, 5, 15), date(2031, 6, 15), offer, charge, tax)
    return BillLine(number, key, Decimal(quantity), Decimal(amount), (), 1)


def issued_bill(number: str = "F-2031-000042") -> Bill:
    lines = [
        line(1, "api_metered", "api_calls", "standard", "150000", "1234.50"),
        line(2, "api_metered", "support_fee", "reduced", "1", "9.99"),
    ]
    taxes = [
        BillTax("reduced", Decimal("0.10"), Decimal("9.99"), Decimal("1.00")),
        BillTax("standard", Decimal("0.21"), Decimal("1234.50"), Decimal("259.25")),
    ]
    bill = Bill(
        bill_id=uuid.UUID("6f1c7a57-3a5e-4d4b-9d77-0f3b1f0e2a11"),
        bill_unit_id=uuid.uuid4(),
        account_id=uuid.UUID("0b8a3c1e-5f1d-4e36-8f8e-8f3e1d2c4b5a"),
        bill_cycle_id=uuid.uuid4(),
        currency_code="EUR",
        period=Period(date(2031, 5, 15), date(2031, 6, 15)),
        issue_date=date(2031, 6, 15),
        due_date=date(2031, 6, 29),
        lines=lines,
        taxes=taxes,
        subtotal=Decimal("1244.49"),
        tax_total=Decimal("260.25"),
        total=Decimal("1504.74"),
        create_time=ISSUED_AT,
    )
    bill.status = BillStatus.ISSUED
    bill.number = BillNumber(number, number.rsplit("-", 1)[0], int(number.rsplit("-", 1)[1]))
    bill.issue_time = ISSUED_AT
    return bill


def customer(account_id: uuid.UUID, *contacts: AccountContact, erased: bool = False) -> Customer:
    details = AccountDetails(
        account_id,
        ISSUED_AT - timedelta(days=30),
        account_number="A-00001042",
        display_name="Facturas Ibéricas SL",
        tax_id="ESB87654321",
        personal_data_erased=erased,
    )
    return Customer(account_id, details, contacts)


def contact(
    account_id: uuid.UUID,
    role: ContactRole,
    email_address: str | None = None,
    address: PostalAddress | None = None,
    removed: bool = False,
    minutes: int = 0,
) -> AccountContact:
    return AccountContact(
        uuid.uuid4(),
        account_id,
        role,
        ISSUED_AT - timedelta(days=10, minutes=-minutes),
        name="Accounts payable",
        email=email_address,
        postal_address=address,
        removed=removed,
    )


MADRID_OFFICE = PostalAddress(address_lines=("Gran Vía 2",), postal_code="28001", locality="Madrid", region_code="ES")


def pdf_text(content: bytes) -> str:
    reader = pypdf.PdfReader(io.BytesIO(content))
    return "\n".join(page.extract_text() for page in reader.pages)


# The PDF.


def test_the_pdf_shows_seller_customer_number_dates_lines_taxes_totals_and_how_to_pay() -> None:
    bill = issued_bill()
    billing = contact(bill.account_id, ContactRole.BILLING, address=MADRID_OFFICE)
    view = document_view(bill, SELLER, customer(bill.account_id, billing))
    content = pdf.render(view)

    assert content.startswith(b"%PDF-")
    text = pdf_text(content)
    for expected in (
        "Evolutivo Telecom S.L.",
        "Tax id ESB12345678",
        "Facturas Ibéricas SL",
        "Account A-00001042",
        "Gran Vía 2",
        "28001 Madrid",
        "Number: F-2031-000042",
        "Issue date: 2031-06-15",
        "Due date: 2031-06-29",
        "Period: 2031-05-15 to 2031-06-14",
        "api_metered / api_calls",
        "150000",
        "1,234.50 EUR",
        "api_metered / support_fee",
        "9.99 EUR",
        "21%",
        "259.25 EUR",
        "10%",
        "1.00 EUR",
        "Subtotal",
        "1,244.49 EUR",
        "260.25 EUR",
        "Total",
        "1,504.74 EUR",
        "Please pay 1,504.74 EUR by 2031-06-29.",
        "Payment reference: F-2031-000042",
        "IBAN ES91 2100 0418 4502 0005 1332",
    ):
        assert expected in text, f"{expected!r} is on the document"
    assert view.file_name == "F-2031-000042.pdf"


def test_the_same_bill_renders_the_same_bytes_and_another_bill_other_bytes() -> None:
    bill = issued_bill()
    who = customer(bill.account_id)
    first = pdf.render(document_view(bill, SELLER, who))
    assert pdf.render(document_view(bill, SELLER, who)) == first
    assert pdf.render(document_view(issued_bill("F-2031-000043"), SELLER, who)) != first


def test_a_bill_of_many_lines_runs_over_pages_with_every_line() -> None:
    bill = issued_bill()
    bill.lines = [line(n, "api_metered", f"charge_{n:03d}", "standard", "1", "1.00") for n in range(1, 121)]
    text = pdf_text(pdf.render(document_view(bill, SELLER, customer(bill.account_id))))
    assert "page 1/" in text and "page 3/" in text
    assert all(f"api_metered / charge_{n:03d}" in text for n in range(1, 121))


def test_characters_the_core_fonts_lack_are_replaced_not_fatal() -> None:
    bill = issued_bill()
    details = AccountDetails(bill.account_id, ISSUED_AT, display_name="Łódź Ωmega 東京 €")
    text = pdf_text(pdf.render(document_view(bill, SELLER, Customer(bill.account_id, details))))
    assert "Lódz ?mega ?? €" in text
    # Windows-1252 has the en dash and the curly quotes.
    assert pdf.printable("Crème brûlée \u2013 \u201cquoted\u201d") == "Crème brûlée \u2013 \u201cquoted\u201d"


def test_the_statement_amounts_of_a_bill_are_shown_when_it_has_them() -> None:
    bill = issued_bill()
    # The parts of billing that fill the statement may add more; the document shows what the bill has.
    cast(Any, bill).statement = SimpleNamespace(
        previous_balance=Decimal("20.00"), payments_received=Decimal("15.50"), credits=Decimal(0)
    )
    text = pdf_text(pdf.render(document_view(bill, SELLER, customer(bill.account_id))))
    assert "Previous balance" in text and "20.00 EUR" in text
    assert "Payments received since the last bill" in text and "15.50 EUR" in text
    assert "Credit notes since the last bill" not in text, "a zero statement amount is left out"


def test_a_bill_never_issued_has_no_document() -> None:
    bill = issued_bill()
    bill.number, bill.issue_time, bill.status = None, None, BillStatus.DRAFT
    with pytest.raises(ValueError, match="never issued"):
        document_view(bill, SELLER, customer(bill.account_id))


# Formatting.


@pytest.mark.parametrize(
    ("amount", "currency", "shown"),
    [
        (Decimal("1504.74"), "EUR", "1,504.74 EUR"),
        (Decimal("0"), "EUR", "0.00 EUR"),
        (Decimal("-12.5"), "EUR", "-12.50 EUR"),
        (Decimal("1234567890123456789.01"), "USD", "1,234,567,890,123,456,789.01 USD"),
        (Decimal("0.10") + Decimal("0.20"), "EUR", "0.30 EUR"),
        (Decimal("1500"), "JPY", "1,500 JPY"),
        (Decimal("1.005"), "BHD", "1.005 BHD"),
        (Decimal("2.000000000"), "EUR", "2.00 EUR"),
    ],
)
def test_money_is_formatted_exactly_at_the_minor_unit(amount: Decimal, currency: str, shown: str) -> None:
    assert format_money(amount, currency) == shown


def test_rates_and_periods_read_as_people_read_them() -> None:
    assert (format_rate(Decimal("0.21")), format_rate(Decimal("0.055")), format_rate(Decimal(0))) == (
        "21%",
        "5.5%",
        "0%",
    )
    assert format_period(date(2031, 5, 15), date(2031, 6, 15)) == "2031-05-15 to 2031-06-14", "the end is exclusive"
    assert format_period(date(2031, 5, 15), date(2031, 5, 16)) == "2031-05-15"


# Who a bill goes to.


def test_bills_go_to_the_billing_contacts_else_the_primary_ones() -> None:
    account = uuid.uuid4()
    primary = contact(account, ContactRole.PRIMARY, "boss@example.com")
    billing = contact(account, ContactRole.BILLING, "AP@Example.com ")
    billing_too = contact(account, ContactRole.BILLING, "ap@example.com", minutes=5)
    other = contact(account, ContactRole.BILLING, "invoices@example.com", minutes=9)
    technical = contact(account, ContactRole.TECHNICAL, "ops@example.com")
    assert customer(account, primary, billing, billing_too, other, technical).recipients() == [
        "ap@example.com",
        "invoices@example.com",
    ]
    assert customer(account, primary, technical).recipients() == ["boss@example.com"]
    removed = contact(account, ContactRole.BILLING, "gone@example.com", removed=True)
    assert customer(account, primary, removed).recipients() == ["boss@example.com"], "removed contacts get nothing"
    postal_only = contact(account, ContactRole.BILLING, address=MADRID_OFFICE)
    assert customer(account, primary, postal_only).recipients() == ["boss@example.com"]
    assert customer(account, technical).recipients() == []


def test_an_erased_account_or_an_erased_address_gets_no_email() -> None:
    account = uuid.uuid4()
    billing = contact(account, ContactRole.BILLING, "ap@example.com", address=MADRID_OFFICE)
    assert customer(account, billing, erased=True).recipients() == []
    assert customer(account, billing, erased=True).billing_address() is None
    assert customer(account, contact(account, ContactRole.BILLING, "[erased]")).recipients() == []


def test_the_billing_address_is_a_billing_contacts_else_a_primary_ones() -> None:
    account = uuid.uuid4()
    home = PostalAddress(address_lines=("Home 1",), region_code="ES")
    billing_email = contact(account, ContactRole.BILLING, "ap@example.com")
    primary_postal = contact(account, ContactRole.PRIMARY, address=home)
    billing_postal = contact(account, ContactRole.BILLING, address=MADRID_OFFICE)
    assert customer(account, billing_email, primary_postal).billing_address() == home
    assert customer(account, billing_email, primary_postal, billing_postal).billing_address() == MADRID_OFFICE


def test_the_delivery_method_defaults_to_email() -> None:
    account = uuid.uuid4()
    assert Customer(account).delivery_method is DeliveryMethod.EMAIL


# The delivery.


def test_failed_attempts_back_off_doubling_up_to_the_cap_then_fail() -> None:
    policy = RetryPolicy(max_attempts=4, first_delay=timedelta(minutes=1), max_delay=timedelta(minutes=3))
    now = ISSUED_AT
    delivery = BillDelivery.scheduled(uuid.uuid4(), uuid.uuid4(), now)
    waits = []
    for _ in range(3):
        delivery = delivery.failed_attempt(now, "SMTPServerDisconnected: gone", policy)
        assert delivery.state is DeliveryState.PENDING and delivery.next_attempt_time is not None
        waits.append(delivery.next_attempt_time - now)
        assert not delivery.is_due(now) and delivery.is_due(delivery.next_attempt_time)
        now = delivery.next_attempt_time
    assert waits == [timedelta(minutes=1), timedelta(minutes=2), timedelta(minutes=3)]
    delivery = delivery.failed_attempt(now, "SMTPServerDisconnected: gone again", policy)
    assert (delivery.state, delivery.attempts, delivery.next_attempt_time, delivery.last_error) == (
        DeliveryState.FAILED,
        4,
        None,
        "SMTPServerDisconnected: gone again",
    )
    assert RetryPolicy().delay(10_000) == timedelta(hours=1), "a huge attempt count stays at the cap"


def test_a_retry_makes_a_delivery_due_again_except_a_sent_one() -> None:
    policy = RetryPolicy(max_attempts=1)
    failed = BillDelivery.scheduled(uuid.uuid4(), uuid.uuid4(), ISSUED_AT).failed_attempt(ISSUED_AT, "no", policy)
    later = ISSUED_AT + timedelta(days=1)
    retried = failed.retry(later)
    assert (retried.state, retried.attempts, retried.next_attempt_time) == (DeliveryState.PENDING, 0, later)
    assert failed.no_recipient(later).retry(later).state is DeliveryState.PENDING
    sent = retried.sent(later, ("ap@example.com",), "<bill-x@example.com>")
    assert (sent.state, sent.sent_time, sent.attempts, sent.next_attempt_time) == (DeliveryState.SENT, later, 1, None)
    with pytest.raises(DeliveryAlreadySent):
        sent.retry(later)


def test_the_message_id_is_the_bills_whatever_the_attempt() -> None:
    bill_id = uuid.UUID("6f1c7a57-3a5e-4d4b-9d77-0f3b1f0e2a11")
    assert make_message_id(bill_id, "billing@evolutivo.test") == f"<bill-{bill_id}@evolutivo.test>"
    assert make_message_id(bill_id, "billing@evolutivo.test") == make_message_id(bill_id, "billing@evolutivo.test")


def test_the_email_carries_the_pdf_the_recipients_and_the_message_id() -> None:
    bill = issued_bill()
    view = document_view(bill, SELLER, customer(bill.account_id))
    content = pdf.render(view)
    message = to_message(
        Email(
            sender="billing@evolutivo.test",
            recipients=("ap@example.com", "cfo@example.com"),
            subject=email_subject(view),
            text=email_text(view),
            message_id=make_message_id(bill.bill_id, "billing@evolutivo.test"),
            attachment=content,
            attachment_name=view.file_name,
            date=ISSUED_AT,
        )
    )
    parsed = email.message_from_bytes(message.as_bytes(), policy=email.policy.default)
    assert parsed["To"] == "ap@example.com, cfo@example.com"
    assert parsed["Subject"] == "Invoice F-2031-000042 from Evolutivo Telecom S.L."
    assert parsed["Message-ID"] == f"<bill-{bill.bill_id}@evolutivo.test>"
    assert parsed["Date"] == "Sat, 14 Jun 2031 22:05:00 +0000"
    body = parsed.get_body(("plain",))
    assert body is not None and "Amount due: 1,504.74 EUR, by 2031-06-29." in body.get_content()
    (attachment,) = list(parsed.iter_attachments())
    assert (attachment.get_content_type(), attachment.get_filename()) == ("application/pdf", "F-2031-000042.pdf")
    assert attachment.get_content() == content


def test_every_delivery_state_is_one_the_contract_names() -> None:
    named = {
        document_pb2.BillDeliveryState.Name(v).removeprefix("BILL_DELIVERY_STATE_").lower()
        for v in document_pb2.BillDeliveryState.values()
        if v
    }
    assert {s.value for s in DeliveryState} == named


def test_billing_follows_customers_account_contact_and_erasure_events() -> None:
    (customer_subscription,) = [s for s in subscriptions() if s.stream == "EVOLUTIVO_CUSTOMER"]
    assert customer_subscription.durable == "billing"
    for subject, event_type in (
        ("evolutivo.customer.v1.account.created", customer_events.AccountCreated),
        ("evolutivo.customer.v1.account.updated", customer_events.AccountUpdated),
        ("evolutivo.customer.v1.account.billing_profile_changed", customer_events.BillingProfileChanged),
        ("evolutivo.customer.v1.contact.changed", customer_events.ContactChanged),
        ("evolutivo.customer.v1.account.personal_data_erased", customer_events.PersonalDataErased),
    ):
        assert subject in customer_subscription.subjects
        assert customer_subscription.handlers[event_type.DESCRIPTOR.full_name].message_type is event_type


def test_customers_contacts_and_accounts_translate_into_what_billing_keeps() -> None:
    now = ISSUED_AT
    account = account_pb2.Account(
        account_id=str(uuid.uuid4()),
        account_number="A-00001042",
        display_name="Facturas Ibéricas SL",
        tax_id="ESB87654321",
        billing_profile=account_pb2.BillingProfile(
            delivery=account_pb2.DeliveryPreferences(method=account_pb2.DELIVERY_METHOD_PORTAL)
        ),
    )
    details = documents_proto.account_details_from_pb(account, now)
    assert (details.update_time, details.delivery_method, details.display_name) == (
        now,
        DeliveryMethod.PORTAL,
        "Facturas Ibéricas SL",
    )
    unspecified = account_pb2.Account(account_id=account.account_id)
    assert documents_proto.account_details_from_pb(unspecified, now).delivery_method is DeliveryMethod.EMAIL
    postal = contact_pb2.Contact(
        contact_id=str(uuid.uuid4()),
        account_id=account.account_id,
        role=contact_pb2.CONTACT_ROLE_BILLING,
        postal_address=postal_address_pb2.PostalAddress(
            region_code="ES", postal_code="28001", locality="Madrid", address_lines=["Gran Vía 2"]
        ),
        update_time=to_timestamp(now + timedelta(hours=1)),
    )
    kept = documents_proto.contact_from_pb(postal, removed=False, fallback_time=now)
    assert (kept.role, kept.email, kept.update_time) == (ContactRole.BILLING, None, now + timedelta(hours=1))
    assert kept.postal_address is not None and kept.postal_address.lines() == ["Gran Vía 2", "28001 Madrid", "ES"]
