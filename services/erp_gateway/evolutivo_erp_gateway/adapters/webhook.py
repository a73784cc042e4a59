"""Webhook connections: each record POSTed as JSON, signed with HMAC-SHA256 over a timestamp and
the body (Stripe's scheme), so the receiver can check who sent it and refuse replays.

Headers:
  Evolutivo-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256(secret, "<t>.<body>")>
  Evolutivo-Delivery-Id: <event>:<entity id>:<hash of the body>: the same on every retry of one
    version of a record (a customer's update is a new delivery), for the receiver to dedupe.
  Evolutivo-Event: customer.upserted | invoice.posted | credit_note.posted | credit_note.allocated |
    payment.recorded | payment.allocated | payment.reversed | write_off.made |
    collections_case.referred | connection.tested
A payment carries billing's allocation of it under "data.allocations" (bill id and amount each)
and "data.unallocated_amount"; each later application of its credit to a new bill is a
payment.allocated with the payment's id, the allocation's "sequence" and its "allocations". Each
application of a credit note's credit to bills (sequence 1 at issue, to its own bill; 2, 3, ...
later bills) is a credit_note.allocated with the note's id, "credit_note_id", "sequence" and
"allocations".
A 2xx answer is success; anything else (or no answer) fails the job, which retries with backoff.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import json
from collections.abc import Callable, Sequence
from typing import Any

import httpx
from evolutivo.balance.v1 import ledger_pb2, payment_pb2
from evolutivo.billing.v1 import bill_pb2, collections_events_pb2, credit_note_pb2
from evolutivo.customer.v1 import account_pb2, contact_pb2
from evolutivo_runtime.money import from_money, to_money
from google.protobuf.json_format import MessageToDict
from google.protobuf.message import Message

from evolutivo_erp_gateway.adapters.erp import (
    ErpPayment,
    InvoiceAllocation,
    Problem,
    ProblemKind,
    Rejected,
    Unreachable,
)
from evolutivo_erp_gateway.domain.connections import Connection
from evolutivo_erp_gateway.domain.journal import Journal

SIGNATURE_HEADER = "Evolutivo-Signature"
DELIVERY_HEADER = "Evolutivo-Delivery-Id"
EVENT_HEADER = "Evolutivo-Event"
# How old a signed timestamp a receiver should accept (documented for receivers; verify() uses it).
TOLERANCE = dt.timedelta(minutes=5)


def sign(secret: str, timestamp: int, body: bytes) -> str:
    digest = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()
    return f"t={timestamp},v1={digest}"


def verify(secret: str, header: str, body: bytes, now: dt.datetime, tolerance: dt.timedelta = TOLERANCE) -> bool:
    """What a receiver does: the signature matches and its timestamp is recent."""
    try:
        parts = dict(part.split("=", 1) for part in header.split(","))
        timestamp = int(parts["t"])
    except (ValueError, KeyError):
        return False
    if abs(now.timestamp() - timestamp) > tolerance.total_seconds():
        return False
    return hmac.compare_digest(sign(secret, timestamp, body), header)


class WebhookAdapter:
    def __init__(
        self,
        connection: Connection,
        secret: str,
        timeout: float,
        now: Callable[[], dt.datetime],
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.connection = connection
        self._secret = secret
        self._now = now
        self._http = httpx.AsyncClient(timeout=timeout, transport=transport)

    async def aclose(self) -> None:
        await self._http.aclose()

    async def _send(self, event: str, entity_id: str, data: dict[str, Any]) -> str:
        body = json.dumps(
            {"event": event, "entity_id": entity_id, "data": data}, separators=(",", ":"), sort_keys=True
        ).encode()
        headers = {
            "Content-Type": "application/json",
            SIGNATURE_HEADER: sign(self._secret, int(self._now().timestamp()), body),
            # Stable across retries of the same body, new for a changed record or another event
            # about the same entity (a payment and its reversal share the payment's id).
            DELIVERY_HEADER: f"{event}:{entity_id}:{hashlib.sha256(body).hexdigest()[:16]}",
            EVENT_HEADER: event,
        }
        try:
            response = await self._http.post(self.connection.endpoint_url, content=body, headers=headers)
        except httpx.HTTPError as exc:
            raise Unreachable(f"webhook {self.connection.endpoint_url} did not answer: {type(exc).__name__}") from None
        if not 200 <= response.status_code < 300:
            raise Rejected(f"webhook answered HTTP {response.status_code}")
        return entity_id

    @staticmethod
    def _dict(message: Message) -> dict[str, Any]:
        return MessageToDict(message, preserving_proto_field_name=True)

    async def test(self) -> list[Problem]:
        if not self._secret:
            return [Problem(ProblemKind.CONFIG_INVALID, "a webhook needs a signing secret")]
        try:
            await self._send("connection.tested", str(self.connection.connection_id), {})
        except Unreachable as exc:
            return [Problem(ProblemKind.UNREACHABLE, str(exc))]
        except Rejected as exc:
            return [Problem(ProblemKind.ERP_ERROR, str(exc))]
        return []

    async def upsert_customer(
        self, account: account_pb2.Account, erp_id: str, contacts: Sequence[contact_pb2.Contact] = ()
    ) -> str:
        # The account's fields, with its contacts (emails, phones, postal addresses) under "contacts".
        data = {**self._dict(account), "contacts": [self._dict(c) for c in contacts]}
        return await self._send("customer.upserted", account.account_id, data)

    async def post_invoice(self, bill: bill_pb2.Bill, party: str) -> str:
        return await self._send("invoice.posted", bill.bill_id, self._dict(bill))

    async def post_credit_note(
        self, note: credit_note_pb2.CreditNote, party: str, bill: bill_pb2.Bill | None = None
    ) -> str:
        return await self._send("credit_note.posted", note.credit_note_id, self._dict(note))

    def _allocations(self, currency_code: str, allocations: Sequence[InvoiceAllocation]) -> list[dict[str, Any]]:
        return [{"bill_id": a.bill_id, "amount": self._dict(to_money(a.amount, currency_code))} for a in allocations]

    async def record_payment(
        self, payment: payment_pb2.Payment, party: str, allocations: Sequence[InvoiceAllocation]
    ) -> str:
        # The payment with billing's allocation of it: what each bill got, and what is left as credit.
        currency = payment.amount.currency_code
        left = from_money(payment.amount) - sum((a.amount for a in allocations), from_money(payment.amount) * 0)
        data = {
            **self._dict(payment),
            "allocations": self._allocations(currency, allocations),
            "unallocated_amount": self._dict(to_money(left, currency)),
        }
        return await self._send("payment.recorded", payment.payment_id, data)

    async def allocate_credit(
        self,
        payment: payment_pb2.Payment,
        party: str,
        payment_erp_id: str,
        sequence: int,
        allocations: Sequence[InvoiceAllocation],
    ) -> str:
        return await self._allocated(
            "payment", payment.payment_id, payment.account_id, payment.amount.currency_code, sequence, allocations
        )

    async def allocate_credit_note(
        self,
        note: credit_note_pb2.CreditNote,
        party: str,
        note_erp_id: str,
        sequence: int,
        allocations: Sequence[InvoiceAllocation],
    ) -> str:
        return await self._allocated(
            "credit_note", note.credit_note_id, note.account_id, note.currency_code, sequence, allocations
        )

    async def _allocated(
        self,
        owner: str,
        owner_id: str,
        account_id: str,
        currency_code: str,
        sequence: int,
        allocations: Sequence[InvoiceAllocation],
    ) -> str:
        """`<owner>.allocated` (payment, credit_note): allocation number `sequence` of its credit,
        with the owner's id as entity id and under `data.<owner>_id`."""
        data = {
            f"{owner}_id": owner_id,
            "account_id": account_id,
            "sequence": sequence,
            "allocations": self._allocations(currency_code, allocations),
        }
        await self._send(f"{owner}.allocated", owner_id, data)
        return f"{owner_id}:{sequence}"

    async def reverse_payment(self, payment: payment_pb2.Payment, party: str, payment_erp_id: str) -> str:
        return await self._send("payment.reversed", payment.payment_id, self._dict(payment))

    async def write_off(self, entry: ledger_pb2.LedgerEntry, party: str, invoices: Sequence[str]) -> str:
        return await self._send("write_off.made", entry.entry_id, self._dict(entry))

    async def refer_case(
        self,
        referral: collections_events_pb2.CollectionsCaseReferred,
        referral_id: str,
        party: str,
        invoices: Sequence[str],
    ) -> str:
        # The event as billing published it: the case (with its actions), agency, overdue amount, bills.
        return await self._send("collections_case.referred", referral_id, self._dict(referral))

    async def post_journal(self, journal: Journal, on: dt.date, reference: str) -> str:
        await self._send("journal.posted", reference, json.loads(journal.to_json()))
        return reference

    async def payments_since(
        self, cursor: tuple[str, int] | None, limit: int
    ) -> tuple[list[ErpPayment], tuple[str, int] | None]:
        return [], cursor
