"""Collections notices: the payment reminder (an email) and the dunning letter (a PDF emailed as
an attachment) a case's REMINDER_EMAIL and DUNNING_LETTER actions make, what they say, and who
they go to. Plain Python: no protobuf, no SQL, no PDF library. Rules in docs/collections.md,
"Notices".

- A notice is made once per action, in the transaction that runs the action; its id is the
  action's request id (the CollectionsNoticeRequested event's notice_id). It keeps what it says as
  it stood then (the overdue bills, the late fees the case posted), so every rendering and every
  copy of its email says the same.
- It goes to the account's COLLECTIONS contacts with an email address, else its BILLING ones,
  else its PRIMARY ones; nobody once customer erased the account's personal data.
- The step's template code picks the wording ("gentle", "firm", "final"); any other code, or
  none, gets the default wording.
"""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal
from zoneinfo import ZoneInfo

from evolutivo_billing.domain.collections import Action, ActionState, ActionType, Case, OverdueDebt
from evolutivo_billing.domain.delivery import NoticeDelivery
from evolutivo_billing.domain.documents import COLLECTIONS_ROLES, Customer, Seller, format_date, format_money

NOTICE_TYPES = frozenset({ActionType.REMINDER_EMAIL, ActionType.DUNNING_LETTER})

# The opening paragraph per template code; "" is the default wording.
_OPENINGS = {
    "": "According to our records, the invoices below are past their due date and have not been paid in full.",
    "gentle": (
        "This is a friendly reminder that the invoices below are past their due date. Perhaps they"
        " slipped through: we would be grateful if you could settle them."
    ),
    "firm": (
        "Despite our earlier reminders, the invoices below remain unpaid past their due date. Please"
        " settle them without further delay."
    ),
    "final": (
        "This is our final notice. The invoices below remain unpaid past their due date. Unless they"
        " are paid, we will take further steps, which may include suspending your services and"
        " referring the debt to a collection agency."
    ),
}


def opening(template: str) -> str:
    """The wording of a template code; an unknown code gets the default one."""
    return _OPENINGS.get(template.strip().lower(), _OPENINGS[""])


@dataclass(frozen=True)
class NoticeBill:
    """An overdue bill as the notice lists it."""

    bill_id: uuid.UUID
    bill_number: str
    issue_date: date
    due_date: date
    total: Decimal
    open_amount: Decimal


@dataclass(frozen=True)
class Notice:
    notice_id: uuid.UUID
    case_id: uuid.UUID
    action_sequence: int
    account_id: uuid.UUID
    kind: ActionType
    template: str
    currency_code: str
    time_zone: str
    overdue_amount: Decimal
    days_past_due: int
    bills: tuple[NoticeBill, ...]
    # The late fees the case had posted (DONE) when the notice was made.
    late_fees: Decimal
    create_time: datetime
    delivery: NoticeDelivery

    @property
    def is_letter(self) -> bool:
        return self.kind is ActionType.DUNNING_LETTER

    @property
    def local_date(self) -> date:
        """The notice's date in the account's time zone."""
        return self.create_time.astimezone(ZoneInfo(self.time_zone)).date()


def notice_for(case: Case, action: Action, debt: OverdueDebt, bills: tuple[NoticeBill, ...], now: datetime) -> Notice:
    """The notice an action makes, PENDING delivery due now. `bills` are the debt's bills."""
    if action.action_type not in NOTICE_TYPES:
        raise ValueError(f"a {action.action_type.value} action makes no notice")
    late_fees = sum(
        (
            a.amount
            for a in case.actions
            if a.action_type is ActionType.LATE_FEE and a.state is ActionState.DONE and a.amount is not None
        ),
        Decimal(0),
    )
    notice_id = action.request_id
    return Notice(
        notice_id=notice_id,
        case_id=case.case_id,
        action_sequence=action.sequence,
        account_id=case.account_id,
        kind=action.action_type,
        template=action.step.template if action.step is not None else "",
        currency_code=case.currency_code,
        time_zone=case.time_zone,
        overdue_amount=debt.amount,
        days_past_due=case.days_past_due(now),
        bills=tuple(sorted(bills, key=lambda b: (b.due_date, b.bill_number))),
        late_fees=late_fees,
        create_time=now,
        delivery=NoticeDelivery.scheduled(notice_id, case.account_id, now),
    )


@dataclass(frozen=True)
class NoticeDocument:
    """A dunning letter's PDF as billing keeps it (its first rendering)."""

    notice_id: uuid.UUID
    content_type: str
    file_name: str
    content: bytes
    sha256: str
    render_time: datetime


def recipients(customer: Customer) -> tuple[str, ...]:
    return tuple(customer.recipients(COLLECTIONS_ROLES))


# What a notice says.


@dataclass(frozen=True)
class LetterView:
    """Everything a dunning letter's PDF (and a notice's email) shows, already formatted."""

    notice_id: uuid.UUID
    title: str
    file_name: str
    letter_date: str
    seller: Seller
    customer_name: str
    customer_lines: tuple[str, ...]
    opening: str
    # (number, issue date, due date, days past due, total, open amount)
    bills: tuple[tuple[str, str, str, str, str, str], ...]
    # (label, amount) rows under the bills.
    totals: tuple[tuple[str, str], ...]
    overdue_amount: str
    days_past_due: int
    late_fees: str
    payment_reference: str
    # The PDF's creation date: the notice's, so the same notice renders the same bytes.
    created: datetime


def _file_name(notice: Notice, customer: Customer) -> str:
    number = customer.details.account_number if customer.details and customer.details.account_number else ""
    stem = f"dunning-letter-{number or notice.account_id}-{notice.local_date.isoformat()}"
    return re.sub(r"[^A-Za-z0-9._-]", "_", stem) + ".pdf"


def payment_reference(notice: Notice, customer: Customer) -> str:
    """The account number when billing knows it, else the oldest overdue bill's number."""
    if customer.details is not None and customer.details.account_number:
        return customer.details.account_number
    return notice.bills[0].bill_number if notice.bills else str(notice.account_id)


def letter_view(notice: Notice, seller: Seller, customer: Customer) -> LetterView:
    currency = notice.currency_code
    customer_lines: list[str] = []
    if customer.details is not None and customer.details.account_number:
        customer_lines.append(f"Account {customer.details.account_number}")
    address = customer.billing_address(COLLECTIONS_ROLES)
    if address is not None:
        customer_lines.extend([*address.recipients, *([address.organization] if address.organization else [])])
        customer_lines.extend(address.lines())
    bills = tuple(
        (
            b.bill_number,
            format_date(b.issue_date),
            format_date(b.due_date),
            str(max((notice.local_date - b.due_date).days, 0)),
            format_money(b.total, currency),
            format_money(b.open_amount, currency),
        )
        for b in notice.bills
    )
    totals: list[tuple[str, str]] = [("Overdue amount", format_money(notice.overdue_amount, currency))]
    if notice.late_fees > 0:
        totals.append(("Late fees charged", format_money(notice.late_fees, currency)))
    return LetterView(
        notice_id=notice.notice_id,
        title="Dunning letter" if notice.is_letter else "Payment reminder",
        file_name=_file_name(notice, customer),
        letter_date=format_date(notice.local_date),
        seller=seller,
        customer_name=customer.name or f"Account {notice.account_id}",
        customer_lines=tuple(customer_lines),
        opening=opening(notice.template),
        bills=bills,
        totals=tuple(totals),
        overdue_amount=format_money(notice.overdue_amount, currency),
        days_past_due=notice.days_past_due,
        late_fees=format_money(notice.late_fees, currency) if notice.late_fees > 0 else "",
        payment_reference=payment_reference(notice, customer),
        created=notice.create_time,
    )


def _late_fee_line(view: LetterView) -> list[str]:
    if not view.late_fees:
        return []
    return [f"Late fees charged so far: {view.late_fees} (on your next invoice if not invoiced yet)."]


def _how_to_pay(view: LetterView) -> list[str]:
    lines = ["", "How to pay:", *view.seller.payment_instructions] if view.seller.payment_instructions else [""]
    return [*lines, f"Reference: {view.payment_reference}"]


def email_subject(view: LetterView) -> str:
    seller = f" from {view.seller.name}" if view.seller.name else ""
    return f"{view.title}: {view.overdue_amount} overdue{seller}"


def email_text(view: LetterView) -> str:
    """The plain-text body: the whole reminder; for a letter, a cover note with the same summary."""
    lines = [f"Dear {view.customer_name},", ""]
    if view.title == "Dunning letter":
        lines += [f"Please find attached our letter of {view.letter_date} about your overdue invoices.", ""]
    lines += [view.opening, ""]
    for number, _, due, days, total, open_amount in view.bills:
        lines.append(f"  Invoice {number}, due {due} ({days} days ago): {open_amount} unpaid of {total}")
    lines += [
        "",
        f"Overdue amount: {view.overdue_amount}, {view.days_past_due} days past due.",
        *_late_fee_line(view),
        "Please pay it without delay.",
        *_how_to_pay(view),
        "",
        "If you have paid in the meantime, please disregard this message.",
    ]
    if view.seller.name:
        lines += ["", view.seller.name]
    return "\n".join(lines) + "\n"


def letter_paragraphs(view: LetterView) -> tuple[str, ...]:
    """The letter's text under its table of bills."""
    return (
        f"The overdue amount is {view.overdue_amount}, {view.days_past_due} days past due.",
        *_late_fee_line(view),
        f"Please pay {view.overdue_amount} without delay, quoting the reference {view.payment_reference}.",
        "If you have paid in the meantime, please disregard this letter. If you disagree with the amount,"
        " please contact us at once.",
    )
