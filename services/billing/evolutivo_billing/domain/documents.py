"""Bill documents: what billing knows of the customer (from customer's events), the seller (from
settings), and what an issued bill's PDF shows. Plain Python: no protobuf, no SQL, no PDF library.

Rules (docs/billing.md, "Documents"):
- Amounts are shown exactly as the bill holds them, formatted from Decimal at the currency's minor
  unit ("1,234.50 EUR"); never through a float.
- Bills go to the account's BILLING contacts with an email address, else to its PRIMARY ones
  (customer's ContactRole); the billing address is the first such contact's postal address.
- Once customer erased the account's personal data, billing keeps no recipient for it.
- The view of a bill depends only on the bill, the customer details and the seller: the same
  inputs make the same document.
"""

from __future__ import annotations

import enum
import re
import uuid
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from decimal import Decimal
from typing import Any

from evolutivo_billing.domain.bills import Bill, BillLine, currency_exponent, round_money

PDF_CONTENT_TYPE = "application/pdf"

# A plausible address (something@domain, no spaces): customer's "[erased]" marker is not one.
_EMAIL = re.compile(r"^[^@\s<>,;]+@[^@\s<>,;]+\.[^@\s<>,;]+$")


class ContactRole(enum.Enum):
    UNSPECIFIED = "unspecified"
    PRIMARY = "primary"
    BILLING = "billing"
    TECHNICAL = "technical"
    COLLECTIONS = "collections"


class DeliveryMethod(enum.Enum):
    """customer's DeliveryPreferences.method; unspecified means email."""

    EMAIL = "email"
    POSTAL = "postal"
    PORTAL = "portal"


@dataclass(frozen=True)
class PostalAddress:
    """The parts of a google.type.PostalAddress a document prints."""

    recipients: tuple[str, ...] = ()
    organization: str = ""
    address_lines: tuple[str, ...] = ()
    postal_code: str = ""
    locality: str = ""
    administrative_area: str = ""
    region_code: str = ""

    def lines(self) -> list[str]:
        """Street lines, then "postal code locality area", then the country code."""
        town = " ".join(p for p in (self.postal_code, self.locality, self.administrative_area) if p)
        return [line for line in (*self.address_lines, town, self.region_code) if line]


@dataclass(frozen=True)
class AccountDetails:
    """Customer's account as billing keeps it for documents and delivery. `update_time` (the
    account's, from customer) orders the events: an older one never overwrites a newer one."""

    account_id: uuid.UUID
    update_time: datetime
    account_number: str = ""
    display_name: str = ""
    tax_id: str = ""
    country_code: str = ""
    locale: str = ""
    delivery_method: DeliveryMethod = DeliveryMethod.EMAIL
    personal_data_erased: bool = False


@dataclass(frozen=True)
class AccountContact:
    """One of the account's contacts (customer's ContactChanged); `removed` once customer removed it."""

    contact_id: uuid.UUID
    account_id: uuid.UUID
    role: ContactRole
    update_time: datetime
    name: str = ""
    email: str | None = None
    postal_address: PostalAddress | None = None
    removed: bool = False

    def erased(self) -> AccountContact:
        """The contact without its personal data (the account's was erased)."""
        return AccountContact(self.contact_id, self.account_id, self.role, self.update_time, removed=self.removed)


def is_email(value: str | None) -> bool:
    return bool(value) and _EMAIL.match(value or "") is not None


# Who collections notices go to: the COLLECTIONS contacts, else the BILLING ones, else the PRIMARY ones.
COLLECTIONS_ROLES = (ContactRole.COLLECTIONS, ContactRole.BILLING, ContactRole.PRIMARY)


@dataclass(frozen=True)
class Customer:
    """What billing knows of a bill's customer: the account (None before customer's events
    arrived) and its contacts."""

    account_id: uuid.UUID
    details: AccountDetails | None = None
    contacts: tuple[AccountContact, ...] = ()

    @property
    def erased(self) -> bool:
        return self.details is not None and self.details.personal_data_erased

    def _live(self, role: ContactRole) -> list[AccountContact]:
        """The role's contacts customer has not removed, oldest update first (a stable order)."""
        return sorted(
            (c for c in self.contacts if not c.removed and c.role is role),
            key=lambda c: (c.update_time, str(c.contact_id)),
        )

    def recipients(self, roles: tuple[ContactRole, ...] = (ContactRole.BILLING, ContactRole.PRIMARY)) -> list[str]:
        """The email addresses bills go to: the BILLING contacts', else the PRIMARY ones' (each
        role is used when it has an address; `roles` gives another order, e.g. COLLECTIONS_ROLES),
        sorted and without duplicates; none once erased."""
        if self.erased:
            return []
        for role in roles:
            found = sorted({c.email.strip().lower() for c in self._live(role) if c.email and is_email(c.email)})
            if found:
                return found
        return []

    def billing_address(
        self, roles: tuple[ContactRole, ...] = (ContactRole.BILLING, ContactRole.PRIMARY)
    ) -> PostalAddress | None:
        """The postal address of the oldest BILLING contact that has one, else of a PRIMARY one
        (or by `roles`)."""
        if self.erased:
            return None
        for role in roles:
            for contact in self._live(role):
                if contact.postal_address is not None:
                    return contact.postal_address
        return None

    @property
    def delivery_method(self) -> DeliveryMethod:
        return self.details.delivery_method if self.details else DeliveryMethod.EMAIL

    @property
    def name(self) -> str:
        return self.details.display_name if self.details and self.details.display_name else ""


@dataclass(frozen=True)
class Seller:
    """Who issues the bills (BILLING_SELLER_* settings)."""

    name: str = ""
    address_lines: tuple[str, ...] = ()
    tax_id: str = ""
    email: str = ""
    # E.g. ("IBAN ES91 2100 0418 4502 0005 1332", "BIC CAIXESBBXXX").
    payment_instructions: tuple[str, ...] = ()


def format_money(amount: Decimal, currency: str) -> str:
    """ "1,234.50 EUR": the amount at the currency's minor unit (ROUND_HALF_UP, as bills round;
    bill amounts are already rounded, so this only pads), grouped by thousands, exactly."""
    exponent = currency_exponent(currency)
    return f"{round_money(amount, exponent):,.{exponent}f} {currency}"


def format_decimal(value: Decimal) -> str:
    """Plain notation without trailing zeros: 150 -> "150", 1.500 -> "1.5"."""
    if value == value.to_integral_value():
        return f"{value.quantize(Decimal(1)):f}"
    return f"{value.normalize():f}"


def format_rate(rate: Decimal) -> str:
    """0.21 -> "21%", 0.055 -> "5.5%"."""
    return f"{format_decimal(rate * 100)}%"


def format_date(value: date) -> str:
    return value.isoformat()


def format_period(start: date, end: date) -> str:
    """A period [start, end) as people read it, with its last day: "2031-05-10 to 2031-06-14"."""
    last = max(start, end - timedelta(days=1))
    return format_date(start) if last == start else f"{format_date(start)} to {format_date(last)}"


@dataclass(frozen=True)
class DocumentLine:
    number: int
    description: str
    period: str
    quantity: str
    # Empty when the line has no single unit price.
    unit_price: str
    tax_code: str
    amount: str


@dataclass(frozen=True)
class DocumentTax:
    tax_code: str
    rate: str
    taxable_amount: str
    tax_amount: str


@dataclass(frozen=True)
class BillDocumentView:
    """Everything a bill's PDF shows, already formatted."""

    bill_id: uuid.UUID
    bill_number: str
    file_name: str
    issue_date: str
    due_date: str
    period: str
    currency_code: str
    seller: Seller
    customer_name: str
    customer_lines: tuple[str, ...]
    lines: tuple[DocumentLine, ...]
    taxes: tuple[DocumentTax, ...]
    # (label, amount) rows under the lines: subtotal, tax, total and, when the bill has them,
    # previous balance, payments and amount due.
    totals: tuple[tuple[str, str], ...]
    amount_due: str
    payment_reference: str
    # The PDF's creation date: the bill's issue time, so the same bill renders the same bytes.
    created: datetime


# The statement part of a bill (another part of billing adds it: what the account owed before,
# received since the previous bill, had applied as credit): shown when the bill has it, in this
# order (attribute path, label, shown when zero).
_STATEMENT_AMOUNTS = (
    ("statement.previous_balance", "Previous balance", False),
    ("statement.payments_received", "Payments received since the last bill", False),
    ("statement.credits", "Credit notes since the last bill", False),
    ("credit_applied", "Credit applied", False),
    ("amount_due", "Amount due", True),
)


def _optional(obj: object, path: str) -> Any:
    for name in path.split("."):
        obj = getattr(obj, name, None)
        if obj is None:
            return None
    return obj


def _optional_amount(obj: object, path: str) -> Decimal | None:
    value = _optional(obj, path)
    return value if isinstance(value, Decimal) else None


def _line_description(line: BillLine, currency: str) -> str:
    """Offer / charge, then the tier bands when the line has them (each on its own row)."""
    text = f"{line.key.charge_offer_code} / {line.key.charge_code}"
    for tier in _optional(line, "tiers") or ():
        fee = f" + {format_money(tier.flat_fee, currency)}" if tier.flat_fee else ""
        text += f"\n  tier {tier.tier}: {format_decimal(tier.units)} x {format_decimal(tier.unit_price)}{fee}"
    return text


def _unit_price(line: BillLine) -> str:
    price = _optional_amount(line, "unit_price")
    return format_decimal(price) if price is not None else ""


def file_name(bill: Bill) -> str:
    number = bill.number.number if bill.number else str(bill.bill_id)
    return re.sub(r"[^A-Za-z0-9._-]", "_", number) + ".pdf"


def document_view(bill: Bill, seller: Seller, customer: Customer) -> BillDocumentView:
    """The document of an issued bill. ValueError for a bill that was never issued."""
    if bill.number is None or bill.issue_time is None:
        raise ValueError(f"bill {bill.bill_id} was never issued: it has no document")
    currency = bill.currency_code
    lines = tuple(
        DocumentLine(
            number=line.line_number,
            description=_line_description(line, currency),
            period=format_period(line.key.period_start, line.key.period_end),
            quantity=format_decimal(line.quantity),
            unit_price=_unit_price(line),
            tax_code=line.tax_code,
            amount=format_money(line.amount, currency),
        )
        for line in bill.lines
    )
    taxes = tuple(
        DocumentTax(
            t.tax_code,
            format_rate(t.rate),
            format_money(t.taxable_amount, currency),
            format_money(t.tax_amount, currency),
        )
        for t in bill.taxes
    )
    totals: list[tuple[str, str]] = [
        ("Subtotal", format_money(bill.subtotal, currency)),
        ("Tax", format_money(bill.tax_total, currency)),
        ("Total", format_money(bill.total, currency)),
    ]
    for path, label, when_zero in _STATEMENT_AMOUNTS:
        amount = _optional_amount(bill, path)
        if amount is not None and (amount != 0 or when_zero):
            totals.append((label, format_money(amount, currency)))
    due = _optional_amount(bill, "amount_due")
    customer_lines: list[str] = []
    if customer.details is not None:
        if customer.details.account_number:
            customer_lines.append(f"Account {customer.details.account_number}")
        if customer.details.tax_id and not customer.erased:
            customer_lines.append(f"Tax id {customer.details.tax_id}")
    address = customer.billing_address()
    if address is not None:
        customer_lines.extend([*address.recipients, *([address.organization] if address.organization else [])])
        customer_lines.extend(address.lines())
    return BillDocumentView(
        bill_id=bill.bill_id,
        bill_number=bill.number.number,
        file_name=file_name(bill),
        issue_date=format_date(bill.issue_date),
        due_date=format_date(bill.due_date),
        period=format_period(bill.period.start, bill.period.end),
        currency_code=currency,
        seller=seller,
        customer_name=customer.name or f"Account {bill.account_id}",
        customer_lines=tuple(customer_lines),
        lines=lines,
        taxes=taxes,
        totals=tuple(totals),
        amount_due=format_money(due if due is not None else bill.total, currency),
        payment_reference=bill.number.number,
        created=bill.issue_time,
    )


def email_text(view: BillDocumentView) -> str:
    """The plain-text body of a bill's email."""
    seller = view.seller.name or "us"
    lines = [
        f"Dear {view.customer_name},",
        "",
        f"Please find attached invoice {view.bill_number} of {view.issue_date} from {seller}.",
        f"Amount due: {view.amount_due}, by {view.due_date}.",
    ]
    if view.seller.payment_instructions:
        lines += ["", "How to pay:", *view.seller.payment_instructions, f"Reference: {view.payment_reference}"]
    return "\n".join(lines) + "\n"


def email_subject(view: BillDocumentView) -> str:
    seller = f" from {view.seller.name}" if view.seller.name else ""
    return f"Invoice {view.bill_number}{seller}"


@dataclass(frozen=True)
class StoredDocument:
    """A bill's rendered PDF as billing keeps it (the first rendering of the bill)."""

    bill_id: uuid.UUID
    content_type: str
    file_name: str
    content: bytes
    sha256: str
    render_time: datetime
