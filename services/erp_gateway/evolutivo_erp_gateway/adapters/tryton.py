"""Tryton over its JSON-RPC interface (what the Tryton clients speak), with httpx.

Every write is made findable by a reference of ours before it is made, so that a retry after a
crash finds the record instead of creating a second one:
  parties   code = the account number;
  invoices  reference = the bill number (credit notes: the credit note number), type out;
  payments  account.move description = "evolutivo:payment:<payment id>";
  later allocations of a payment's credit: account.move description =
            "evolutivo:payment_allocation:<payment id>:<sequence>";
  allocations of a credit note's credit: account.move description =
            "evolutivo:credit_note_allocation:<credit note id>:<sequence>";
  reversals account.move description = "evolutivo:payment_reversal:<payment id>";
  write-offs account.move description = "evolutivo:write_off:<ledger entry id>";
  referrals ir.note on the party whose message starts "evolutivo:referral:<referral id>";
  contacts  party.contact_mechanism comment = "evolutivo:contact:<contact id>";
  journals  account.move description = "evolutivo:journal:<reference>".
Tryton runs each RPC call in its own transaction, so a record is created whole or not at all; a
crash between "create" and "post" leaves a draft that the retry finds and posts.
"""

from __future__ import annotations

import base64
import datetime as dt
import itertools
import json
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
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
ALLOCATION_MARK = "evolutivo:payment_allocation:"
CREDIT_NOTE_ALLOCATION_MARK = "evolutivo:credit_note_allocation:"
REVERSAL_MARK = "evolutivo:payment_reversal:"
WRITE_OFF_MARK = "evolutivo:write_off:"
CONTACT_MARK = "evolutivo:contact:"
JOURNAL_MARK = "evolutivo:journal:"
# Postal addresses in this order: the first is the invoice address.
_ADDRESS_ROLES = {contact_pb2.CONTACT_ROLE_BILLING: 0, contact_pb2.CONTACT_ROLE_PRIMARY: 1}
# Tryton stamps write_date with its transaction's start: a transaction that began before the last
# seen stamp may commit after the poll. The poll looks back this far and skips what it imported.
IMPORT_LOOKBACK = dt.timedelta(minutes=2)


# --- Tryton's JSON: Decimal, date and datetime travel as {"__class__": ...} objects -------------
def _encode(value: object) -> object:
    if isinstance(value, Decimal):
        return {"__class__": "Decimal", "decimal": str(value)}
    if isinstance(value, dt.datetime):
        return {
            "__class__": "datetime",
            "year": value.year,
            "month": value.month,
            "day": value.day,
            "hour": value.hour,
            "minute": value.minute,
            "second": value.second,
            "microsecond": value.microsecond,
        }
    if isinstance(value, dt.date):
        return {"__class__": "date", "year": value.year, "month": value.month, "day": value.day}
    if isinstance(value, (set, frozenset)):
        return list(value)
    raise TypeError(f"{type(value).__name__} is not JSON for Tryton")


def _decode(obj: dict[str, Any]) -> object:
    kind = obj.get("__class__")
    if kind == "Decimal":
        return Decimal(obj["decimal"])
    if kind == "datetime":
        return dt.datetime(
            obj["year"], obj["month"], obj["day"], obj["hour"], obj["minute"], obj["second"], obj["microsecond"]
        )
    if kind == "date":
        return dt.date(obj["year"], obj["month"], obj["day"])
    if kind == "bytes":
        return base64.decodebytes(obj["base64"].encode())
    return obj


class _Unauthorized(Exception):
    pass


class _Warning(Exception):
    def __init__(self, name: str, message: str) -> None:
        super().__init__(message)
        self.name = name


class TrytonClient:
    """JSON-RPC calls on one Tryton database, logged in as the connection's user."""

    def __init__(
        self, url: str, username: str, password: str, timeout: float, transport: httpx.AsyncBaseTransport | None = None
    ) -> None:
        # The connection's URL is the database's (http://host:8000/<db>/); Tryton 8 serves its
        # JSON-RPC under <db>/rpc/.
        self.url = (url if url.endswith("/") else url + "/") + "rpc/"
        self._username = username
        self._password = password
        self._http = httpx.AsyncClient(timeout=timeout, transport=transport)
        self._ids = itertools.count(1)
        self._user_id: int | None = None
        self._session = ""
        self.context: dict[str, Any] = {}

    async def aclose(self) -> None:
        await self._http.aclose()

    async def _post(self, method: str, params: Sequence[object], auth: bool = True) -> Any:
        headers = {"Content-Type": "application/json"}
        if auth:
            token = base64.b64encode(f"{self._username}:{self._user_id}:{self._session}".encode()).decode()
            headers["Authorization"] = f"Session {token}"
        body = json.dumps({"id": next(self._ids), "method": method, "params": list(params)}, default=_encode)
        try:
            response = await self._http.post(self.url, content=body, headers=headers)
        except httpx.HTTPError as exc:
            raise Unreachable(f"Tryton at {self.url} did not answer: {type(exc).__name__}") from None
        if response.status_code in (401, 403):
            raise _Unauthorized(response.status_code)
        if response.status_code == 404:
            raise Unreachable(f"Tryton at {self.url}: no such database (HTTP 404)")
        if response.status_code == 429:
            raise Unreachable("Tryton refused the login: too many attempts (HTTP 429)")
        if response.status_code >= 400:
            raise Unreachable(f"Tryton at {self.url} answered HTTP {response.status_code}")
        try:
            data = json.loads(response.text, object_hook=_decode)
        except ValueError:
            raise Unreachable(f"{self.url} does not answer Tryton's JSON-RPC") from None
        error = data.get("error") if isinstance(data, dict) else None
        if error:
            raise _error(error)
        if not isinstance(data, dict) or "result" not in data:
            raise Unreachable(f"{self.url} does not answer Tryton's JSON-RPC")
        return data["result"]

    async def login(self) -> None:
        try:
            result = await self._post("common.db.login", [self._username, {"password": self._password}, "en"], False)
        except _Unauthorized:
            raise AuthFailed(f"Tryton refused the login of {self._username!r}") from None
        if not result:
            raise AuthFailed(f"Tryton refused the login of {self._username!r}")
        self._user_id, self._session = int(result[0]), str(result[1])
        # The user's preferences are the context Tryton's own clients send (company, language...).
        self.context = await self._post("model.res.user.get_preferences", [True, {}])

    async def call(self, method: str, *params: object, context: dict[str, Any] | None = None) -> Any:
        if self._user_id is None:
            await self.login()
        for _ in range(4):
            try:
                return await self._post(method, [*params, {**self.context, **(context or {})}])
            except _Unauthorized:
                # The session expired, or the call wants a fresh one (Tryton's posting does).
                await self.login()
            except _Warning as warning:
                # A warning is a question to a person (e.g. "invoice dated in the future"); the
                # gateway's records are the suite's facts, so it answers yes, once, as a client would.
                await self._post(
                    "model.res.user.warning.create",
                    [[{"user": self._user_id, "name": warning.name, "always": False}], self.context],
                )
        raise Rejected(f"Tryton kept refusing {method}")

    # Conveniences over the ORM methods every model serves.
    async def search(
        self, model: str, domain: list[object], limit: int | None = None, order: object = None
    ) -> list[int]:
        return list(await self.call(f"model.{model}.search", domain, 0, limit, order))

    async def read(self, model: str, ids: Sequence[int], fields: Sequence[str]) -> list[dict[str, Any]]:
        rows = await self.call(f"model.{model}.read", list(ids), list(fields))
        by_id = {row["id"]: row for row in rows}
        return [by_id[i] for i in ids if i in by_id]

    async def create(self, model: str, values: dict[str, object]) -> int:
        (record_id,) = await self.call(f"model.{model}.create", [values])
        return int(record_id)

    async def write(self, model: str, ids: Sequence[int], values: dict[str, object]) -> None:
        await self.call(f"model.{model}.write", list(ids), values)

    async def delete(self, model: str, ids: Sequence[int]) -> None:
        await self.call(f"model.{model}.delete", list(ids))


def _error(error: Any) -> Exception:
    kind = error[0] if isinstance(error, list) and error else ""
    args = error[1] if isinstance(error, list) and len(error) > 1 else []
    if kind == "UserWarning" and isinstance(args, list) and args:
        return _Warning(str(args[0]), str(args[1] if len(args) > 1 else args[0]))
    if kind in ("UserError", "AccessError", "RequiredValidationError", "DomainValidationError") or kind.endswith(
        "Error"
    ):
        message = args[0] if isinstance(args, list) and args else args
        return Rejected(f"Tryton: {message}")
    if kind == "LoginException":
        return AuthFailed("Tryton asks for more than a password to log in")
    return Rejected(f"Tryton: {str(error)[:300]}")


def _date(value: date_pb2.Date) -> dt.date:
    return dt.date(value.year, value.month, value.day)


def _tryton_id(field: str, value: str) -> int:
    if not value.isdigit():
        raise MappingMissing(f"{field}: {value!r} is not a Tryton id")
    return int(value)


class TrytonAdapter:
    def __init__(
        self, connection: Connection, password: str, timeout: float, transport: httpx.AsyncBaseTransport | None = None
    ) -> None:
        self.connection = connection
        self.mapping: Mapping = connection.mapping
        self.client = TrytonClient(connection.endpoint_url, connection.username, password, timeout, transport)
        self._tax_accounts: dict[int, tuple[int, int]] = {}
        self._currencies: dict[str, int] = {}

    async def aclose(self) -> None:
        await self.client.aclose()

    # --- mapping -------------------------------------------------------------------------------
    def _account(self, role: str) -> int:
        value = self.mapping.accounts.get(role, "")
        if not value:
            raise MappingMissing(f"mapping.accounts[{role}] is required")
        return _tryton_id(f"mapping.accounts[{role}]", value)

    def _revenue_account(self, offer: str) -> int:
        value = self.mapping.revenue_account(offer)
        if not value:
            raise MappingMissing("mapping.accounts[revenue] is required")
        return _tryton_id(f"mapping.accounts[revenue:{offer}]", value)

    def _journal(self, role: str) -> int:
        value = self.mapping.journals.get(role, "")
        if not value:
            raise MappingMissing(f"mapping.journals[{role}] is required")
        return _tryton_id(f"mapping.journals[{role}]", value)

    def _tax(self, tax_code: str) -> int:
        value = self.mapping.taxes.get(tax_code, "")
        if not value:
            raise MappingMissing(f"mapping.taxes[{tax_code}] is required")
        return _tryton_id(f"mapping.taxes[{tax_code}]", value)

    async def _tax_account(self, tax: int, credit_note: bool) -> int:
        if tax not in self._tax_accounts:
            rows = await self.client.read("account.tax", [tax], ["invoice_account", "credit_note_account"])
            if not rows:
                raise MappingMissing(f"mapping.taxes: no tax {tax} in Tryton")
            self._tax_accounts[tax] = (rows[0]["invoice_account"], rows[0]["credit_note_account"])
        invoice_account, credit_note_account = self._tax_accounts[tax]
        return credit_note_account if credit_note else invoice_account

    async def _currency(self, code: str) -> int:
        if code not in self._currencies:
            ids = await self.client.search("currency.currency", [("code", "=", code)], 1)
            if not ids:
                raise MappingMissing(f"Tryton has no currency {code}")
            self._currencies[code] = ids[0]
        return self._currencies[code]

    # --- TestConnection --------------------------------------------------------------------------
    async def test(self) -> list[Problem]:
        try:
            await self.client.login()
        except Unreachable as exc:
            return [Problem(ProblemKind.UNREACHABLE, str(exc))]
        except AuthFailed as exc:
            return [Problem(ProblemKind.AUTH_FAILED, str(exc))]
        except ErpError as exc:
            return [Problem(ProblemKind.ERP_ERROR, str(exc))]
        problems = [
            Problem(ProblemKind.MAPPING_MISSING, f"mapping.{kind}[{role}] is required")
            for kind, roles, given in (
                ("accounts", ("receivable", "revenue", "cash"), self.mapping.accounts),
                ("journals", ("revenue", "cash"), self.mapping.journals),
            )
            for role in roles
            if not given.get(role)
        ]
        checks = (
            ("accounts", "account.account", self.mapping.accounts),
            ("journals", "account.journal", self.mapping.journals),
            ("taxes", "account.tax", self.mapping.taxes),
            ("products", "product.product", self.mapping.products),
            ("customers", "party.party", self.mapping.customers),
        )
        for kind, model, entries in checks:
            ids: dict[str, int] = {}
            for key, value in entries.items():
                if value.isdigit():
                    ids[key] = int(value)
                else:
                    problems.append(
                        Problem(ProblemKind.MAPPING_MISSING, f"mapping.{kind}[{key}]: {value!r} is not a Tryton id")
                    )
            if not ids:
                continue
            try:
                found = set(await self.client.search(model, [("id", "in", sorted(set(ids.values())))]))
            except ErpError as exc:
                problems.append(Problem(ProblemKind.ERP_ERROR, f"reading {model}: {exc}"))
                continue
            problems += [
                Problem(ProblemKind.MAPPING_MISSING, f"mapping.{kind}[{key}]: no {model} {value} in Tryton")
                for key, value in ids.items()
                if value not in found
            ]
        return problems

    # --- outbound --------------------------------------------------------------------------------
    async def upsert_customer(
        self, account: account_pb2.Account, erp_id: str, contacts: Sequence[contact_pb2.Contact] = ()
    ) -> str:
        """The party: name, code (the account number, its lookup), the tax id as an identifier,
        emails and phones as contact mechanisms, postal contacts as addresses (the billing one
        first, marked for invoices)."""
        name = account.display_name or account.account_number
        party = int(erp_id) if erp_id.isdigit() else 0
        if not party:
            found = await self.client.search("party.party", [("code", "=", account.account_number)], 1)
            party = found[0] if found else 0
        if party:
            await self.client.write("party.party", [party], {"name": name})
        else:
            party = await self.client.create(
                "party.party", {"name": name, "code": account.account_number, "addresses": [("create", [{}])]}
            )
        await self._sync_tax_identifier(party, account.tax_id)
        await self._sync_contact_mechanisms(party, contacts)
        if account.personal_data_erased:
            await self._erase_addresses(party)
        else:
            await self._sync_addresses(party, [c for c in contacts if c.HasField("postal_address")])
        return str(party)

    async def _erase_addresses(self, party: int) -> None:
        """Erased personal data: the party's addresses keep their records (posted invoices point at
        them) without their content."""
        (row,) = await self.client.read("party.party", [party], ["addresses"])
        if row["addresses"]:
            blank: dict[str, object] = {
                "street": "",
                "postal_code": "",
                "city": "",
                "attn": "",
                "party_name": "",
                "country": None,
            }
            await self.client.write("party.address", row["addresses"], blank)

    async def _sync_tax_identifier(self, party: int, tax_id: str) -> None:
        """The account's tax id is the party's one untyped identifier (the customer service has
        validated it; typed identifiers an ERP user added are left alone)."""
        ids = await self.client.search("party.identifier", [("party", "=", party), ("type", "=", None)])
        rows = await self.client.read("party.identifier", ids, ["code"]) if ids else []
        keep = next((row["id"] for row in rows if row["code"] == tax_id), 0) if tax_id else 0
        if tax_id and not keep:
            if rows:
                keep = rows[0]["id"]
                await self.client.write("party.identifier", [keep], {"code": tax_id})
            else:
                await self.client.create("party.identifier", {"party": party, "code": tax_id})
        surplus = [row["id"] for row in rows if row["id"] != keep]
        if surplus:
            await self.client.delete("party.identifier", surplus)

    async def _sync_contact_mechanisms(self, party: int, contacts: Sequence[contact_pb2.Contact]) -> None:
        """Emails and phones, each marked with its contact's id so that an update or a removal finds
        it; the party's other contact mechanisms are the ERP's own and are left alone."""
        wanted: dict[str, dict[str, object]] = {}
        for contact in contacts:
            channel = contact.WhichOneof("channel")
            if channel in ("email", "phone"):
                wanted[f"{CONTACT_MARK}{contact.contact_id}"] = {
                    "type": channel,
                    "value": getattr(contact, channel),
                    "name": contact.name,
                }
        ids = await self.client.search(
            "party.contact_mechanism", [("party", "=", party), ("comment", "like", f"{CONTACT_MARK}%")]
        )
        existing = await self.client.read("party.contact_mechanism", ids, ["type", "value", "name", "comment"])
        by_mark = {row["comment"]: row for row in existing}
        for mark, values in wanted.items():
            row = by_mark.get(mark)
            if row is None:
                await self.client.create("party.contact_mechanism", {**values, "party": party, "comment": mark})
            elif any(row[key] != value for key, value in values.items()):
                await self.client.write("party.contact_mechanism", [row["id"]], values)
        gone = [row["id"] for row in existing if row["comment"] not in wanted]
        if gone:
            await self.client.delete("party.contact_mechanism", gone)

    async def _sync_addresses(self, party: int, postal: Sequence[contact_pb2.Contact]) -> None:
        """The postal contacts become the party's addresses in order (billing, primary, others), the
        first marked as the invoice address; addresses beyond them are deactivated (posted invoices
        may point at them). Without postal contacts the addresses are left as they are."""
        if not postal:
            return
        ordered = sorted(postal, key=lambda c: (_ADDRESS_ROLES.get(c.role, 2), c.contact_id))
        (row,) = await self.client.read("party.party", [party], ["addresses"])
        current: list[int] = list(row["addresses"])
        for index, contact in enumerate(ordered):
            values = await self._address_values(contact, invoice=index == 0)
            if index < len(current):
                await self.client.write("party.address", [current[index]], values)
            else:
                await self.client.create("party.address", {**values, "party": party})
        surplus = current[len(ordered) :]
        if surplus:
            await self.client.write("party.address", surplus, {"active": False})

    async def _address_values(self, contact: contact_pb2.Contact, invoice: bool) -> dict[str, object]:
        address = contact.postal_address
        values: dict[str, object] = {
            "street": "\n".join(address.address_lines),
            "postal_code": address.postal_code,
            "city": address.locality,
            "attn": contact.name or ", ".join(address.recipients),
            "invoice": invoice,
        }
        if address.organization:
            values["party_name"] = address.organization
        # Tryton's countries are data its administrator loads; without the country the rest goes.
        if address.region_code:
            found = await self.client.search("country.country", [("code", "=", address.region_code.upper())], 1)
            values["country"] = found[0] if found else None
        return values

    async def _find_invoice(self, reference: str, party: int) -> int:
        found = await self.client.search(
            "account.invoice", [("type", "=", "out"), ("reference", "=", reference), ("party", "=", party)], 1
        )
        return found[0] if found else 0

    async def _post_invoice(self, invoice: int) -> None:
        (row,) = await self.client.read("account.invoice", [invoice], ["state"])
        if row["state"] in ("draft", "validated"):
            await self.client.call("model.account.invoice.post", [invoice])

    async def _invoice_values(
        self,
        party: int,
        reference: str,
        description: str,
        currency_code: str,
        invoice_date: dt.date,
        lines: list[dict[str, object]],
        taxes: list[dict[str, object]],
    ) -> dict[str, object]:
        addresses = (await self.client.read("party.party", [party], ["addresses"]))[0]["addresses"]
        values: dict[str, object] = {
            "type": "out",
            "party": party,
            "reference": reference,
            "description": description,
            "currency": await self._currency(currency_code),
            "invoice_date": invoice_date,
            "account": self._account("receivable"),
            "journal": self._journal("revenue"),
            "lines": [("create", lines)],
            "taxes": [("create", taxes)],
        }
        if addresses:
            values["invoice_address"] = addresses[0]
        return values

    async def _line(self, offer: str, description: str, quantity: int, amount: Decimal) -> dict[str, object]:
        line: dict[str, object] = {
            "type": "line",
            "account": self._revenue_account(offer),
            "description": description,
            # One unit at the line's amount: the amount is exact, a unit price from it might not be.
            "quantity": float(quantity),
            "unit_price": amount,
        }
        product = self.mapping.products.get(offer, "")
        if product:
            product_id = _tryton_id(f"mapping.products[{offer}]", product)
            rows = await self.client.read("product.product", [product_id], ["default_uom"])
            if not rows:
                raise MappingMissing(f"mapping.products[{offer}]: no product {product_id} in Tryton")
            line["product"] = product_id
            line["unit"] = rows[0]["default_uom"]
        return line

    async def post_invoice(self, bill: bill_pb2.Bill, party: str) -> str:
        party_id = int(party)
        reference = bill.bill_number or bill.bill_id
        invoice = await self._find_invoice(reference, party_id)
        if not invoice:
            lines = [
                await self._line(
                    line.charge_offer_code,
                    f"{line.charge_offer_code} / {line.charge_code} ({line.tax_code}), quantity {line.quantity}",
                    1,
                    from_money(line.amount),
                )
                for line in bill.lines
            ]
            # The bill's taxes are authoritative (per tax code, rounded half up): they go as manual
            # taxes, so Tryton's own computation (half even) cannot make the totals differ.
            taxes = []
            for tax in bill.taxes:
                tax_id = self._tax(tax.tax_code)
                taxes.append(
                    {
                        "manual": True,
                        "tax": tax_id,
                        "description": f"{tax.tax_code} {tax.rate}",
                        "base": from_money(tax.taxable_amount),
                        "amount": from_money(tax.tax_amount),
                        "account": await self._tax_account(tax_id, credit_note=False),
                    }
                )
            values = await self._invoice_values(
                party_id,
                reference,
                f"Bill {reference}",
                bill.currency_code,
                _date(bill.issue_date),
                lines,
                taxes,
            )
            invoice = await self.client.create("account.invoice", values)
        await self._post_invoice(invoice)
        return str(invoice)

    async def post_credit_note(
        self, note: credit_note_pb2.CreditNote, party: str, bill: bill_pb2.Bill | None = None
    ) -> str:
        party_id = int(party)
        reference = note.credit_note_number or note.credit_note_id
        invoice = await self._find_invoice(reference, party_id)
        if not invoice:
            # Tryton's credit note is a customer invoice with negative quantities.
            lines = [
                await self._line(
                    line.charge_offer_code,
                    f"Credit of bill line {line.bill_line_number}: {line.charge_offer_code} / {line.charge_code}",
                    -1,
                    from_money(line.amount),
                )
                for line in note.lines
            ]
            taxes = []
            for tax_code, base, amount in _credit_note_taxes(note, bill):
                tax_id = self._tax(tax_code)
                taxes.append(
                    {
                        "manual": True,
                        "tax": tax_id,
                        "description": f"{tax_code} (credit note)",
                        "base": -base,
                        "amount": -amount,
                        "account": await self._tax_account(tax_id, credit_note=True),
                    }
                )
            values = await self._invoice_values(
                party_id,
                reference,
                f"Credit note {reference} ({note.reason})"[:200],
                note.currency_code,
                _date(note.issue_date),
                lines,
                taxes,
            )
            invoice = await self.client.create("account.invoice", values)
        await self._post_invoice(invoice)
        return str(invoice)

    async def record_payment(
        self, payment: payment_pb2.Payment, party: str, allocations: Sequence[InvoiceAllocation]
    ) -> str:
        """Cash debited, the party's receivable credited in parts exactly as billing allocated the
        payment (each part added to its invoice's payments), the rest in one unallocated part."""
        received = payment.received_time.ToDatetime(tzinfo=dt.UTC).date()
        return await self._settle(
            f"{PAYMENT_MARK}{payment.payment_id}",
            self._journal("cash"),
            self._account("cash"),
            from_money(payment.amount),
            int(party),
            received,
            (),
            parts=_parts(allocations),
        )

    async def allocate_credit(
        self,
        payment: payment_pb2.Payment,
        party: str,
        payment_erp_id: str,
        sequence: int,
        allocations: Sequence[InvoiceAllocation],
    ) -> str:
        """A later application of the payment's credit to new invoices (see _transfer_credit): its
        open credit is the unallocated part of its payment move."""
        paid_move = await self._payment_move(payment.payment_id, payment_erp_id)
        marker = f"{PAYMENT_MARK}{payment.payment_id}"
        own = _Credit(f"{ALLOCATION_MARK}{payment.payment_id}:", paid_move, lambda line: line["description"] == marker)
        return await self._transfer_credit(own, int(party), sequence, allocations)

    async def allocate_credit_note(
        self,
        note: credit_note_pb2.CreditNote,
        party: str,
        note_erp_id: str,
        sequence: int,
        allocations: Sequence[InvoiceAllocation],
    ) -> str:
        """An application of the credit note's credit to invoices (at issue its own bill's, later
        new ones; see _transfer_credit): its open credit is the credit note's receivable line (the
        line it has to pay, a credit), which is reconciled once billing has given all of it."""
        reference = note.credit_note_number or note.credit_note_id
        invoice = int(note_erp_id) if note_erp_id.isdigit() else await self._find_invoice(reference, int(party))
        rows = await self.client.read("account.invoice", [invoice], ["move", "state"]) if invoice else []
        if not rows or not rows[0]["move"] or rows[0]["state"] not in ("posted", "paid"):
            raise Rejected(f"Tryton has no posted credit note {reference} to allocate")
        own = _Credit(f"{CREDIT_NOTE_ALLOCATION_MARK}{note.credit_note_id}:", int(rows[0]["move"]), lambda line: True)
        return await self._transfer_credit(own, int(party), sequence, allocations)

    async def _transfer_credit(
        self, own: _Credit, party_id: int, sequence: int, allocations: Sequence[InvoiceAllocation]
    ) -> str:
        """Billing's allocation of a payment's or credit note's credit to invoices: a posted transfer
        move in the cash journal, dated the later of the credit's move and the invoices, the party's
        receivable debited (the credit taken) and credited in parts, one per invoice, each added to
        its invoice's payments (reconciled once it is paid in full). Once the credit is used up, its
        open line and the transfers' debits are reconciled together. Found again by its
        description."""
        marker = f"{own.prefix}{sequence}"
        found = await self.client.search("account.move", [("description", "=", marker)], 1)
        if found:
            move = found[0]
        else:
            receivable = self._account("receivable")
            parts = await self._capped(_parts(allocations))
            taken = sum((amount for _, amount in parts), Decimal(0))
            if taken == 0:
                # Tryton's invoices owe nothing more: no credit moves (it stays the party's).
                return str(own.move)
            (paid,) = await self.client.read("account.move", [own.move], ["date"])
            dates = [
                row["invoice_date"]
                for row in await self.client.read(
                    "account.invoice", [invoice for invoice, _ in parts], ["invoice_date"]
                )
                if row["invoice_date"]
            ]
            on = max([paid["date"], *dates])
            lines: list[dict[str, object]] = [
                {
                    "account": receivable,
                    "party": party_id,
                    "debit": taken,
                    "credit": Decimal(0),
                    "description": f"{marker}:credit",
                }
            ]
            lines += [
                {
                    "account": receivable,
                    "party": party_id,
                    "debit": Decimal(0),
                    "credit": amount,
                    "description": f"{marker}:invoice:{invoice}",
                }
                for invoice, amount in parts
                if amount > 0
            ]
            move = await self._create_move(self._journal("cash"), on, marker, lines)
        await self._reconcile(await self._posted(move), marker)
        await self._reconcile_used_credit(own)
        return str(move)

    async def _payment_move(self, payment_id: str, payment_erp_id: str) -> int:
        if payment_erp_id.isdigit():
            return int(payment_erp_id)
        found = await self.client.search("account.move", [("description", "=", f"{PAYMENT_MARK}{payment_id}")], 1)
        if not found:
            raise Rejected(f"Tryton has no payment {payment_id}")
        return int(found[0])

    async def _capped(self, parts: Sequence[tuple[int, Decimal]]) -> list[tuple[int, Decimal]]:
        """Each part at most what its invoice still owes in Tryton (Tryton refuses payment lines
        beyond it): should Tryton's invoice owe less than billing's bill (something else paid it
        there), the difference stays the party's unallocated credit."""
        if not parts:
            return []
        rows = await self.client.read("account.invoice", [invoice for invoice, _ in parts], ["amount_to_pay", "state"])
        owed = {row["id"]: (row["amount_to_pay"] if row["state"] == "posted" else Decimal(0)) for row in rows}
        capped = []
        for invoice, amount in parts:
            take = max(min(amount, owed.get(invoice, Decimal(0))), Decimal(0))
            owed[invoice] = owed.get(invoice, Decimal(0)) - take
            capped.append((invoice, take))
        return capped

    async def _reconcile_used_credit(self, own: _Credit) -> None:
        """The credit's open line (a payment's unallocated part, a credit note's receivable line)
        and the debits of the transfers that moved it onto invoices, reconciled together once they
        cancel out (the credit is used up)."""
        receivable = self._account("receivable")
        (paid,) = await self.client.read("account.move", [own.move], ["lines"])
        fields = ["account", "debit", "credit", "description", "reconciliation"]
        unallocated = [
            line
            for line in await self.client.read("account.move.line", paid["lines"], fields)
            if line["account"] == receivable and line["credit"] > 0 and own.is_open_line(line)
        ]
        if len(unallocated) != 1 or unallocated[0]["reconciliation"]:
            return
        debits = [
            line
            for line in await self._transfer_lines(own.prefix, fields)
            if line["account"] == receivable and line["debit"] > 0 and not line["reconciliation"]
        ]
        if debits and sum((line["debit"] for line in debits), Decimal(0)) == unallocated[0]["credit"]:
            await self._reconcile_lines([unallocated[0]["id"], *(line["id"] for line in debits)])

    async def _transfer_moves(self, prefix: str) -> list[dict[str, Any]]:
        ids = await self.client.search("account.move", [("description", "like", f"{prefix}%")])
        rows = await self.client.read("account.move", ids, ["description", "lines"]) if ids else []
        return [row for row in rows if (row["description"] or "").startswith(prefix)]

    async def _transfer_lines(self, prefix: str, fields: Sequence[str]) -> list[dict[str, Any]]:
        line_ids = [line for move in await self._transfer_moves(prefix) for line in move["lines"]]
        return await self.client.read("account.move.line", line_ids, fields) if line_ids else []

    async def _undo_allocations(self, payment_id: str) -> None:
        """The payment's later allocations taken back: each transfer's invoice parts come off their
        invoices (unreconciled first: the invoices owe again), and the transfer's own lines, which
        cancel out, are reconciled together. Done again by a retry, it changes nothing."""
        receivable = self._account("receivable")
        fields = ["account", "debit", "credit", "description", "reconciliation"]
        for move in await self._transfer_moves(f"{ALLOCATION_MARK}{payment_id}:"):
            marker = move["description"]
            own = [
                line
                for line in await self.client.read("account.move.line", move["lines"], fields)
                if line["account"] == receivable
            ]
            own_ids = {line["id"] for line in own}
            together = set()
            for reconciliation in {line["reconciliation"] for line in own if line["reconciliation"]}:
                (rec,) = await self.client.read("account.move.reconciliation", [reconciliation], ["lines"])
                if set(rec["lines"]) <= own_ids:
                    together.add(reconciliation)
            for line in own:
                if line["reconciliation"] and line["reconciliation"] not in together:
                    await self._unreconcile_lines([line["id"]])
                if line["credit"] > 0:
                    await self._detach_payment_line(line, marker)
            current = await self.client.read("account.move.line", sorted(own_ids), ["reconciliation"])
            if any(not line["reconciliation"] for line in current):
                await self._reconcile_lines(sorted(own_ids))

    async def write_off(self, entry: ledger_pb2.LedgerEntry, party: str, invoices: Sequence[str]) -> str:
        """The debt given up: the write-off (expense) account debited, the party's receivable
        credited against its open invoices (the written-off bill's first), in the write-off journal
        (the general one when unmapped)."""
        journal = self._journal("write_off" if self.mapping.journals.get("write_off") else "general")
        effective = entry.effective_time.ToDatetime(tzinfo=dt.UTC).date()
        return await self._settle(
            f"{WRITE_OFF_MARK}{entry.entry_id}",
            journal,
            self._account("write_off"),
            -from_money(entry.amount),  # the entry is a credit: the amount given up is its opposite
            int(party),
            effective,
            [int(i) for i in invoices if i.isdigit()],
        )

    async def _settle(
        self,
        marker: str,
        journal: int,
        counter_account: int,
        amount: Decimal,
        party: int,
        on: dt.date,
        preferred: Sequence[int],
        parts: Sequence[tuple[int, Decimal]] | None = None,
    ) -> str:
        """A posted move debiting `counter_account` and crediting the party's receivable, split over
        its open invoices (`preferred` first, then oldest first, as billing allocates); each part
        names its invoice so that a retry reconciles the same ones. Found again by `marker`.

        With `parts` (invoice, amount) the move is split exactly so (each part at most what its
        invoice owes in Tryton), instead of over the open invoices."""
        found = await self.client.search("account.move", [("description", "=", marker)], 1)
        if found:
            move = found[0]
        else:
            receivable = self._account("receivable")
            lines: list[dict[str, object]] = [{"account": counter_account, "debit": amount, "credit": Decimal(0)}]
            left = amount
            if parts is not None:
                split = await self._capped(parts)
            else:
                split = await self._open_invoices(party)
                split.sort(key=lambda item: 0 if item[0] in preferred else 1)  # stable: oldest first after
            for invoice, to_pay in split:
                if left <= 0:
                    break
                part = min(left, to_pay)
                if part <= 0:
                    continue
                lines.append(
                    {
                        "account": receivable,
                        "party": party,
                        "debit": Decimal(0),
                        "credit": part,
                        "description": f"{marker}:invoice:{invoice}",
                    }
                )
                left -= part
            if left > 0:
                lines.append(
                    {"account": receivable, "party": party, "debit": Decimal(0), "credit": left, "description": marker}
                )
            move = await self._create_move(journal, on, marker, lines)
        await self._reconcile(await self._posted(move), marker)
        return str(move)

    async def reverse_payment(self, payment: payment_pb2.Payment, party: str, payment_erp_id: str) -> str:
        """What a bookkeeper does for a bounced payment: the transfers of its credit onto later
        invoices are taken back (_undo_allocations), the payment's receivable lines are taken
        off their invoices (unreconciled, removed from the invoices' payments, which are open again),
        and a posted reversing move (receivable debited, cash credited, line for line) is reconciled
        with them. Found again by its description."""
        marker = f"{REVERSAL_MARK}{payment.payment_id}"
        paid_marker = f"{PAYMENT_MARK}{payment.payment_id}"
        # Its credit's later allocations first: their invoices owe again too.
        await self._undo_allocations(payment.payment_id)
        move = int(payment_erp_id) if payment_erp_id.isdigit() else 0
        if not move:
            found = await self.client.search("account.move", [("description", "=", paid_marker)], 1)
            if not found:
                raise Rejected(f"Tryton has no payment {payment.payment_id} to reverse")
            move = found[0]
        (paid,) = await self.client.read("account.move", [move], ["lines"])
        fields = ["account", "party", "debit", "credit", "description", "reconciliation"]
        paid_lines = await self.client.read("account.move.line", paid["lines"], fields)
        receivable = self._account("receivable")
        to_undo = [line for line in paid_lines if line["account"] == receivable and line["credit"] > 0]
        found = await self.client.search("account.move", [("description", "=", marker)], 1)
        reversal = found[0] if found else 0
        pairs: dict[int, int] = {}  # payment line -> its reversing line
        if reversal:
            (row,) = await self.client.read("account.move", [reversal], ["lines"])
            for line in await self.client.read("account.move.line", row["lines"], ["description", "reconciliation"]):
                prefix = f"{marker}:line:"
                if (line["description"] or "").startswith(prefix):
                    pairs[int(line["description"][len(prefix) :])] = line["id"]
        reversal_reconciliations = {
            line["reconciliation"]
            for line in await self.client.read("account.move.line", list(pairs.values()), ["reconciliation"])
            if line["reconciliation"]
        }
        for line in to_undo:
            if line["reconciliation"] and line["reconciliation"] not in reversal_reconciliations:
                await self._unreconcile_lines([line["id"]])
            await self._detach_payment_line(line, paid_marker)
        if not reversal:
            reversed_on = payment.reverse_time.ToDatetime(tzinfo=dt.UTC).date()
            total = sum((line["credit"] for line in to_undo), Decimal(0))
            lines: list[dict[str, object]] = [
                {
                    "account": receivable,
                    "party": line["party"],
                    "debit": line["credit"],
                    "credit": Decimal(0),
                    "description": f"{marker}:line:{line['id']}",
                }
                for line in to_undo
            ]
            lines.append({"account": self._account("cash"), "debit": Decimal(0), "credit": total})
            reversal = await self._create_move(self._journal("cash"), reversed_on, marker, lines)
            (row,) = await self.client.read("account.move", [reversal], ["lines"])
            for line in await self.client.read("account.move.line", row["lines"], ["description"]):
                prefix = f"{marker}:line:"
                if (line["description"] or "").startswith(prefix):
                    pairs[int(line["description"][len(prefix) :])] = line["id"]
        await self._posted(reversal)
        # Each payment line and its reversal cancel out: reconciled together, both are closed.
        current = {
            line["id"]: line["reconciliation"]
            for line in await self.client.read(
                "account.move.line", [*pairs.keys(), *pairs.values()], ["reconciliation"]
            )
        }
        for paid_line, reversing_line in pairs.items():
            if not current.get(paid_line) or current.get(paid_line) != current.get(reversing_line):
                await self._reconcile_lines([paid_line, reversing_line])
        return str(reversal)

    async def _detach_payment_line(self, line: dict[str, Any], marker: str) -> None:
        prefix = f"{marker}:invoice:"
        description = line["description"] or ""
        if not description.startswith(prefix):
            return
        invoice = int(description[len(prefix) :])
        rows = await self.client.read("account.invoice", [invoice], ["payment_lines"])
        if rows and line["id"] in rows[0]["payment_lines"]:
            await self.client.write("account.invoice", [invoice], {"payment_lines": [("remove", [line["id"]])]})

    async def _unreconcile_lines(self, ids: list[int]) -> None:
        """Tryton's "Unreconcile Lines" wizard: the reconciliations of these lines are deleted (an
        invoice they had paid is open again)."""
        wizard = "wizard.account.move.unreconcile_lines"
        context = {"active_model": "account.move.line", "active_id": ids[0], "active_ids": ids}
        session, _, _ = await self.client.call(f"{wizard}.create")
        try:
            await self.client.call(f"{wizard}.execute", session, {}, "unreconcile", context=context)
        finally:
            await self.client.call(f"{wizard}.delete", session)

    async def refer_case(
        self,
        referral: collections_events_pb2.CollectionsCaseReferred,
        referral_id: str,
        party: str,
        invoices: Sequence[str],
    ) -> str:
        """The party gets the agency's category (so Tryton's lists filter the referred parties) and a
        note with the referral: agency, overdue amount, the referred invoices. Returns the note's id."""
        party_id = int(party)
        agency = referral.agency or "unnamed"
        category = await self._category(REFERRAL_CATEGORY.format(agency=agency))
        (row,) = await self.client.read("party.party", [party_id], ["categories"])
        if category not in row["categories"]:
            await self.client.write("party.party", [party_id], {"categories": [("add", [category])]})
        marker = f"{REFERRAL_MARK}{referral_id}"
        resource = f"party.party,{party_id}"
        found = await self.client.search("ir.note", [("resource", "=", resource), ("message", "like", f"{marker}%")], 1)
        if found:
            return str(found[0])
        references = await self._invoice_references([int(i) for i in invoices if i.isdigit()])
        message = "\n".join(referral_note(referral, referral_id, references))
        return str(await self.client.create("ir.note", {"resource": resource, "message": message}))

    async def _category(self, name: str) -> int:
        found = await self.client.search("party.category", [("name", "=", name), ("parent", "=", None)], 1)
        return found[0] if found else await self.client.create("party.category", {"name": name})

    async def _invoice_references(self, invoices: Iterable[int]) -> list[str]:
        ids = list(invoices)
        rows = await self.client.read("account.invoice", ids, ["number", "reference"]) if ids else []
        return [f"{row['number']} (bill {row['reference']})" for row in rows]

    async def _open_invoices(self, party: int) -> list[tuple[int, Decimal]]:
        ids = await self.client.search(
            "account.invoice",
            [("type", "=", "out"), ("party", "=", party), ("state", "=", "posted")],
            None,
            [("invoice_date", "ASC"), ("id", "ASC")],
        )
        rows = await self.client.read("account.invoice", ids, ["amount_to_pay"]) if ids else []
        return [(row["id"], row["amount_to_pay"]) for row in rows if row["amount_to_pay"] > 0]

    async def _reconcile(self, line_ids: list[int], marker: str) -> None:
        lines = await self.client.read("account.move.line", line_ids, ["description", "reconciliation"])
        prefix = f"{marker}:invoice:"
        for line in lines:
            description = line["description"] or ""
            if not description.startswith(prefix) or line["reconciliation"]:
                continue
            invoice = int(description[len(prefix) :])
            (row,) = await self.client.read("account.invoice", [invoice], ["payment_lines", "state"])
            if row["state"] != "posted":
                continue
            if line["id"] not in row["payment_lines"]:
                await self.client.write("account.invoice", [invoice], {"payment_lines": [("add", [line["id"]])]})
            (row,) = await self.client.read(
                "account.invoice", [invoice], ["amount_to_pay", "lines_to_pay", "payment_lines", "state"]
            )
            if row["amount_to_pay"] == 0 and row["state"] == "posted":
                # Paid in full: its receivable and its payments reconciled together mark it paid.
                candidates = await self.client.read(
                    "account.move.line", [*row["lines_to_pay"], *row["payment_lines"]], ["reconciliation", "date"]
                )
                open_lines = [c for c in candidates if not c["reconciliation"]]
                if open_lines:
                    await self._reconcile_lines([c["id"] for c in open_lines])

    async def _reconcile_lines(self, ids: list[int]) -> None:
        """Tryton's own "Reconcile Lines" wizard (reconciliations cannot be written directly); the
        invoice whose lines it reconciles turns paid."""
        wizard = "wizard.account.move.reconcile_lines"
        context = {"active_model": "account.move.line", "active_id": ids[0], "active_ids": ids}
        session, _, _ = await self.client.call(f"{wizard}.create")
        try:
            await self.client.call(f"{wizard}.execute", session, {}, "start", context=context)
        finally:
            await self.client.call(f"{wizard}.delete", session)

    async def post_journal(self, journal: Journal, on: dt.date, reference: str) -> str:
        marker = f"{JOURNAL_MARK}{reference}"
        found = await self.client.search("account.move", [("description", "=", marker)], 1)
        if found:
            move = found[0]
        else:
            lines: list[dict[str, object]] = []
            for line in journal.lines:
                if not line.account:
                    raise MappingMissing(f"mapping.accounts[{line.role}] is required to post the journal")
                lines.append(
                    {
                        "account": _tryton_id(f"mapping.accounts[{line.role}]", line.account),
                        "debit": line.debit,
                        "credit": line.credit,
                        "description": f"{line.role} {line.charge_offer_code}".strip(),
                    }
                )
            # A summary has no customer: accounts that want a party (receivables) get the company's own.
            accounts = sorted({int(str(values["account"])) for values in lines})
            rows = await self.client.read("account.account", accounts, ["party_required"])
            needs_party = {row["id"] for row in rows if row["party_required"]}
            if needs_party:
                party = await self._company_party()
                for values in lines:
                    if values["account"] in needs_party:
                        values["party"] = party
            move = await self._create_move(self._journal("general"), on, marker, lines)
        await self._posted(move)
        return str(move)

    # --- inbound ---------------------------------------------------------------------------------
    async def payments_since(
        self, cursor: tuple[str, int] | None, limit: int
    ) -> tuple[list[ErpPayment], tuple[str, int] | None]:
        """Receivable credits with a party in posted cash-journal moves, by the move's write date
        (set when the move is posted) and id; the gateway's own payment moves are left out.

        Tryton stamps write_date at its transaction's start, so a move committed late can carry a
        stamp behind the cursor: each poll also reads IMPORT_LOOKBACK behind the cursor (without a
        limit: a bounded window; the gateway skips what it imported), while the page proper is
        strictly after the cursor, so a full page always moves it on (a window more crowded than
        the page size once held the cursor in place for good)."""
        base: list[object] = [("state", "=", "posted"), ("journal.type", "=", "cash")]
        order = [("write_date", "ASC"), ("id", "ASC")]
        moves: list[int] = []
        if cursor is None:
            moves = await self.client.search("account.move", base, limit, order)
        else:
            stamp, last_id = dt.datetime.fromisoformat(cursor[0]), cursor[1]
            window = [("write_date", ">=", stamp - IMPORT_LOOKBACK), ("write_date", "<=", stamp)]
            moves = await self.client.search("account.move", [*base, *window], None, order)
            after = ["OR", ("write_date", ">", stamp), [("write_date", "=", stamp), ("id", ">", last_id)]]
            seen = set(moves)
            page = await self.client.search("account.move", [*base, after], limit, order)
            moves += [m for m in page if m not in seen]
        if not moves:
            return [], cursor
        move_rows = await self.client.read("account.move", moves, ["description", "write_date", "create_date", "lines"])
        move_rows.sort(key=lambda move: ((move["write_date"] or move["create_date"]), int(move["id"])))
        currency = await self._company_currency()
        receivable = set(await self.client.search("account.account", [("type.receivable", "=", True)]))
        payments = []
        last = cursor
        for move in move_rows:
            stamp = (move["write_date"] or move["create_date"]).isoformat()
            if last is None or (stamp, int(move["id"])) > last:
                last = (stamp, int(move["id"]))
            if (move["description"] or "").startswith("evolutivo:"):
                continue
            lines = await self.client.read("account.move.line", move["lines"], ["party", "credit", "debit", "account"])
            for line in lines:
                if not line["party"] or line["credit"] <= 0 or line["account"] not in receivable:
                    continue
                payments.append(
                    ErpPayment(
                        erp_id=str(line["id"]),
                        party=str(line["party"]),
                        amount_text=str(line["credit"] - line["debit"]),
                        currency_code=currency,
                        cursor=(stamp, int(move["id"])),
                    )
                )
        return payments, last

    async def _create_move(self, journal: int, on: dt.date, marker: str, lines: list[dict[str, object]]) -> int:
        """A draft move of these lines in the journal's period of `on`, found again by `marker`."""
        values = {
            "journal": journal,
            "date": on,
            "period": await self._period(on),
            "description": marker,
            "lines": [("create", lines)],
        }
        return await self.client.create("account.move", values)

    async def _posted(self, move: int) -> list[int]:
        """Posts the move unless it is (a retry finds it posted); returns its lines."""
        (row,) = await self.client.read("account.move", [move], ["state", "lines"])
        if row["state"] != "posted":
            await self.client.call("model.account.move.post", [move])
        return list(row["lines"])

    async def _period(self, on: dt.date) -> int:
        """The open period of the date (a move's period defaults to Tryton's today's otherwise)."""
        found = await self.client.search(
            "account.period",
            [("start_date", "<=", on), ("end_date", ">=", on), ("type", "=", "standard"), ("state", "=", "open")],
            1,
        )
        if not found:
            raise Rejected(f"Tryton has no open accounting period for {on.isoformat()}")
        return found[0]

    async def _company_party(self) -> int:
        company = self.client.context.get("company")
        if not company:
            raise MappingMissing("the Tryton user has no company")
        (row,) = await self.client.read("company.company", [int(company)], ["party"])
        return int(row["party"])

    async def _company_currency(self) -> str:
        company = self.client.context.get("company")
        if not company:
            raise MappingMissing("the Tryton user has no company")
        (row,) = await self.client.read("company.company", [int(company)], ["currency.code"])
        return str((row.get("currency.") or {}).get("code", ""))


@dataclass(frozen=True)
class _Credit:
    """Credit that billing allocates to invoices, as Tryton holds it: the move whose receivable
    credit line (`is_open_line` picks it) is the credit, and the prefix of its transfers' descriptions."""

    prefix: str
    move: int
    is_open_line: Callable[[dict[str, Any]], bool]


def _parts(allocations: Sequence[InvoiceAllocation]) -> list[tuple[int, Decimal]]:
    return [(_tryton_id(f"invoice of bill {a.bill_id}", a.invoice), a.amount) for a in allocations]


def _credit_note_taxes(
    note: credit_note_pb2.CreditNote, bill: bill_pb2.Bill | None
) -> list[tuple[str, Decimal, Decimal]]:
    """(tax code, base, tax) of a credit note: its lines per tax code at the bill's rates, rounded
    half up as bills are; any cent the per-code rounding leaves goes to the last code, so the sum
    is the note's tax_total exactly."""
    bases: dict[str, Decimal] = {}
    for line in note.lines:
        bases[line.tax_code] = bases.get(line.tax_code, Decimal(0)) + from_money(line.amount)
    if not bases:
        return []
    tax_total = from_money(note.tax_total)
    rates = {tax.tax_code: Decimal(tax.rate) for tax in bill.taxes} if bill is not None else {}
    places = tax_total.as_tuple().exponent
    exponent = Decimal(1).scaleb(min(places if isinstance(places, int) else -2, -2))
    result = []
    for code, base in sorted(bases.items()):
        result.append((code, base, (base * rates.get(code, Decimal(0))).quantize(exponent, ROUND_HALF_UP)))
    drift = tax_total - sum((amount for _, _, amount in result), Decimal(0))
    code, base, amount = result[-1]
    result[-1] = (code, base, amount + drift)
    return result
