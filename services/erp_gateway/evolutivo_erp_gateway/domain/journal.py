"""General-ledger postings of the suite's financial events, and the journal of a period.

Each event becomes postings that balance on their own (signed amounts: positive debits, negative
credits, summing to zero), so any selection of events, and so the journal of any period, balances.
Amounts are the events' own, already rounded to the currency's minor unit: nothing is re-rounded.
"""

from __future__ import annotations

import csv
import io
import json
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal

import iso4217
from evolutivo_runtime.errors import InvalidArgument

ZERO = Decimal(0)


def check_currency_code(code: str, field_name: str = "currency_code") -> str:
    """A currency ISO 4217 knows (as customer, charging, balance and billing check theirs): an
    unknown code could only ever export an empty journal, so it is refused naming the field."""
    try:
        iso4217.Currency(code)
    except ValueError:
        raise InvalidArgument(field_name, "must be an ISO 4217 currency code such as EUR") from None
    return code


class UnbalancedPostings(ValueError):
    """The postings of one event do not sum to zero: the event contradicts itself."""


@dataclass(frozen=True)
class Posting:
    role: str
    amount: Decimal  # > 0 debit, < 0 credit
    charge_offer_code: str = ""


def _balanced(postings: list[Posting]) -> list[Posting]:
    total = sum((p.amount for p in postings), ZERO)
    if total != 0:
        raise UnbalancedPostings(f"postings sum to {total}, not 0")
    return [p for p in postings if p.amount != 0]


def bill_postings(lines: Iterable[tuple[str, Decimal]], tax_total: Decimal, total: Decimal) -> list[Posting]:
    """An issued bill: the customer owes its total (receivable), earned as revenue per charge offer
    (line amounts before tax) and tax owed to the tax authority."""
    by_offer: dict[str, Decimal] = defaultdict(lambda: ZERO)
    for offer, amount in lines:
        by_offer[offer] += amount
    postings = [Posting("receivable", total)]
    postings += [Posting("revenue", -amount, offer) for offer, amount in sorted(by_offer.items())]
    postings.append(Posting("tax", -tax_total))
    return _balanced(postings)


def credit_note_postings(lines: Iterable[tuple[str, Decimal]], tax_total: Decimal, total: Decimal) -> list[Posting]:
    """A credit note reverses part of a bill."""
    return [Posting(p.role, -p.amount, p.charge_offer_code) for p in bill_postings(lines, tax_total, total)]


def payment_postings(amount: Decimal) -> list[Posting]:
    return _balanced([Posting("cash", amount), Posting("receivable", -amount)])


def payment_reversal_postings(amount: Decimal) -> list[Posting]:
    return _balanced([Posting("receivable", amount), Posting("cash", -amount)])


def write_off_postings(amount: Decimal) -> list[Posting]:
    """Debt given up: an expense (write_off), the receivable gone."""
    return _balanced([Posting("write_off", amount), Posting("receivable", -amount)])


@dataclass(frozen=True)
class JournalLine:
    role: str
    charge_offer_code: str
    account: str
    debit: Decimal
    credit: Decimal


@dataclass(frozen=True)
class Journal:
    currency_code: str
    lines: list[JournalLine]

    @property
    def debit_total(self) -> Decimal:
        return sum((line.debit for line in self.lines), ZERO)

    @property
    def credit_total(self) -> Decimal:
        return sum((line.credit for line in self.lines), ZERO)

    def to_csv(self) -> str:
        out = io.StringIO()
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(["role", "charge_offer_code", "account", "debit", "credit", "currency_code"])
        for line in self.lines:
            writer.writerow(
                [line.role, line.charge_offer_code, line.account, line.debit, line.credit, self.currency_code]
            )
        return out.getvalue()

    def to_json(self) -> str:
        return json.dumps(
            {
                "currency_code": self.currency_code,
                "lines": [
                    {
                        "role": line.role,
                        "charge_offer_code": line.charge_offer_code,
                        "account": line.account,
                        "debit": str(line.debit),
                        "credit": str(line.credit),
                    }
                    for line in self.lines
                ],
                "debit_total": str(self.debit_total),
                "credit_total": str(self.credit_total),
            },
            indent=2,
        )


def trim(amount: Decimal) -> Decimal:
    """An amount as read back from NUMERIC(38, 9), without its trailing zeros past the cents
    (ERPs refuse more digits than their currency has)."""
    trimmed = amount.normalize()
    exponent = trimmed.as_tuple().exponent
    if isinstance(exponent, int) and exponent > -2:
        return trimmed.quantize(Decimal("0.01"))
    return trimmed


ROLE_ORDER = {"receivable": 0, "cash": 1, "revenue": 2, "tax": 3, "write_off": 4}


def journal(currency_code: str, postings: Sequence[Posting], accounts: dict[str, str]) -> Journal:
    """The postings summed per account (role, and charge offer for revenue), each line on the side
    its net amount falls; `accounts` is the connection's mapping of roles to its accounts."""
    net: dict[tuple[str, str], Decimal] = defaultdict(lambda: ZERO)
    for posting in postings:
        net[(posting.role, posting.charge_offer_code)] += posting.amount
    lines = []
    for (role, offer), amount in sorted(net.items(), key=lambda item: (ROLE_ORDER.get(item[0][0], 9), item[0])):
        if amount == 0:
            continue
        amount = trim(amount)
        account = (accounts.get(f"revenue:{offer}") or accounts.get("revenue", "")) if role == "revenue" else ""
        account = account or accounts.get(role, "")
        lines.append(JournalLine(role, offer, account, amount if amount > 0 else ZERO, -amount if amount < 0 else ZERO))
    return Journal(currency_code, lines)


@dataclass(frozen=True)
class JournalEntry:
    """One record's postings, as `PostingRepository.add_many` writes them."""

    source_type: str
    source_id: str
    currency_code: str
    effective_time: datetime
    postings: Sequence[Posting]
