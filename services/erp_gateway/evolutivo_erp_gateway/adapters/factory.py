"""Opens the adapter of a connection, with its secret decrypted only for the call."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Sequence

import httpx
from evolutivo.balance.v1 import ledger_pb2, payment_pb2
from evolutivo.billing.v1 import bill_pb2, collections_events_pb2, credit_note_pb2
from evolutivo.customer.v1 import account_pb2, contact_pb2

from evolutivo_erp_gateway.adapters.crypto import SecretCipher
from evolutivo_erp_gateway.adapters.erp import (
    ErpAdapter,
    ErpPayment,
    InvoiceAllocation,
    Problem,
    ProblemKind,
    Rejected,
)
from evolutivo_erp_gateway.adapters.odoo import OdooAdapter
from evolutivo_erp_gateway.adapters.tryton import TrytonAdapter
from evolutivo_erp_gateway.adapters.webhook import WebhookAdapter
from evolutivo_erp_gateway.domain.connections import GL_ROLES, Connection, ConnectionType
from evolutivo_erp_gateway.domain.journal import Journal


class FileExportAdapter:
    """GL_FILE_EXPORT: nothing to send; its test checks that every journal role has an account."""

    def __init__(self, connection: Connection) -> None:
        self.connection = connection

    async def test(self) -> list[Problem]:
        return [
            Problem(ProblemKind.MAPPING_MISSING, f"mapping.accounts[{role}] is required")
            for role in GL_ROLES
            if not self.connection.mapping.accounts.get(role)
        ]

    async def _refuse(self) -> str:
        raise Rejected("a file export connection receives no records")

    async def upsert_customer(
        self, account: account_pb2.Account, erp_id: str, contacts: Sequence[contact_pb2.Contact] = ()
    ) -> str:
        return await self._refuse()

    async def post_invoice(self, bill: bill_pb2.Bill, party: str) -> str:
        return await self._refuse()

    async def post_credit_note(
        self, note: credit_note_pb2.CreditNote, party: str, bill: bill_pb2.Bill | None = None
    ) -> str:
        return await self._refuse()

    async def record_payment(
        self, payment: payment_pb2.Payment, party: str, allocations: Sequence[InvoiceAllocation]
    ) -> str:
        return await self._refuse()

    async def allocate_credit(
        self,
        payment: payment_pb2.Payment,
        party: str,
        payment_erp_id: str,
        sequence: int,
        allocations: Sequence[InvoiceAllocation],
    ) -> str:
        return await self._refuse()

    async def allocate_credit_note(
        self,
        note: credit_note_pb2.CreditNote,
        party: str,
        note_erp_id: str,
        sequence: int,
        allocations: Sequence[InvoiceAllocation],
    ) -> str:
        return await self._refuse()

    async def reverse_payment(self, payment: payment_pb2.Payment, party: str, payment_erp_id: str) -> str:
        return await self._refuse()

    async def write_off(self, entry: ledger_pb2.LedgerEntry, party: str, invoices: Sequence[str]) -> str:
        return await self._refuse()

    async def refer_case(
        self,
        referral: collections_events_pb2.CollectionsCaseReferred,
        referral_id: str,
        party: str,
        invoices: Sequence[str],
    ) -> str:
        return await self._refuse()

    async def post_journal(self, journal: Journal, on: dt.date, reference: str) -> str:
        return await self._refuse()

    async def payments_since(
        self, cursor: tuple[str, int] | None, limit: int
    ) -> tuple[list[ErpPayment], tuple[str, int] | None]:
        return [], cursor

    async def aclose(self) -> None:
        return None


class Adapters:
    def __init__(
        self,
        cipher: SecretCipher | None,
        timeout: float,
        now: Callable[[], dt.datetime],
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.cipher = cipher
        self._timeout = timeout
        self._now = now
        self._transport = transport

    def secret(self, token: bytes | None) -> str:
        if token is None or self.cipher is None:
            return ""
        return self.cipher.decrypt(token)

    def open(self, connection: Connection, token: bytes | None) -> ErpAdapter:
        secret = self.secret(token)
        if connection.type is ConnectionType.TRYTON:
            return TrytonAdapter(connection, secret, self._timeout, self._transport)
        if connection.type is ConnectionType.WEBHOOK:
            return WebhookAdapter(connection, secret, self._timeout, self._now, self._transport)
        if connection.type is ConnectionType.ODOO:
            return OdooAdapter(connection, secret, self._timeout, self._transport)
        return FileExportAdapter(connection)
