"""The reconciliation: what the five books must agree on (docs/reconciliation.md).

Every check reports each record that disagrees (which account, which ids, expected vs found), so
an operator can go straight to it; the per-account totals come on top of the per-record checks,
as the figure a finance team compares.
"""

from __future__ import annotations

import asyncio
import os
import uuid
from collections import Counter, defaultdict
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from datetime import timedelta
from decimal import Decimal
from typing import TypeVar
from urllib.parse import urlsplit, urlunsplit

from evolutivo_reconcile.books import (
    Balance,
    Billing,
    Charging,
    Customer,
    ErpGateway,
    load_balance,
    load_billing,
    load_charging,
    load_customer,
    load_erp_gateway,
)
from evolutivo_reconcile.report import Report
from evolutivo_reconcile.report import format_amount as _a

T = TypeVar("T")

SERVICES = ("customer", "charging", "balance", "billing", "erp_gateway")

# billing's bill_items kinds that are charging's charges; "late_fee" items are collections'.
CHARGE_KINDS = ("usage", "recurring", "one_time", "reversal")
FEE_KINDS = ("recurring", "one_time")
# A bill that was issued (every status but draft; suppressed bills stay draft).
ISSUED_STATUSES = ("issued", "partially_paid", "paid", "overdue", "void", "written_off")
# charging's idempotency horizon (CHARGING_USAGE_RETENTION_DAYS): rated events older than it are
# deleted, their charges stay.
DEFAULT_USAGE_RETENTION_DAYS = 100


@dataclass(frozen=True)
class DatabaseUrls:
    """One URL per service database; ``None`` leaves out the checks that need it."""

    customer: str | None = None
    charging: str | None = None
    balance: str | None = None
    billing: str | None = None
    erp_gateway: str | None = None

    @classmethod
    def on_server(cls, server_url: str, suffix: str = "") -> DatabaseUrls:
        """The five ``evolutivo_<service><suffix>`` databases of one PostgreSQL server."""
        parts = urlsplit(server_url)
        return cls(**{s: urlunsplit(parts._replace(path=f"/evolutivo_{s}{suffix}")) for s in SERVICES})

    def get(self, service: str) -> str | None:
        url: str | None = getattr(self, service)
        return url


async def reconcile(
    urls: DatabaseUrls,
    *,
    expected_usage_event_ids: Iterable[str] = (),
    usage_retention_days: int = DEFAULT_USAGE_RETENTION_DAYS,
) -> Report:
    """Reads the databases (read-only) and reports every difference between the books.

    ``expected_usage_event_ids``: usage events a client was told were accepted (a load generator,
    a test): each must be in charging's books, rated or kept with a reason.
    """
    report = Report()

    async def load(service: str, loader: Callable[[str], Awaitable[T]]) -> T | None:
        url = urls.get(service)
        if not url:
            if service != "erp_gateway":  # its own notice below says what was not checked
                report.notices.append(f"no {service} database configured: its checks are skipped")
            return None
        book = await loader(url)
        report.outbox_backlog[service] = getattr(book, "outbox", 0)
        return book

    customer, charging, balance, billing, erp = await asyncio.gather(
        load("customer", load_customer),
        load("charging", load_charging),
        load("balance", load_balance),
        load("billing", load_billing),
        load("erp_gateway", load_erp_gateway),
    )

    if charging is not None:
        check_usage(report, charging, set(expected_usage_event_ids), usage_retention_days)
        check_fees(report, charging)
    if balance is not None:
        check_group_balances(report, balance)
    if charging is not None or balance is not None or billing is not None:
        check_charges(report, charging, balance, billing)
    if balance is not None and billing is not None:
        check_late_fees(report, balance, billing)
        check_write_offs(report, balance, billing)
        check_payments(report, balance, billing)
        check_tax_and_credit_notes(report, balance, billing)
    if billing is not None:
        check_bills(report, billing)
    if customer is not None:
        check_accounts(report, customer, charging, balance, billing)
    if billing is not None:
        if erp is None:
            report.notices.append("no erp_gateway database configured: issued bills were not checked against the ERP")
        else:
            check_erp(report, billing, erp)
    return report


# ---------------------------------------------------------------------------------------------
# charging on its own


def check_usage(report: Report, charging: Charging, expected: set[str], retention_days: int) -> None:
    """Every usage event rated once (one standing charge per (event, purchase, charge)) or kept
    with its reason; every expected event received."""
    reversed_by: Counter[uuid.UUID] = Counter(
        c["reverses_charge_id"] for c in charging.charges if c["reverses_charge_id"] is not None
    )
    by_id = {c["charge_id"]: c for c in charging.charges}
    for charge_id, times in reversed_by.items():
        if charge_id not in by_id:
            report.add(
                "charges.reversal_of_unknown", "a reversal names a charge charging does not have", charge_id=charge_id
            )
        elif times > 1:
            original = by_id[charge_id]
            report.add(
                "charges.reversed_twice",
                "a charge is reversed more than once",
                original["account_id"],
                expected=1,
                found=times,
                charge_id=charge_id,
            )
    events = {e["event_id"]: e for e in charging.usage_events}
    standing: defaultdict[tuple[str, uuid.UUID, str], list[uuid.UUID]] = defaultdict(list)
    usage_charges = [c for c in charging.charges if c["kind"] == "usage"]
    for c in usage_charges:
        if c["charge_id"] not in reversed_by:
            standing[(c["event_id"], c["purchase_id"], c["charge_code"])].append(c["charge_id"])
    for (event_id, purchase_id, charge_code), ids in standing.items():
        if len(ids) > 1:
            report.add(
                "usage.charged_twice",
                "a usage event has more than one standing charge for one purchase's charge",
                by_id[ids[0]]["account_id"],
                expected=1,
                found=len(ids),
                event_id=event_id,
                purchase_id=purchase_id,
                charge_code=charge_code,
                charge_ids=",".join(str(i) for i in ids),
            )
    horizon = (
        charging.latest_rate_time - timedelta(days=retention_days) if charging.latest_rate_time is not None else None
    )
    for c in usage_charges:
        if c["event_id"] in events:
            continue
        # Past the horizon the event row is deleted on purpose; its charges stay.
        if horizon is not None and c["rate_time"] < horizon:
            continue
        report.add(
            "usage.charge_without_event",
            "a usage charge whose event charging has no record of (within the idempotency horizon)",
            c["account_id"],
            charge_id=c["charge_id"],
            event_id=c["event_id"],
        )
    charged_events = {c["event_id"] for ids in standing.values() for c in (by_id[i] for i in ids)}
    for e in charging.usage_events:
        if e["status"] == "rated":
            for charge_id in e["charge_ids"]:
                if charge_id not in by_id:
                    report.add(
                        "usage.charge_missing",
                        "a rated event names a charge charging does not have",
                        e["account_id"],
                        event_id=e["event_id"],
                        charge_id=charge_id,
                    )
        else:
            if not (e["reason"] or "").strip():
                report.add(
                    "usage.kept_without_reason",
                    f"a {e['status']} usage event has no reason",
                    e["account_id"],
                    event_id=e["event_id"],
                )
            if e["event_id"] in charged_events or e["charge_ids"]:
                report.add(
                    "usage.kept_but_charged",
                    f"a {e['status']} usage event has standing charges",
                    e["account_id"],
                    event_id=e["event_id"],
                )
    report.count("usage events", len(charging.usage_events))
    missing = sorted(i for i in expected if i not in events and i not in charged_events)
    for event_id in missing:
        report.add(
            "usage.accepted_event_missing",
            "an event the client was told was accepted is neither rated nor kept",
            event_id=event_id,
        )
    report.count("accepted usage events", len(expected))


def check_fees(report: Report, charging: Charging) -> None:
    """Each fee charge has its once-key in fee_charges, and each key its charge."""
    fee_charges = {c["charge_id"]: c for c in charging.charges if c["kind"] in FEE_KINDS}
    for charge_id, c in fee_charges.items():
        if charge_id not in charging.fee_charge_ids:
            report.add(
                "fees.charge_without_key",
                "a fee charge has no fee_charges key (it could be charged again)",
                c["account_id"],
                charge_id=charge_id,
            )
    for charge_id in charging.fee_charge_ids - fee_charges.keys():
        report.add("fees.key_without_charge", "a fee_charges key names no fee charge", charge_id=charge_id)
    report.count("fee charges", len(fee_charges))


# ---------------------------------------------------------------------------------------------
# charges across charging, balance and billing


Key = tuple[str, str]  # (account id, currency)


def check_charges(report: Report, charging: Charging | None, balance: Balance | None, billing: Billing | None) -> None:
    """Every charge booked once in balance and billed (or unbilled) once in billing, with its
    amount; per account and currency the three sums agree."""
    books: dict[str, dict[str, tuple[str, str, Decimal]]] = {}
    if charging is not None:
        books["charging"] = {
            str(c["charge_id"]): (str(c["account_id"]), c["currency_code"], c["amount"]) for c in charging.charges
        }
    if balance is not None:
        books["balance"] = {
            e["source_id"]: (str(e["account_id"]), e["currency_code"], e["amount"])
            for e in balance.entries
            if e["type"] == "charge"
        }
    if billing is not None:
        books["billing"] = {
            str(i["charge_id"]): (str(i["account_id"]), i["currency_code"], i["amount"])
            for i in billing.items
            if i["kind"] in CHARGE_KINDS
        }
    if "charging" in books:
        source = books["charging"]
        for other in ("balance", "billing"):
            if other not in books:
                continue
            target = books[other]
            for charge_id, (account, currency, amount) in source.items():
                found = target.get(charge_id)
                if found is None:
                    report.add(
                        f"{other}.charge_missing",
                        f"a charge of charging is not in {other}",
                        account,
                        expected=f"{_a(amount)} {currency}",
                        found="-",
                        charge_id=charge_id,
                    )
                elif found != (account, currency, amount):
                    report.add(
                        f"{other}.charge_differs",
                        f"{other} holds the charge with another account, currency or amount",
                        account,
                        expected=f"{account} {_a(amount)} {currency}",
                        found=f"{found[0]} {_a(found[2])} {found[1]}",
                        charge_id=charge_id,
                    )
            for charge_id, (account, currency, amount) in target.items():
                if charge_id not in source:
                    report.add(
                        f"{other}.charge_unknown",
                        f"{other} holds a charge charging never made",
                        account,
                        expected="-",
                        found=f"{_a(amount)} {currency}",
                        charge_id=charge_id,
                    )
    sums: dict[str, dict[Key, Decimal]] = {}
    for name, book in books.items():
        totals: defaultdict[Key, Decimal] = defaultdict(Decimal)
        for account, currency, amount in book.values():
            totals[(account, currency)] += amount
        sums[name] = totals
        report.count(f"charges in {name}", len(book))
    billed: defaultdict[Key, Decimal] = defaultdict(Decimal)
    if billing is not None:
        for i in billing.items:
            if i["kind"] in CHARGE_KINDS and i["billed"]:
                billed[(str(i["account_id"]), i["currency_code"])] += i["amount"]
    names = list(sums)
    for key in sorted({k for totals in sums.values() for k in totals}):
        values = {name: sums[name].get(key, Decimal(0)) for name in names}
        if len(set(values.values())) > 1:
            detail = ", ".join(f"{n} {_a(v)}" for n, v in values.items())
            if billing is not None and "billing" in sums:
                b = billed.get(key, Decimal(0))
                detail += f" (billing: billed {_a(b)} + unbilled {_a(values['billing'] - b)})"
            first = names[0]
            report.add(
                "totals.charges",
                f"the sums of the account's charges disagree: {detail}",
                key[0],
                expected=f"{_a(values[first])} {key[1]} ({first})",
                found=", ".join(f"{_a(v)} {key[1]} ({n})" for n, v in values.items() if n != first),
                currency=key[1],
            )


def check_group_balances(report: Report, balance: Balance) -> None:
    for g in balance.groups:
        if g["balance"] != g["entries_sum"]:
            report.add(
                "balance.group_balance",
                "a balance group's balance is not the sum of its entries",
                g["account_id"],
                expected=g["entries_sum"],
                found=g["balance"],
                balance_group_id=g["balance_group_id"],
            )
    report.count("balance groups", len(balance.groups))


# ---------------------------------------------------------------------------------------------
# collections' calls to balance


def check_late_fees(report: Report, balance: Balance, billing: Billing) -> None:
    """Late fees are balance adjustments (reason LATE_FEE) and billing items of kind late_fee:
    per action, and per account and currency."""
    adjustments = {str(e["entry_id"]): e for e in balance.entries if e["type"] == "adjustment"}
    items = {i["event_id"]: i for i in billing.items if i["kind"] == "late_fee"}
    fees = [a for a in billing.actions if a["action_type"] == "late_fee" and a["state"] == "done"]
    for a in fees:
        ids = {"case_id": a["case_id"], "sequence": a["sequence"]}
        entry = adjustments.get(a["reference"])
        if entry is None:
            report.add(
                "late_fees.adjustment_missing",
                "a late fee collections posted has no LATE_FEE adjustment in balance",
                a["account_id"],
                expected=a["amount"],
                found="-",
                entry_id=a["reference"],
                **ids,
            )
        elif entry["amount"] != a["amount"]:
            report.add(
                "late_fees.adjustment_differs",
                "balance's LATE_FEE adjustment is not the late fee's amount",
                a["account_id"],
                expected=a["amount"],
                found=entry["amount"],
                entry_id=a["reference"],
                **ids,
            )
        item = items.get(f"collections:{a['case_id']}:{a['sequence']}")
        if item is None:
            report.add(
                "late_fees.item_missing",
                "a late fee collections posted is not an item of billing (never billed)",
                a["account_id"],
                expected=a["amount"],
                found="-",
                **ids,
            )
    totals: dict[str, defaultdict[Key, Decimal]] = {"balance": defaultdict(Decimal), "billing": defaultdict(Decimal)}
    for e in adjustments.values():
        totals["balance"][(str(e["account_id"]), e["currency_code"])] += e["amount"]
    for i in items.values():
        totals["billing"][(str(i["account_id"]), i["currency_code"])] += i["amount"]
    for key in sorted(set(totals["balance"]) | set(totals["billing"])):
        ours, theirs = totals["balance"].get(key, Decimal(0)), totals["billing"].get(key, Decimal(0))
        if ours != theirs:
            report.add(
                "totals.late_fees",
                "LATE_FEE adjustments in balance and late-fee items in billing disagree",
                key[0],
                expected=f"{_a(ours)} {key[1]} (balance)",
                found=f"{_a(theirs)} {key[1]} (billing)",
                currency=key[1],
            )
    report.count("late fees", len(fees))


def check_write_offs(report: Report, balance: Balance, billing: Billing) -> None:
    """Each write-off collections made is one write_off entry in balance, of its amount."""
    entries = {
        e["source_id"]: e
        for e in balance.entries
        if e["type"] == "write_off" and e["source_type"] == "collections_case"
    }
    done = [a for a in billing.actions if a["action_type"] == "write_off" and a["state"] == "done"]
    for a in done:
        entry = entries.get(str(a["case_id"]))
        if entry is None or entry["amount"] != -a["amount"]:
            report.add(
                "write_offs.entry",
                "a write-off collections made is not balance's write_off entry of its amount",
                a["account_id"],
                expected=-a["amount"],
                found="-" if entry is None else entry["amount"],
                case_id=a["case_id"],
            )
    report.count("write-offs", len(done))


# ---------------------------------------------------------------------------------------------
# payments, tax and credit notes between balance and billing


def check_payments(report: Report, balance: Balance, billing: Billing) -> None:
    """Every payment balance recorded is known to billing (reversed alike) and, unless reversed,
    allocated to bills or held as credit to the cent; balance's entries match the payments."""
    entries = {e["entry_id"]: e for e in balance.entries if e["type"] in ("payment", "payment_reversal")}
    ours = {p["payment_id"]: p for p in balance.payments}
    theirs = {p["payment_id"]: p for p in billing.payments}
    for pid, p in ours.items():
        account = p["account_id"]
        entry = entries.get(p["entry_id"])
        if entry is None or entry["amount"] != -p["amount"]:
            report.add(
                "payments.entry",
                "balance's payment entry is not minus the payment",
                account,
                expected=-p["amount"],
                found="-" if entry is None else entry["amount"],
                payment_id=pid,
                reference=p["reference"],
            )
        reversed_ = p["state"] == "reversed"
        if reversed_:
            reversal = entries.get(p["reversal_entry_id"])
            if reversal is None or reversal["amount"] != p["amount"]:
                report.add(
                    "payments.reversal_entry",
                    "a reversed payment has no reversal entry of its amount",
                    account,
                    expected=p["amount"],
                    found="-" if reversal is None else reversal["amount"],
                    payment_id=pid,
                )
        b = theirs.get(pid)
        if b is None:
            if not reversed_:
                report.add(
                    "payments.unknown_to_billing",
                    "a payment balance recorded is unknown to billing (not allocated, not credit)",
                    account,
                    expected=f"{_a(p['amount'])} {p['currency_code']}",
                    found="-",
                    payment_id=pid,
                    reference=p["reference"],
                )
            continue
        if (b["amount"], b["currency_code"], b["account_id"]) != (p["amount"], p["currency_code"], account):
            report.add(
                "payments.differs",
                "billing holds the payment with another account or amount",
                account,
                expected=f"{account} {_a(p['amount'])} {p['currency_code']}",
                found=f"{b['account_id']} {_a(b['amount'])} {b['currency_code']}",
                payment_id=pid,
            )
        if b["reversed"] != reversed_:
            report.add(
                "payments.reversal",
                "balance and billing disagree on whether the payment is reversed",
                account,
                expected="reversed" if reversed_ else "recorded",
                found="reversed" if b["reversed"] else "recorded",
                payment_id=pid,
            )
    for pid, b in theirs.items():
        if pid not in ours:
            report.add(
                "payments.unknown_to_balance",
                "billing holds a payment balance never recorded",
                b["account_id"],
                found=f"{_a(b['amount'])} {b['currency_code']}",
                payment_id=pid,
            )
        if b["reversed"]:
            if b["allocated"] or b["unallocated"]:
                report.add(
                    "payments.reversed_still_allocated",
                    "a reversed payment still pays bills or is held as credit",
                    b["account_id"],
                    expected=0,
                    found=b["allocated"] + b["unallocated"],
                    payment_id=pid,
                )
        elif b["allocated"] + b["unallocated"] != b["amount"]:
            report.add(
                "payments.allocation",
                "a payment's allocations plus its credit are not the payment",
                b["account_id"],
                expected=b["amount"],
                found=f"{_a(b['allocated'])} allocated + {_a(b['unallocated'])} credit",
                payment_id=pid,
            )
    report.count("payments", len(ours))


def check_tax_and_credit_notes(report: Report, balance: Balance, billing: Billing) -> None:
    """Every issued bill's tax is one TAX entry in balance, every credit note one CREDIT_NOTE entry."""
    tax = {e["source_id"]: e for e in balance.entries if e["type"] == "tax" and e["source_type"] == "bill"}
    issued = {str(b["bill_id"]): b for b in billing.bills if b["status"] in ISSUED_STATUSES}
    for bill_id, b in issued.items():
        entry = tax.get(bill_id)
        if b["tax_total"] == 0:
            if entry is not None and entry["amount"] != 0:
                report.add(
                    "tax.differs",
                    "balance booked tax for a bill without tax",
                    b["account_id"],
                    expected=0,
                    found=entry["amount"],
                    bill_id=bill_id,
                    bill_number=b["bill_number"],
                )
            continue
        if entry is None or entry["amount"] != b["tax_total"] or entry["currency_code"] != b["currency_code"]:
            report.add(
                "tax.missing" if entry is None else "tax.differs",
                "an issued bill's tax is not a TAX entry of its amount in balance",
                b["account_id"],
                expected=f"{_a(b['tax_total'])} {b['currency_code']}",
                found="-" if entry is None else f"{_a(entry['amount'])} {entry['currency_code']}",
                bill_id=bill_id,
                bill_number=b["bill_number"],
            )
    for bill_id, e in tax.items():
        if bill_id not in issued:
            report.add(
                "tax.unknown",
                "balance booked tax for a bill billing has not issued",
                e["account_id"],
                found=e["amount"],
                bill_id=bill_id,
            )
    notes = {e["source_id"]: e for e in balance.entries if e["type"] == "credit_note"}
    known = {str(n["credit_note_id"]): n for n in billing.credit_notes}
    for note_id, n in known.items():
        entry = notes.get(note_id)
        if entry is None or entry["amount"] != -n["total"]:
            report.add(
                "credit_notes.entry",
                "a credit note is not a CREDIT_NOTE entry of minus its total in balance",
                n["account_id"],
                expected=-n["total"],
                found="-" if entry is None else entry["amount"],
                credit_note_id=note_id,
                credit_note_number=n["credit_note_number"],
            )
    for note_id, e in notes.items():
        if note_id not in known:
            report.add(
                "credit_notes.unknown",
                "balance booked a credit note billing never issued",
                e["account_id"],
                found=e["amount"],
                credit_note_id=note_id,
            )
    report.count("issued bills", len(issued))
    report.count("credit notes", len(known))


# ---------------------------------------------------------------------------------------------
# billing on its own


def check_bills(report: Report, billing: Billing) -> None:
    """A bill's subtotal is its lines and its items, and every charge its lines name is an item;
    an item its cycle counts as billed is on exactly one bill, one it counts as unbilled on none;
    what was paid and credited on a bill is what its allocations say; a credit note's allocations
    plus its credit are its total."""
    for i in billing.items:
        on = billing.item_bills.get(i["charge_id"], [])
        if len(on) != (1 if i["billed"] else 0):
            counted = "billed" if i["billed"] else "unbilled"
            report.add(
                "items.billed",
                f"an item its cycle counts as {counted} is named by {len(on)} bill lines",
                i["account_id"], expected=1 if i["billed"] else 0, found=len(on), charge_id=i["charge_id"],
            )  # fmt: skip
    for b in billing.bills:
        ids = {"bill_id": b["bill_id"], "bill_number": b["bill_number"] or "(draft)"}
        if b["charges_found"] != b["charges_named"]:
            report.add(
                "bills.charges", "a bill's lines name charges billing has no item for", b["account_id"],
                expected=b["charges_named"], found=b["charges_found"], **ids,
            )  # fmt: skip
        if b["lines_sum"] != b["subtotal"]:
            report.add(
                "bills.lines", "a bill's subtotal is not the sum of its lines", b["account_id"],
                expected=b["lines_sum"], found=b["subtotal"], **ids,
            )  # fmt: skip
        if b["items_sum"] != b["subtotal"]:
            report.add(
                "bills.items", "a bill's subtotal is not the sum of the items billed on it", b["account_id"],
                expected=b["items_sum"], found=b["subtotal"], **ids,
            )  # fmt: skip
        if b["allocated"] != b["paid_amount"]:
            report.add(
                "bills.paid_amount", "a bill's paid amount is not the sum of its payment allocations",
                b["account_id"], expected=b["allocated"], found=b["paid_amount"], **ids,
            )  # fmt: skip
        if b["credit_allocated"] > b["credited_amount"]:
            report.add(
                "bills.credited_amount", "credit notes allocated more to a bill than it shows as credited",
                b["account_id"], expected=b["credit_allocated"], found=b["credited_amount"], **ids,
            )  # fmt: skip
    for n in billing.credit_notes:
        if n["allocated"] + n["unallocated"] > n["total"]:
            report.add(
                "credit_notes.allocation",
                "a credit note's allocations plus its credit exceed its total",
                n["account_id"],
                expected=n["total"],
                found=f"{_a(n['allocated'])} allocated + {_a(n['unallocated'])} credit",
                credit_note_id=n["credit_note_id"],
            )
    report.count("bills", len(billing.bills))


# ---------------------------------------------------------------------------------------------
# accounts and the ERP


def check_accounts(
    report: Report, customer: Customer, charging: Charging | None, balance: Balance | None, billing: Billing | None
) -> None:
    """Every account of customer reached balance (a default group in its currency) and billing
    (a bill unit)."""
    defaults = {g["account_id"]: g for g in balance.groups if g["is_default"]} if balance is not None else None
    for a in customer.accounts:
        account = a["account_id"]
        if defaults is not None:
            group = defaults.get(account)
            if group is None:
                report.add("accounts.no_balance_group", "an account has no default balance group", account)
            elif group["currency_code"] != a["currency_code"]:
                report.add(
                    "accounts.currency",
                    "the account's default balance group is in another currency",
                    account,
                    expected=a["currency_code"],
                    found=group["currency_code"],
                )
        if billing is not None and account not in billing.bill_unit_accounts:
            report.add("accounts.no_bill_unit", "an account has no bill unit in billing", account)
    known = {a["account_id"] for a in customer.accounts}
    if charging is not None:
        strangers = sorted({c["account_id"] for c in charging.charges} - known)
        for account in strangers:
            report.add("accounts.unknown", "charging charged an account customer does not have", account)
    report.count("accounts", len(customer.accounts))


def check_erp(report: Report, billing: Billing, erp: ErpGateway) -> None:
    """Every issued bill and credit note reached the ERP gateway and, for every enabled connection
    that takes records, was sent (its sync job succeeded)."""
    records = [
        ("invoice", b["bill_id"], b["account_id"], b["bill_number"])
        for b in billing.bills
        if b["status"] in ISSUED_STATUSES
    ]
    records += [
        ("credit_note", n["credit_note_id"], n["account_id"], n["credit_note_number"]) for n in billing.credit_notes
    ]
    if not erp.connections:
        report.notices.append(
            "no enabled ERP connection that takes records: bills and credit notes were checked as received by"
            " the ERP gateway only, not as sent to an ERP"
        )
    for entity_type, entity_id, account, number in records:
        if (entity_type, entity_id) not in erp.states:
            report.add(
                "erp.not_received",
                f"the ERP gateway never received this {entity_type.replace('_', ' ')}",
                account,
                **{f"{entity_type}_id": entity_id, "number": number},
            )
            continue
        for c in erp.connections:
            state, error = erp.jobs.get((c["connection_id"], entity_type, entity_id), ("-", ""))
            if state != "succeeded":
                report.add(
                    "erp.not_synced",
                    f"the {entity_type.replace('_', ' ')} is not in the ERP"
                    + (f" (last error: {error})" if error else ""),
                    account,
                    expected="succeeded",
                    found=state,
                    connection=c["display_name"],
                    **{f"{entity_type}_id": entity_id, "number": number},
                )
    report.count("records checked against the ERP", len(records))


def urls_from_environment(environ: dict[str, str] | None = None) -> DatabaseUrls:
    """The URLs the services themselves read (``<SVC>_DATABASE_URL``), when set."""
    env = os.environ if environ is None else environ
    return DatabaseUrls(**{s: env.get(f"{s.upper()}_DATABASE_URL") or None for s in SERVICES})
