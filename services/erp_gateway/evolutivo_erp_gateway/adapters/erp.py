"""What the gateway asks of an ERP, whatever the ERP: the adapters implement it."""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date
from decimal import Decimal
from typing import Protocol

from evolutivo.balance.v1 import ledger_pb2, payment_pb2
from evolutivo.billing.v1 import bill_pb2, collections_events_pb2, credit_note_pb2
from evolutivo.customer.v1 import account_pb2, contact_pb2
from evolutivo_runtime.money import from_money

from evolutivo_erp_gateway.domain.journal import Journal, trim

# What a referral leaves in an ERP (Tryton, Odoo): found again by the marker, the party tagged with
# the agency's category.
REFERRAL_MARK = "evolutivo:referral:"
REFERRAL_CATEGORY = "Collections agency: {agency}"


def referral_note(
    referral: collections_events_pb2.CollectionsCaseReferred, referral_id: str, invoice_names: Sequence[str]
) -> list[str]:
    """The note's sentences, the marker first (each ERP joins them its own way)."""
    case = referral.collections_case
    overdue = trim(from_money(referral.overdue_amount))
    return [
        f"{REFERRAL_MARK}{referral_id}",
        f"Referred to collections agency {referral.agency or 'unnamed'}.",
        f"Collections case {case.case_id}, {case.days_past_due} days past due.",
        f"Overdue: {overdue} {referral.overdue_amount.currency_code}.",
        f"Invoices: {', '.join(invoice_names) if invoice_names else 'none sent to this ERP'}.",
    ]


class ErpError(Exception):
    """An ERP call failed; the job is retried with backoff."""


class Unreachable(ErpError):
    """The server did not answer (refused, timed out, not the protocol expected)."""


class AuthFailed(ErpError):
    """The server refused the connection's username or secret."""


class Rejected(ErpError):
    """The server answered with an error of its own (a validation, a missing record...)."""


class MappingMissing(ErpError):
    """The connection's mapping lacks what this record needs."""


class ProblemKind(enum.Enum):
    UNREACHABLE = "unreachable"
    AUTH_FAILED = "auth_failed"
    MAPPING_MISSING = "mapping_missing"
    CONFIG_INVALID = "config_invalid"
    ERP_ERROR = "erp_error"


@dataclass(frozen=True)
class Problem:
    kind: ProblemKind
    message: str


def problem_of(error: Exception) -> Problem:
    kinds = {
        Unreachable: ProblemKind.UNREACHABLE,
        AuthFailed: ProblemKind.AUTH_FAILED,
        MappingMissing: ProblemKind.MAPPING_MISSING,
    }
    for cls, kind in kinds.items():
        if isinstance(error, cls):
            return Problem(kind, str(error))
    return Problem(ProblemKind.ERP_ERROR, str(error))


@dataclass(frozen=True)
class ErpPayment:
    """A payment recorded in the ERP, as the inbound poll reads it."""

    erp_id: str
    party: str
    amount_text: str  # decimal string, in the company's currency
    currency_code: str
    # The ERP's own change cursor: (write or create time as ISO text, id).
    cursor: tuple[str, int]


@dataclass(frozen=True)
class InvoiceAllocation:
    """What billing gave one bill of a payment, with the bill's invoice in the ERP."""

    invoice: str  # the ERP's id of the bill's invoice (its INVOICE job's erp_id)
    bill_id: str
    amount: Decimal


class ErpAdapter(Protocol):
    async def test(self) -> list[Problem]:
        """What is wrong with the connection; empty when nothing is."""
        ...

    async def upsert_customer(
        self, account: account_pb2.Account, erp_id: str, contacts: Sequence[contact_pb2.Contact] = ()
    ) -> str:
        """Creates or updates the customer's party with its tax id and contacts (emails, phones,
        postal addresses); `erp_id` is the known one ("" if none). Returns its id."""
        ...

    async def post_invoice(self, bill: bill_pb2.Bill, party: str) -> str:
        """A posted customer invoice for the bill, created at most once. Returns its id."""
        ...

    async def post_credit_note(
        self, note: credit_note_pb2.CreditNote, party: str, bill: bill_pb2.Bill | None = None
    ) -> str:
        """A posted credit note, created at most once. Returns its id."""
        ...

    async def record_payment(
        self, payment: payment_pb2.Payment, party: str, allocations: Sequence[InvoiceAllocation]
    ) -> str:
        """The payment booked, at most once, split over the invoices exactly as billing allocated
        it (`allocations`, billing's first allocation of the payment) and reconciled with them; the
        rest is the party's unallocated credit. Returns its id."""
        ...

    async def allocate_credit(
        self,
        payment: payment_pb2.Payment,
        party: str,
        payment_erp_id: str,
        sequence: int,
        allocations: Sequence[InvoiceAllocation],
    ) -> str:
        """Billing's allocation number `sequence` (2, 3, ...) of the payment booked before as
        `payment_erp_id`: that much of its unallocated credit moved onto each invoice, at most once.
        Returns the ERP's id of the allocation."""
        ...

    async def allocate_credit_note(
        self,
        note: credit_note_pb2.CreditNote,
        party: str,
        note_erp_id: str,
        sequence: int,
        allocations: Sequence[InvoiceAllocation],
    ) -> str:
        """Billing's allocation number `sequence` (1 at issue, to its own bill; 2, 3, ... later
        bills) of the credit note booked before as `note_erp_id`: that much of its open credit moved
        onto each invoice, at most once (the same booking as allocate_credit, from the note).
        Returns the ERP's id of the allocation."""
        ...

    async def reverse_payment(self, payment: payment_pb2.Payment, party: str, payment_erp_id: str) -> str:
        """Undoes the payment sent before (`payment_erp_id`) with its later allocations: their
        invoices are open again. At most once."""
        ...

    async def write_off(self, entry: ledger_pb2.LedgerEntry, party: str, invoices: Sequence[str]) -> str:
        """The debt given up, settled against the party's open invoices (`invoices` first), at most once."""
        ...

    async def refer_case(
        self,
        referral: collections_events_pb2.CollectionsCaseReferred,
        referral_id: str,
        party: str,
        invoices: Sequence[str],
    ) -> str:
        """Hands the collections case to its agency through the ERP, at most once per referral."""
        ...

    async def post_journal(self, journal: Journal, on: date, reference: str) -> str:
        """The journal as one posted journal entry, at most once per reference."""
        ...

    async def payments_since(
        self, cursor: tuple[str, int] | None, limit: int
    ) -> tuple[list[ErpPayment], tuple[str, int] | None]:
        """Payments recorded in the ERP after `cursor`, oldest first (not the gateway's own), and the
        cursor after them (past what was read, also what was not a payment)."""
        ...

    async def aclose(self) -> None: ...
