"""Odoo (17) over its documented external API: JSON-RPC at <url>/jsonrpc, service "common"
("version", "authenticate" -> uid) and service "object", method "execute_kw" (db, uid, password or
API key, model, method, args, kwargs) on the ORM's public methods.

No Odoo server can run here (Odoo is not on PyPI): this adapter is tested against recorded
request and response shapes, not a live Odoo (docs/erp_gateway.md says so).

As with Tryton, every write is made findable by a reference of ours before it is made, so a retry
after a crash finds what the first attempt created instead of creating it twice:
  partners     res.partner ref = the account number;
  invoices     account.move move_type out_invoice, ref = the bill number;
  credit notes account.move move_type out_refund, ref = the credit note number;
  payments     account.payment ref = "evolutivo:payment:<payment id>";
  write-offs   account.move move_type entry, ref = "evolutivo:write_off:<ledger entry id>";
  journals     account.move move_type entry, ref = "evolutivo:journal:<reference>";
  referrals    res.partner category "Collections agency: <agency>" (found by name) and a chatter
               note (message_post) whose body holds "evolutivo:referral:<referral id>".
Odoo runs each call in its own transaction: a record is created whole or not at all; a draft left
by a crash between create and action_post is posted by the retry.

Amounts: Odoo's API takes monetary fields as JSON numbers; each is the exact decimal's nearest
double (two decimals survive that round trip) and Odoo rounds it to the currency. Odoo computes the
taxes of an invoice itself: the adapter checks that its total is the bill's before posting it, and
refuses (leaving the draft) otherwise. Bills round tax per tax code, which is Odoo's "Round
Globally" tax rounding setting. Amounts read back (imported payments) are JSON numbers too: each
is turned back into the exact decimal through its currency's decimal places.

Inbound: posted inbound customer payments (account.payment) are read by their journal entry's
write date and id (payments_since says why), leaving out those the gateway made itself.
"""

from __future__ import annotations

import datetime as dt
import itertools
import json
from collections.abc import Sequence
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

import httpx
from evolutivo.balance.v1 import ledger_pb2, payment_pb2
from evolutivo.billing.v1 import bill_pb2, collections_events_pb2, credit_note_pb2
from evolutivo.customer.v1 import account_pb2, contact_pb2
from evolutivo_runtime.money import from_money
from google.type import date_pb2

from evolutivo_erp_gateway.adapters.erp import (
    REFERRAL_CATEGORY,
    REFERRAL_MARK,
    AuthFailed,
    ErpError,
    ErpPayment,
    InvoiceAllocation,
    MappingMissing,
    Problem,
    ProblemKind,
    Rejected,
    Unreachable,
    referral_note,
)
from evolutivo_erp_gateway.domain.connections import Connection, Mapping
from evolutivo_erp_gateway.domain.journal import Journal

PAYMENT_MARK = "evolutivo:payment:"
WRITE_OFF_MARK = "evolutivo:write_off:"
JOURNAL_MARK = "evolutivo:journal:"
# Every reference the gateway writes starts so; a payment with one is the gateway's, not imported.
OWN_MARK = "evolutivo:"
# Odoo stamps write_date with its transaction's start time, so a payment posted in a transaction
# still open when a poll reads past it appears later with an older stamp: each poll looks this far
# back behind its cursor again (what the gateway imported already is skipped by it).
IMPORT_LOOKBACK = dt.timedelta(minutes=2)
# How Odoo's JSON-RPC writes a datetime (UTC, to the second), also in domains.
ODOO_DATETIME = "%Y-%m-%d %H:%M:%S"
CENT = Decimal("0.01")
# The contact that gives a partner its single email, phone and address: billing first, then primary.
_ROLE_ORDER = {contact_pb2.CONTACT_ROLE_BILLING: 0, contact_pb2.CONTACT_ROLE_PRIMARY: 1}


def _number(amount: Decimal) -> float:
    # Odoo's monetary fields are floats on its API; see the module's docstring.
    return float(amount)


def _decimal(value: object) -> Decimal:
    return Decimal(str(value)).quantize(CENT)


def _exact(value: object, places: int) -> Decimal:
    """A monetary value Odoo sent as a JSON number, back to its exact decimal: Odoo keeps it rounded
    to the currency, so the double's shortest decimal form, rounded to the currency's places, is it."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise Rejected(f"Odoo sent {value!r} where an amount was expected")
    return Decimal(repr(value)).quantize(Decimal(1).scaleb(-places), ROUND_HALF_UP)


def _date(value: date_pb2.Date) -> str:
    return dt.date(value.year, value.month, value.day).isoformat()


def _odoo_id(field: str, value: str) -> int:
    if not value.isdigit():
        raise MappingMissing(f"{field}: {value!r} is not an Odoo id")
    return int(value)


def _many2one(value: object) -> int:
    """Odoo reads a many2one as [id, display name], or false when empty."""
    if isinstance(value, list) and value:
        return int(value[0])
    return 0


class OdooClient:
    """execute_kw calls on one Odoo database, logged in as the connection's user."""

    def __init__(
        self,
        url: str,
        database: str,
        username: str,
        secret: str,
        timeout: float,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.url = url.rstrip("/") + "/jsonrpc"
        self._database = database
        self._username = username
        self._secret = secret
        self._http = httpx.AsyncClient(timeout=timeout, transport=transport)
        self._ids = itertools.count(1)
        self.uid: int | None = None

    async def aclose(self) -> None:
        await self._http.aclose()

    async def rpc(self, service: str, method: str, *args: object) -> Any:
        body = {
            "jsonrpc": "2.0",
            "method": "call",
            "params": {"service": service, "method": method, "args": list(args)},
            "id": next(self._ids),
        }
        try:
            response = await self._http.post(
                self.url, content=json.dumps(body), headers={"Content-Type": "application/json"}
            )
        except httpx.HTTPError as exc:
            raise Unreachable(f"Odoo at {self.url} did not answer: {type(exc).__name__}") from None
        try:
            data = response.json()
        except ValueError:
            raise Unreachable(f"{self.url} does not answer Odoo's JSON-RPC (HTTP {response.status_code})") from None
        if not isinstance(data, dict):
            raise Unreachable(f"{self.url} does not answer Odoo's JSON-RPC")
        if data.get("error"):
            error = data["error"]
            details = error.get("data") or {}
            message = details.get("message") or error.get("message")
            if "AccessDenied" in str(details.get("name", "")):
                raise AuthFailed(f"Odoo refused the login of {self._username!r}")
            raise Rejected(f"Odoo: {message}")
        return data.get("result")

    async def login(self) -> int:
        uid = await self.rpc("common", "authenticate", self._database, self._username, self._secret, {})
        if not uid:
            raise AuthFailed(f"Odoo refused the login of {self._username!r}")
        self.uid = int(uid)
        return self.uid

    async def execute(self, model: str, method: str, *args: object, **kwargs: object) -> Any:
        if self.uid is None:
            await self.login()
        return await self.rpc(
            "object", "execute_kw", self._database, self.uid, self._secret, model, method, list(args), kwargs
        )

    async def search(self, model: str, domain: list[object], limit: int = 0, order: str = "") -> list[int]:
        kwargs: dict[str, object] = {}
        if limit:
            kwargs["limit"] = limit
        if order:
            kwargs["order"] = order
        return [int(i) for i in await self.execute(model, "search", domain, **kwargs)]

    async def read(self, model: str, ids: Sequence[int], fields: Sequence[str]) -> list[dict[str, Any]]:
        if not ids:
            return []
        rows = await self.execute(model, "read", list(ids), fields=list(fields))
        by_id = {row["id"]: row for row in rows}
        return [by_id[i] for i in ids if i in by_id]

    async def create(self, model: str, values: dict[str, object]) -> int:
        result = await self.execute(model, "create", values)
        # Odoo 17 answers a single dict's create with its id (a list of ids for a list).
        return int(result[0] if isinstance(result, list) else result)

    async def write(self, model: str, ids: Sequence[int], values: dict[str, object]) -> None:
        await self.execute(model, "write", list(ids), values)


class OdooAdapter:
    def __init__(
        self, connection: Connection, secret: str, timeout: float, transport: httpx.AsyncBaseTransport | None = None
    ) -> None:
        self.connection = connection
        self.mapping: Mapping = connection.mapping
        self._secret = secret
        self.client = OdooClient(
            connection.endpoint_url, connection.database, connection.username, secret, timeout, transport
        )
        self._currencies: dict[str, int] = {}
        # res.currency id -> (ISO code, decimal places), for amounts read back.
        self._currency_rows: dict[int, tuple[str, int]] = {}

    async def aclose(self) -> None:
        await self.client.aclose()

    # --- mapping -------------------------------------------------------------------------------
    def _account(self, role: str) -> int:
        value = self.mapping.accounts.get(role, "")
        if not value:
            raise MappingMissing(f"mapping.accounts[{role}] is required")
        return _odoo_id(f"mapping.accounts[{role}]", value)

    def _revenue_account(self, offer: str) -> int:
        value = self.mapping.revenue_account(offer)
        if not value:
            raise MappingMissing("mapping.accounts[revenue] is required")
        return _odoo_id(f"mapping.accounts[revenue:{offer}]", value)

    def _journal(self, role: str) -> int:
        value = self.mapping.journals.get(role, "")
        if not value:
            raise MappingMissing(f"mapping.journals[{role}] is required")
        return _odoo_id(f"mapping.journals[{role}]", value)

    def _taxes(self, tax_code: str, taxed: bool) -> list[object]:
        """The line's taxes as an x2many command: replace with the mapped tax. A code without a
        mapping is allowed only where the bill charges no tax for it (e.g. exempt)."""
        value = self.mapping.taxes.get(tax_code, "")
        if not value:
            if taxed:
                raise MappingMissing(f"mapping.taxes[{tax_code}] is required")
            return [(6, 0, [])]
        return [(6, 0, [_odoo_id(f"mapping.taxes[{tax_code}]", value)])]

    async def _currency(self, code: str) -> int:
        if code not in self._currencies:
            ids = await self.client.search("res.currency", [("name", "=", code)], 1)
            if not ids:
                raise MappingMissing(f"Odoo has no active currency {code}")
            self._currencies[code] = ids[0]
        return self._currencies[code]

    # --- TestConnection --------------------------------------------------------------------------
    async def test(self) -> list[Problem]:
        if not self._secret:
            return [Problem(ProblemKind.CONFIG_INVALID, "an Odoo connection needs a password or API key")]
        try:
            version = await self.client.rpc("common", "version")
            if not isinstance(version, dict) or "server_version" not in version:
                return [Problem(ProblemKind.UNREACHABLE, "the server does not answer as Odoo does")]
            await self.client.login()
        except Unreachable as exc:
            return [Problem(ProblemKind.UNREACHABLE, str(exc))]
        except AuthFailed as exc:
            return [Problem(ProblemKind.AUTH_FAILED, str(exc))]
        except ErpError as exc:
            return [Problem(ProblemKind.ERP_ERROR, str(exc))]
        return [
            Problem(ProblemKind.MAPPING_MISSING, f"mapping.{kind}[{role}] is required")
            for kind, roles, given in (
                ("accounts", ("receivable", "revenue", "cash"), self.mapping.accounts),
                ("journals", ("revenue", "cash"), self.mapping.journals),
            )
            for role in roles
            if not given.get(role)
        ]

    # --- outbound --------------------------------------------------------------------------------
    async def upsert_customer(
        self, account: account_pb2.Account, erp_id: str, contacts: Sequence[contact_pb2.Contact] = ()
    ) -> str:
        """A partner has one email, one phone and one address: each is taken from the customer's
        contacts, billing first, then primary, then the others."""
        values: dict[str, object] = {
            "name": account.display_name or account.account_number,
            "ref": account.account_number,
            "is_company": account.type == account_pb2.ACCOUNT_TYPE_BUSINESS,
            "vat": account.tax_id or False,
            "customer_rank": 1,
        }
        ordered = sorted(contacts, key=lambda c: (_ROLE_ORDER.get(c.role, 2), c.contact_id))
        email = next((c.email for c in ordered if c.WhichOneof("channel") == "email"), "")
        phone = next((c.phone for c in ordered if c.WhichOneof("channel") == "phone"), "")
        values["email"] = email or False
        values["phone"] = phone or False
        postal = next((c.postal_address for c in ordered if c.WhichOneof("channel") == "postal_address"), None)
        if account.personal_data_erased:
            values.update(street=False, street2=False, zip=False, city=False, country_id=False)
        elif postal is not None:
            lines = list(postal.address_lines)
            values.update(
                street=lines[0] if lines else False,
                street2=", ".join(lines[1:]) or False,
                zip=postal.postal_code or False,
                city=postal.locality or False,
            )
            if postal.region_code:
                found = await self.client.search("res.country", [("code", "=", postal.region_code.upper())], 1)
                values["country_id"] = found[0] if found else False
        partner = int(erp_id) if erp_id.isdigit() else 0
        if not partner:
            found = await self.client.search("res.partner", [("ref", "=", account.account_number)], 1)
            partner = found[0] if found else 0
        if partner:
            await self.client.write("res.partner", [partner], values)
            return str(partner)
        return str(await self.client.create("res.partner", values))

    async def _find_move(self, move_type: str, ref: str, partner: int | None = None) -> int:
        domain: list[object] = [("move_type", "=", move_type), ("ref", "=", ref)]
        if partner is not None:
            domain.append(("partner_id", "=", partner))
        found = await self.client.search("account.move", domain, 1)
        return found[0] if found else 0

    async def _post_checked(self, move: int, expected_total: Decimal, what: str) -> None:
        """Posts the draft once Odoo's total is the suite's; a posted one is left as it is."""
        (row,) = await self.client.read("account.move", [move], ["state", "amount_total"])
        if row["state"] != "draft":
            return
        total = _decimal(row["amount_total"])
        if total != expected_total:
            raise Rejected(
                f"Odoo computes {total} for {what}, the suite {expected_total}: left in draft "
                "(check the taxes' mapping and the company's tax rounding, 'Round Globally')"
            )
        await self.client.execute("account.move", "action_post", [move])

    async def post_invoice(self, bill: bill_pb2.Bill, party: str) -> str:
        partner = int(party)
        reference = bill.bill_number or bill.bill_id
        move = await self._find_move("out_invoice", reference, partner)
        if not move:
            taxed = {tax.tax_code for tax in bill.taxes if from_money(tax.tax_amount) != 0}
            lines = [
                self._line(
                    line.charge_offer_code,
                    f"{line.charge_offer_code} / {line.charge_code} ({line.tax_code}), quantity {line.quantity}",
                    from_money(line.amount),
                    self._taxes(line.tax_code, line.tax_code in taxed),
                )
                for line in bill.lines
            ]
            move = await self.client.create(
                "account.move",
                {
                    "move_type": "out_invoice",
                    "partner_id": partner,
                    "ref": reference,
                    "invoice_date": _date(bill.issue_date),
                    "invoice_date_due": _date(bill.due_date) if bill.due_date.year else False,
                    "journal_id": self._journal("revenue"),
                    "currency_id": await self._currency(bill.currency_code),
                    "invoice_line_ids": lines,
                },
            )
        await self._post_checked(move, from_money(bill.total), f"bill {reference}")
        return str(move)

    def _line(self, offer: str, name: str, amount: Decimal, taxes: list[object]) -> tuple[int, int, dict[str, object]]:
        # One unit at the line's exact amount (a unit price derived from it might not be exact).
        values: dict[str, object] = {
            "name": name,
            "quantity": 1,
            "price_unit": _number(amount),
            "account_id": self._revenue_account(offer),
            "tax_ids": taxes,
        }
        product = self.mapping.products.get(offer, "")
        if product:
            values["product_id"] = _odoo_id(f"mapping.products[{offer}]", product)
        return (0, 0, values)

    async def post_credit_note(
        self, note: credit_note_pb2.CreditNote, party: str, bill: bill_pb2.Bill | None = None
    ) -> str:
        """Odoo's credit note is an out_refund with positive amounts, linked to its invoice."""
        partner = int(party)
        reference = note.credit_note_number or note.credit_note_id
        move = await self._find_move("out_refund", reference, partner)
        if not move:
            taxed = {line.tax_code for line in note.lines} if from_money(note.tax_total) != 0 else set()
            if bill is not None:
                taxed = {tax.tax_code for tax in bill.taxes if from_money(tax.tax_amount) != 0} & taxed
            lines = [
                self._line(
                    line.charge_offer_code,
                    f"Credit of bill line {line.bill_line_number}: {line.charge_offer_code} / {line.charge_code}",
                    from_money(line.amount),
                    self._taxes(line.tax_code, line.tax_code in taxed),
                )
                for line in note.lines
            ]
            values: dict[str, object] = {
                "move_type": "out_refund",
                "partner_id": partner,
                "ref": reference,
                "invoice_date": _date(note.issue_date),
                "journal_id": self._journal("revenue"),
                "currency_id": await self._currency(note.currency_code),
                "invoice_line_ids": lines,
            }
            if bill is not None:
                invoice = await self._find_move("out_invoice", bill.bill_number or bill.bill_id, partner)
                if invoice:
                    values["reversed_entry_id"] = invoice
            move = await self.client.create("account.move", values)
        await self._post_checked(move, from_money(note.total), f"credit note {reference}")
        return str(move)

    async def record_payment(
        self, payment: payment_pb2.Payment, party: str, allocations: Sequence[InvoiceAllocation]
    ) -> str:
        """An inbound customer payment in the cash journal, posted, its receivable line assigned to
        the invoices billing allocated it to, by those amounts (see _assign_allocations); the rest
        stays the partner's outstanding credit."""
        partner = int(party)
        marker = f"{PAYMENT_MARK}{payment.payment_id}"
        found = await self.client.search("account.payment", [("ref", "=", marker)], 1)
        if found:
            record = found[0]
        else:
            record = await self.client.create(
                "account.payment",
                {
                    "payment_type": "inbound",
                    "partner_type": "customer",
                    "partner_id": partner,
                    "amount": _number(from_money(payment.amount)),
                    "currency_id": await self._currency(payment.amount.currency_code),
                    "date": payment.received_time.ToDatetime(tzinfo=dt.UTC).date().isoformat(),
                    "journal_id": self._journal("cash"),
                    "ref": marker,
                },
            )
        (row,) = await self.client.read("account.payment", [record], ["state", "move_id"])
        if row["state"] == "draft":
            await self.client.execute("account.payment", "action_post", [record])
        await self._assign_allocations(_many2one(row["move_id"]), allocations)
        return str(record)

    async def allocate_credit(
        self,
        payment: payment_pb2.Payment,
        party: str,
        payment_erp_id: str,
        sequence: int,
        allocations: Sequence[InvoiceAllocation],
    ) -> str:
        """A later application of the payment's credit to new invoices: its receivable line, still
        open by that credit, assigned to them as billing allocated it. Returns the payment's id
        (the allocation is the payment's reconciliation with the invoices)."""
        record = int(payment_erp_id) if payment_erp_id.isdigit() else 0
        if not record:
            found = await self.client.search("account.payment", [("ref", "=", f"{PAYMENT_MARK}{payment.payment_id}")])
            if not found:
                raise Rejected(f"Odoo has no payment {payment.payment_id} to allocate")
            record = found[0]
        (row,) = await self.client.read("account.payment", [record], ["state", "move_id"])
        if row["state"] != "posted":
            raise Rejected(f"Odoo's payment {record} is {row['state']}: its credit cannot be allocated")
        await self._assign_allocations(_many2one(row["move_id"]), allocations)
        return str(record)

    async def allocate_credit_note(
        self,
        note: credit_note_pb2.CreditNote,
        party: str,
        note_erp_id: str,
        sequence: int,
        allocations: Sequence[InvoiceAllocation],
    ) -> str:
        """An application of the credit note's credit (at issue to its own bill's invoice, later to
        new ones): the out_refund's receivable line, still open by that credit, assigned to the
        invoices as billing allocated it, as a payment's is (_assign_allocations). Returns the
        credit note's id (the allocation is its reconciliation with the invoices)."""
        reference = note.credit_note_number or note.credit_note_id
        # Without the note's Odoo id (a job from before it was kept), its out_refund by reference,
        # of this partner only: another customer's credit note may carry the same number.
        partner = int(party) if party.isdigit() else None
        refund = int(note_erp_id) if note_erp_id.isdigit() else await self._find_move("out_refund", reference, partner)
        rows = await self.client.read("account.move", [refund], ["state"]) if refund else []
        if not rows or rows[0]["state"] != "posted":
            raise Rejected(f"Odoo has no posted credit note {reference}: its credit cannot be allocated")
        # A later allocation refused because more of the note is open in Odoo than billing left of
        # it: its allocation at issue never reached Odoo (docs/erp_gateway.md, "Credit notes as
        # billing allocated them", Upgrading); the message says what the bookkeeper does.
        hint = (
            f"credit note {reference} may have more credit open in Odoo than billing left of it: if it was"
            " issued before billing's migration 0013, or its own bill is not in Odoo, its share for its own"
            " bill was never allocated here; a bookkeeper must reconcile that share of the credit note by"
            " hand in Odoo, then retry this job (RetrySyncJob)"
        )
        await self._assign_allocations(refund, allocations, hint if sequence > 1 else "")
        return str(refund)

    async def _assign_allocations(
        self, move: int, allocations: Sequence[InvoiceAllocation], refused_hint: str = ""
    ) -> None:
        """The payment entry's receivable line reconciled with each invoice, in billing's order, by
        billing's amount, through account.move's js_assign_outstanding_line (Odoo's own "Add" of an
        outstanding credit on an invoice; account.partial.reconcile records cannot be created
        through the API). Odoo reconciles as much as both still owe: min(what is left of the
        payment, what the invoice owes). Billing gives each bill all it owes or all that is left,
        so that is billing's amount whenever Odoo's invoices owe what billing's bills do; an invoice
        that owes less in Odoo takes what it owes (the rest stays outstanding credit, as in Tryton);
        one that owes more while more is left of the payment is refused (Odoo would apply more than
        billing did; `refused_hint` then says what to do). An invoice the line is reconciled with
        already is done (a retry). A credit note's (out_refund's) receivable line is assigned the
        same way."""
        lines = await self.client.search(
            "account.move.line", [("move_id", "=", move), ("account_type", "=", "asset_receivable")]
        )
        if len(lines) != 1:
            raise Rejected(f"Odoo's entry {move} has {len(lines)} receivable lines, not one")
        line = lines[0]
        (row,) = await self.client.read("account.move.line", [line], ["amount_residual", "matched_debit_ids"])
        done: set[int] = set()
        if row["matched_debit_ids"]:
            partials = await self.client.read("account.partial.reconcile", row["matched_debit_ids"], ["debit_move_id"])
            debits = [_many2one(p["debit_move_id"]) for p in partials]
            done = {_many2one(d["move_id"]) for d in await self.client.read("account.move.line", debits, ["move_id"])}
        left = -_decimal(row["amount_residual"])  # a credit's residual is negative
        for allocation in allocations:
            invoice = _odoo_id(f"invoice of bill {allocation.bill_id}", allocation.invoice)
            if invoice in done:
                continue
            (owed_row,) = await self.client.read("account.move", [invoice], ["amount_residual", "state"])
            owed = _decimal(owed_row["amount_residual"]) if owed_row["state"] == "posted" else Decimal(0)
            if owed <= 0 or left <= 0:
                continue
            if min(left, owed) > allocation.amount:
                raise Rejected(
                    f"Odoo's invoice {invoice} owes {owed} and {left} of the credit is open: Odoo would apply"
                    f" {min(left, owed)}, billing allocated {allocation.amount} (bill {allocation.bill_id})"
                    + (f"; {refused_hint}" if refused_hint else "")
                )
            await self.client.execute("account.move", "js_assign_outstanding_line", [invoice], line)
            (row,) = await self.client.read("account.move.line", [line], ["amount_residual"])
            left = -_decimal(row["amount_residual"])

    async def _assign(self, move: int, partner: int, preferred: Sequence[int]) -> None:
        """Reconciles the move's receivable line with the partner's open invoices (`preferred`
        first, then oldest first) until nothing of it is left; what is reconciled already stays."""
        lines = await self.client.search(
            "account.move.line",
            [("move_id", "=", move), ("account_type", "=", "asset_receivable"), ("reconciled", "=", False)],
        )
        if not lines:
            return
        invoices = await self.client.search(
            "account.move",
            [
                ("move_type", "=", "out_invoice"),
                ("partner_id", "=", partner),
                ("state", "=", "posted"),
                ("payment_state", "in", ["not_paid", "partial"]),
            ],
            0,
            "invoice_date asc, id asc",
        )
        invoices.sort(key=lambda i: 0 if i in preferred else 1)
        for line in lines:
            for invoice in invoices:
                (row,) = await self.client.read("account.move.line", [line], ["amount_residual"])
                if _decimal(row["amount_residual"]) == 0:
                    break
                await self.client.execute("account.move", "js_assign_outstanding_line", [invoice], line)

    async def reverse_payment(self, payment: payment_pb2.Payment, party: str, payment_erp_id: str) -> str:
        """Back to draft (which undoes its reconciliations: the invoices are open again), then
        cancelled, as Odoo's own buttons do."""
        record = int(payment_erp_id) if payment_erp_id.isdigit() else 0
        if not record:
            found = await self.client.search("account.payment", [("ref", "=", f"{PAYMENT_MARK}{payment.payment_id}")])
            if not found:
                raise Rejected(f"Odoo has no payment {payment.payment_id} to reverse")
            record = found[0]
        (row,) = await self.client.read("account.payment", [record], ["state"])
        if row["state"] == "cancel" or row["state"] == "canceled":
            return str(record)
        if row["state"] != "draft":
            await self.client.execute("account.payment", "action_draft", [record])
        await self.client.execute("account.payment", "action_cancel", [record])
        return str(record)

    async def write_off(self, entry: ledger_pb2.LedgerEntry, party: str, invoices: Sequence[str]) -> str:
        """A journal entry debiting the write-off account and crediting the partner's receivable,
        posted and assigned to its open invoices (the written-off bill's first)."""
        partner = int(party)
        marker = f"{WRITE_OFF_MARK}{entry.entry_id}"
        amount = -from_money(entry.amount)  # the entry is a credit: the amount given up is its opposite
        move = await self._find_move("entry", marker)
        if not move:
            journal = self._journal("write_off" if self.mapping.journals.get("write_off") else "general")
            move = await self.client.create(
                "account.move",
                {
                    "move_type": "entry",
                    "ref": marker,
                    "date": entry.effective_time.ToDatetime(tzinfo=dt.UTC).date().isoformat(),
                    "journal_id": journal,
                    "line_ids": [
                        (
                            0,
                            0,
                            {
                                "name": f"Write-off {entry.reason_code or entry.source_type}".strip(),
                                "account_id": self._account("write_off"),
                                "debit": _number(amount),
                                "credit": 0,
                            },
                        ),
                        (
                            0,
                            0,
                            {
                                "name": marker,
                                "account_id": self._account("receivable"),
                                "partner_id": partner,
                                "debit": 0,
                                "credit": _number(amount),
                            },
                        ),
                    ],
                },
            )
        (row,) = await self.client.read("account.move", [move], ["state"])
        if row["state"] == "draft":
            await self.client.execute("account.move", "action_post", [move])
        await self._assign(move, partner, [int(i) for i in invoices if i.isdigit()])
        return str(move)

    async def refer_case(
        self,
        referral: collections_events_pb2.CollectionsCaseReferred,
        referral_id: str,
        party: str,
        invoices: Sequence[str],
    ) -> str:
        """The partner gets the agency's category (so Odoo's lists filter the referred customers)
        and a note in its chatter with the referral: agency, case, overdue amount, the referred
        invoices. Returns the note's id (mail.message); a retry finds the note by its marker."""
        partner = int(party)
        agency = referral.agency or "unnamed"
        category = await self._partner_category(REFERRAL_CATEGORY.format(agency=agency))
        (row,) = await self.client.read("res.partner", [partner], ["category_id"])
        if category not in row["category_id"]:
            await self.client.write("res.partner", [partner], {"category_id": [(4, category, 0)]})
        marker = f"{REFERRAL_MARK}{referral_id}"
        found = await self.client.search(
            "mail.message", [("model", "=", "res.partner"), ("res_id", "=", partner), ("body", "like", marker)], 1
        )
        if found:
            return str(found[0])
        names = await self._invoice_names([int(i) for i in invoices if i.isdigit()])
        # Plain text, one sentence per fact: it reads the same however Odoo lays the body out.
        body = " ".join(referral_note(referral, referral_id, names))
        note = await self.client.execute(
            "res.partner", "message_post", [partner], body=body, message_type="comment", subtype_xmlid="mail.mt_note"
        )
        # message_post answers the new mail.message's id over the API.
        return str(note[0] if isinstance(note, list) else note)

    async def _partner_category(self, name: str) -> int:
        found = await self.client.search("res.partner.category", [("name", "=", name), ("parent_id", "=", False)], 1)
        return found[0] if found else await self.client.create("res.partner.category", {"name": name})

    async def _invoice_names(self, invoices: Sequence[int]) -> list[str]:
        rows = await self.client.read("account.move", invoices, ["name", "ref"])
        return [f"{row['name']} (bill {row['ref']})" if row["ref"] else str(row["name"]) for row in rows]

    async def post_journal(self, journal: Journal, on: dt.date, reference: str) -> str:
        marker = f"{JOURNAL_MARK}{reference}"
        move = await self._find_move("entry", marker)
        if not move:
            lines: list[object] = []
            for line in journal.lines:
                if not line.account:
                    raise MappingMissing(f"mapping.accounts[{line.role}] is required to post the journal")
                lines.append(
                    (
                        0,
                        0,
                        {
                            "name": f"{line.role} {line.charge_offer_code}".strip(),
                            "account_id": _odoo_id(f"mapping.accounts[{line.role}]", line.account),
                            "debit": _number(line.debit),
                            "credit": _number(line.credit),
                        },
                    )
                )
            move = await self.client.create(
                "account.move",
                {
                    "move_type": "entry",
                    "ref": marker,
                    "date": on.isoformat(),
                    "journal_id": self._journal("general"),
                    "line_ids": lines,
                },
            )
        (row,) = await self.client.read("account.move", [move], ["state"])
        if row["state"] == "draft":
            await self.client.execute("account.move", "action_post", [move])
        return str(move)

    async def payments_since(
        self, cursor: tuple[str, int] | None, limit: int
    ) -> tuple[list[ErpPayment], tuple[str, int] | None]:
        """Posted inbound customer payments, by their journal entry's (write_date, id), oldest
        first; the cursor is the last entry of the page.

        Why the entry's write date and not the payment's id: a payment gets its id when it is
        created as a draft and is posted later (Odoo's action_post posts its account.move and
        leaves the payment row itself unwritten), so an id cursor would pass over a draft that
        is posted after a newer payment was read. Posting writes the entry, so its write_date
        moves to the posting; any later write (a reconciliation, a reset to draft and re-post)
        only shows the payment again, and the gateway skips what it imported. Odoo stamps
        write_date at its transaction's start: each poll also reads IMPORT_LOOKBACK behind the
        cursor (without a limit: a bounded window), while the page proper is strictly after the
        cursor, so a full page always moves it on."""
        base: list[object] = [
            ("state", "=", "posted"),
            ("payment_id.payment_type", "=", "inbound"),
            ("payment_id.partner_type", "=", "customer"),
        ]
        fields = ["write_date", "payment_id", "commercial_partner_id"]
        order = "write_date asc, id asc"
        entries: dict[int, dict[str, Any]] = {}
        if cursor is None:
            page = await self._search_read("account.move", base, fields, limit, order)
        else:
            stamp, last_id = cursor
            since = (dt.datetime.strptime(stamp, ODOO_DATETIME) - IMPORT_LOOKBACK).strftime(ODOO_DATETIME)
            window = [("write_date", ">=", since), ("write_date", "<=", stamp)]
            for row in await self._search_read("account.move", [*base, *window], fields, 0, order):
                entries[int(row["id"])] = row
            after = ["|", ("write_date", ">", stamp), "&", ("write_date", "=", stamp), ("id", ">", last_id)]
            page = await self._search_read("account.move", [*base, *after], fields, limit, order)
        last = cursor
        for row in page:
            entries[int(row["id"])] = row
            if last is None or (row["write_date"], int(row["id"])) > last:
                last = (str(row["write_date"]), int(row["id"]))
        ordered = sorted(entries.values(), key=lambda row: (row["write_date"], int(row["id"])))
        by_payment = {_many2one(row["payment_id"]): row for row in ordered if _many2one(row["payment_id"])}
        wanted = ["ref", "partner_id", "amount", "currency_id"]
        rows = await self.client.read("account.payment", list(by_payment), wanted)
        payments = []
        for payment in rows:
            entry = by_payment[int(payment["id"])]
            if (payment["ref"] or "").startswith(OWN_MARK):
                continue  # sent by the gateway: the suite has it already
            party = _many2one(entry["commercial_partner_id"]) or _many2one(payment["partner_id"])
            if not party:
                continue  # nobody's payment: no customer to credit
            code, places = await self._currency_of(_many2one(payment["currency_id"]))
            payments.append(
                ErpPayment(
                    erp_id=str(payment["id"]),
                    party=str(party),
                    amount_text=str(_exact(payment["amount"], places)),
                    currency_code=code,
                    cursor=(str(entry["write_date"]), int(entry["id"])),
                )
            )
        return payments, last

    async def _search_read(
        self, model: str, domain: list[object], fields: Sequence[str], limit: int, order: str
    ) -> list[dict[str, Any]]:
        kwargs: dict[str, object] = {"fields": list(fields), "order": order}
        if limit:
            kwargs["limit"] = limit
        return list(await self.client.execute(model, "search_read", domain, **kwargs))

    async def _currency_of(self, currency: int) -> tuple[str, int]:
        """(ISO code, decimal places) of an Odoo currency."""
        if currency not in self._currency_rows:
            rows = await self.client.read("res.currency", [currency], ["name", "decimal_places"])
            if not rows:
                raise Rejected(f"Odoo has no currency {currency}")
            self._currency_rows[currency] = (str(rows[0]["name"]), int(rows[0]["decimal_places"]))
        return self._currency_rows[currency]
