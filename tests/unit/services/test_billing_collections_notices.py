"""Collections notices and contact attempts, pure: what a notice keeps (its bills, the case's late
fees, its id from the action), who it goes to (collections, then billing, then primary contacts),
what a reminder email and a dunning letter say (template wordings, exact amounts, how to pay),
the letter's PDF (its text, the same bytes twice), an email without an attachment, the notice
delivery's states, the outcome a case's action gets, and a contact attempt's rules."""

from __future__ import annotations

import io
import uuid
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from zoneinfo import ZoneInfo

import pypdf
import pytest
from evolutivo_billing.adapters import pdf
from evolutivo_billing.adapters.smtp import to_message
from evolutivo_billing.domain.collections import (
    ActionState,
    ActionType,
    Case,
    ContactAttemptRecorded,
    ContactChannel,
    ContactOutcome,
    EntryCriteria,
    LateFeeRule,
    OverdueDebt,
    Scenario,
    Step,
)
from evolutivo_billing.domain.delivery import DeliveryState, Email, NoticeOnlyState, RetryPolicy, notice_message_id
from evolutivo_billing.domain.documents import (
    AccountContact,
    AccountDetails,
    ContactRole,
    Customer,
    PostalAddress,
    Seller,
)
from evolutivo_billing.domain.notices import (
    NoticeBill,
    email_subject,
    email_text,
    letter_view,
    notice_for,
    opening,
    recipients,
)
from evolutivo_billing.service_layer.notices import outcome_text
from evolutivo_runtime.errors import InvalidArgument

MADRID = "Europe/Madrid"
DUE = date(2031, 5, 20)
SELLER = Seller(
    name="Evolutivo Telecom S.L.",
    address_lines=("Calle Mayor 1", "28013 Madrid"),
    payment_instructions=("IBAN ES91 2100 0418 4502 0005 1332", "BIC CAIXESBBXXX"),
)


def local(day: date, hour: int = 9) -> datetime:
    return datetime(day.year, day.month, day.day, hour, tzinfo=ZoneInfo(MADRID)).astimezone(UTC)


def steps(template: str = "") -> tuple[Step, ...]:
    return (
        Step(3, ActionType.REMINDER_EMAIL, template=template),
        Step(10, ActionType.LATE_FEE, late_fee=LateFeeRule(fixed_amounts={"EUR": Decimal("5.00")})),
        Step(15, ActionType.DUNNING_LETTER, template="final"),
        Step(20, ActionType.SUSPEND),
    )


def open_case(template: str = "") -> tuple[Case, OverdueDebt, tuple[NoticeBill, ...]]:
    now = datetime(2031, 1, 1, tzinfo=UTC)
    scenario = Scenario(uuid.uuid4(), "s", "", 0, EntryCriteria(), steps(template), now, now)
    first, second = uuid.uuid4(), uuid.uuid4()
    debt = OverdueDebt(uuid.uuid4(), uuid.uuid4(), "EUR", MADRID, Decimal("1234.50"), DUE, (first, second))
    bills = (
        NoticeBill(
            second, "F-2031-000007", date(2031, 6, 15), date(2031, 6, 20), Decimal("1000.00"), Decimal("1000.00")
        ),
        NoticeBill(first, "F-2031-000002", date(2031, 5, 15), DUE, Decimal("300.00"), Decimal("234.50")),
    )
    return Case.open(scenario, debt, local(DUE + timedelta(days=1))), debt, bills


def customer(account_id: uuid.UUID, *contacts: tuple[ContactRole, str | None], erased: bool = False) -> Customer:
    at = datetime(2031, 1, 1, tzinfo=UTC)
    return Customer(
        account_id,
        AccountDetails(account_id, at, account_number="A-0042", display_name="Cobros SL", personal_data_erased=erased),
        tuple(
            AccountContact(
                uuid.uuid4(),
                account_id,
                role,
                at + timedelta(seconds=i),
                email=email,
                postal_address=PostalAddress(address_lines=("Gran Via 2",), postal_code="28013", locality="Madrid")
                if role is ContactRole.COLLECTIONS
                else None,
            )
            for i, (role, email) in enumerate(contacts)
        ),
    )


# -- the notice ------------------------------------------------------------------------------------------


def test_a_notice_keeps_its_bills_the_cases_late_fees_and_the_actions_request_id() -> None:
    case, debt, bills = open_case()
    reminder, fee, letter, _ = case.actions
    day3 = local(DUE + timedelta(days=3))
    notice = notice_for(case, reminder, debt, bills, day3)
    assert (notice.notice_id, notice.kind, notice.late_fees, notice.days_past_due) == (
        reminder.request_id,
        ActionType.REMINDER_EMAIL,
        Decimal(0),
        3,
    )
    # Oldest due first, whatever order the bills came in.
    assert [b.bill_number for b in notice.bills] == ["F-2031-000002", "F-2031-000007"]
    assert notice.delivery.state is DeliveryState.PENDING and notice.delivery.is_due(day3)

    # A late fee done (not one scheduled, skipped or failed) shows on later notices.
    case.finish(reminder, ActionState.DONE, "reminder email queued", day3)
    day10 = local(DUE + timedelta(days=10))
    case.start(fee, day10, timedelta(minutes=2))
    fee.amount = Decimal("5.00")
    case.finish(fee, ActionState.DONE, "late fee posted", day10, fee.claim_token)
    later = notice_for(case, letter, debt, bills, local(DUE + timedelta(days=15)))
    assert (later.kind, later.late_fees, later.template) == (ActionType.DUNNING_LETTER, Decimal("5.00"), "final")
    with pytest.raises(ValueError):
        notice_for(case, case.actions[3], debt, bills, day10)


def test_notices_go_to_collections_contacts_then_billing_then_primary_and_to_nobody_once_erased() -> None:
    account = uuid.uuid4()
    everyone = customer(
        account,
        (ContactRole.PRIMARY, "boss@cobros.test"),
        (ContactRole.BILLING, "ap@cobros.test"),
        (ContactRole.COLLECTIONS, "Deudas@Cobros.test"),
        (ContactRole.COLLECTIONS, "not an address"),
    )
    assert recipients(everyone) == ("deudas@cobros.test",)
    assert recipients(
        customer(account, (ContactRole.PRIMARY, "boss@cobros.test"), (ContactRole.COLLECTIONS, None))
    ) == ("boss@cobros.test",)
    assert recipients(
        customer(account, (ContactRole.BILLING, "ap@cobros.test"), (ContactRole.PRIMARY, "b@c.test"))
    ) == ("ap@cobros.test",)
    assert recipients(customer(account, (ContactRole.COLLECTIONS, "d@cobros.test"), erased=True)) == ()
    # Bills keep going to billing, then primary contacts.
    assert everyone.recipients() == ["ap@cobros.test"]


# -- what it says -----------------------------------------------------------------------------------------


def test_a_reminder_email_lists_the_overdue_bills_exactly_with_how_to_pay() -> None:
    case, debt, bills = open_case("gentle")
    notice = notice_for(case, case.actions[0], debt, bills, local(DUE + timedelta(days=3)))
    who = customer(case.account_id, (ContactRole.COLLECTIONS, "d@cobros.test"))
    view = letter_view(notice, SELLER, who)
    text = email_text(view)
    assert text.startswith("Dear Cobros SL,\n")
    assert opening("gentle") in text
    assert "Invoice F-2031-000002, due 2031-05-20 (3 days ago): 234.50 EUR unpaid of 300.00 EUR" in text
    assert "Overdue amount: 1,234.50 EUR, 3 days past due." in text
    assert "IBAN ES91 2100 0418 4502 0005 1332" in text and "Reference: A-0042" in text
    assert "attached" not in text and "Late fees" not in text
    assert email_subject(view) == "Payment reminder: 1,234.50 EUR overdue from Evolutivo Telecom S.L."


def test_template_codes_pick_the_wording_and_unknown_ones_get_the_default() -> None:
    assert opening("") == opening("no-such-template") == opening("DEFAULT")
    assert len({opening(""), opening("gentle"), opening("firm"), opening("final")}) == 4
    assert opening(" Final ") == opening("final")


def test_a_dunning_letter_renders_its_bills_late_fees_and_payment_instructions_to_the_same_pdf() -> None:
    case, debt, bills = open_case()
    letter = case.actions[2]
    notice = notice_for(case, letter, debt, bills, local(DUE + timedelta(days=15)))
    notice = type(notice)(**{**notice.__dict__, "late_fees": Decimal("5.00")})
    who = customer(case.account_id, (ContactRole.COLLECTIONS, "d@cobros.test"))
    view = letter_view(notice, SELLER, who)
    assert view.file_name == "dunning-letter-A-0042-2031-06-04.pdf"
    assert "Gran Via 2" in view.customer_lines
    assert view.totals == (("Overdue amount", "1,234.50 EUR"), ("Late fees charged", "5.00 EUR"))
    assert "Please find attached our letter of 2031-06-04" in email_text(view)
    assert email_subject(view).startswith("Dunning letter: 1,234.50 EUR overdue")

    content = pdf.render_letter(view)
    assert content.startswith(b"%PDF")
    assert pdf.render_letter(view) == content, "the same notice renders the same bytes"
    reader = pypdf.PdfReader(io.BytesIO(content))
    text = " ".join(" ".join(page.extract_text().split()) for page in reader.pages)
    for expected in (
        "DUNNING LETTER",
        "Evolutivo Telecom S.L.",
        "Cobros SL",
        "F-2031-000002",
        "F-2031-000007",
        "234.50 EUR",
        "1,000.00 EUR",
        "1,234.50 EUR",
        "Late fees charged",
        "5.00 EUR",
        "IBAN ES91 2100 0418 4502 0005 1332",
        "Reference: A-0042",
        opening("final")[:40],
    ):
        assert expected in text, expected
    assert reader.metadata is not None and reader.metadata.title == "Dunning letter"


def test_a_reminders_email_has_no_attachment_and_a_notice_message_id() -> None:
    mid = notice_message_id(uuid.UUID(int=7), "billing@evolutivo.test")
    assert mid == "<notice-00000000-0000-0000-0000-000000000007@evolutivo.test>"
    message = to_message(Email("billing@evolutivo.test", ("d@cobros.test",), "Payment reminder", "Pay.\n", mid))
    assert message["Message-ID"] == mid
    assert not message.is_multipart() and list(message.iter_attachments()) == []
    assert message.get_content() == "Pay.\n"


# -- the delivery and the action's outcome ----------------------------------------------------------------


def test_a_notice_delivery_retries_fails_for_good_or_is_cancelled_and_the_action_says_so() -> None:
    case, debt, bills = open_case()
    now = local(DUE + timedelta(days=3))
    notice = notice_for(case, case.actions[0], debt, bills, now)
    policy = RetryPolicy(max_attempts=2, first_delay=timedelta(minutes=1), max_delay=timedelta(minutes=5))
    once = notice.delivery.failed_attempt(now, "SMTPServerDisconnected: gone", policy, ("d@cobros.test",), "<m>")
    assert (once.state, once.next_attempt_time, once.attempts) == (DeliveryState.PENDING, now + timedelta(minutes=1), 1)
    twice = once.failed_attempt(now + timedelta(minutes=1), "SMTPServerDisconnected: gone", policy)
    assert (twice.state, twice.next_attempt_time, twice.message_id) == (DeliveryState.FAILED, None, "<m>")
    failed = type(notice)(**{**notice.__dict__, "delivery": twice})
    assert outcome_text(failed, twice) == "reminder email not sent after 2 attempts: SMTPServerDisconnected: gone"

    sent = notice.delivery.sent(now, ("d@cobros.test", "e@cobros.test"), "<m>")
    assert outcome_text(notice, sent) == "reminder email sent to d@cobros.test, e@cobros.test"
    nobody = notice.delivery.no_recipient(now, "nobody")
    assert nobody.state is DeliveryState.NO_RECIPIENT and "not sent" in outcome_text(notice, nobody)
    cancelled = notice.delivery.cancelled(now, "not sent: its case closed (paid) before it went out")
    assert (cancelled.state, cancelled.next_attempt_time, cancelled.is_due(now)) == (
        NoticeOnlyState.CANCELLED,
        None,
        False,
    )
    assert outcome_text(notice, cancelled) == "reminder email not sent: its case closed (paid) before it went out"

    reminder = case.actions[0]
    case.finish(reminder, ActionState.DONE, "reminder email queued", now, details={"notice_id": "n"})
    case.record_notice_outcome(0, outcome_text(notice, sent), {"delivery": {"state": "sent"}})
    assert (reminder.state, reminder.outcome) == (
        ActionState.DONE,
        "reminder email sent to d@cobros.test, e@cobros.test",
    )
    assert reminder.details == {"notice_id": "n", "delivery": {"state": "sent"}}
    with pytest.raises(ValueError):
        case.record_notice_outcome(1, "late fee", {})


# -- contact attempts ---------------------------------------------------------------------------------------


def test_a_contact_attempt_is_recorded_with_its_rules() -> None:
    case, _, _ = open_case()
    now = local(DUE + timedelta(days=4))
    earlier = now - timedelta(hours=2)
    attempt = case.record_contact(
        ContactChannel.PHONE, ContactOutcome.NO_ANSWER, "rang twice", "agent-7", earlier, now, uuid.uuid4()
    )
    assert (attempt.contact_time, attempt.record_time, attempt.case_id, attempt.account_id) == (
        earlier,
        now,
        case.case_id,
        case.account_id,
    )
    assert isinstance(case.events[-1], ContactAttemptRecorded) and case.events[-1].attempt == attempt
    assert (
        case.record_contact(
            ContactChannel.EMAIL, ContactOutcome.PROMISED, "", "a", None, now, uuid.uuid4()
        ).contact_time
        == now
    )

    for contact_time, actor, note, field in (
        (now + timedelta(seconds=1), "agent-7", "", "attempt.contact_time"),
        (case.open_time - timedelta(seconds=1), "agent-7", "", "attempt.contact_time"),
        (None, " ", "", "attempt.actor"),
        (None, "agent-7", "x" * 2001, "attempt.note"),
    ):
        with pytest.raises(InvalidArgument) as caught:
            case.record_contact(
                ContactChannel.PHONE, ContactOutcome.OTHER, note, actor, contact_time, now, uuid.uuid4()
            )
        assert caught.value.field == field
