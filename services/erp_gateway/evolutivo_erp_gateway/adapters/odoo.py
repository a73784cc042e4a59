"""Odoo, configuration and TestConnection only: no Odoo server runs here, so nothing is sent to one.

TestConnection speaks Odoo's documented external API (JSON-RPC at <url>/jsonrpc): service "common",
method "version" (is it Odoo?), then "authenticate" (db, login, password or API key) -> uid, or
false when refused. It is tested against recorded shapes of those answers, not a real Odoo.
"""

from __future__ import annotations

import datetime as dt
import json
from typing import Any, NoReturn

import httpx
from evolutivo.balance.v1 import payment_pb2
from evolutivo.billing.v1 import bill_pb2, credit_note_pb2
from evolutivo.customer.v1 import account_pb2

from evolutivo_erp_gateway.adapters.erp import ErpError, ErpPayment, Problem, ProblemKind, Rejected, Unreachable
from evolutivo_erp_gateway.domain.connections import Connection
from evolutivo_erp_gateway.domain.journal import Journal


class OdooAdapter:
    def __init__(
        self, connection: Connection, secret: str, timeout: float, transport: httpx.AsyncBaseTransport | None = None
    ) -> None:
        self.connection = connection
        self._secret = secret
        self._http = httpx.AsyncClient(timeout=timeout, transport=transport)

    async def aclose(self) -> None:
        await self._http.aclose()

    async def _call(self, service: str, method: str, *args: object) -> Any:
        body = {
            "jsonrpc": "2.0",
            "method": "call",
            "params": {"service": service, "method": method, "args": list(args)},
            "id": 1,
        }
        url = self.connection.endpoint_url.rstrip("/") + "/jsonrpc"
        try:
            response = await self._http.post(
                url, content=json.dumps(body), headers={"Content-Type": "application/json"}
            )
        except httpx.HTTPError as exc:
            raise Unreachable(f"Odoo at {url} did not answer: {type(exc).__name__}") from None
        try:
            data = response.json()
        except ValueError:
            raise Unreachable(f"{url} does not answer Odoo's JSON-RPC (HTTP {response.status_code})") from None
        if data.get("error"):
            error = data["error"]
            raise Rejected(f"Odoo: {(error.get('data') or {}).get('message') or error.get('message')}")
        return data.get("result")

    async def test(self) -> list[Problem]:
        if not self._secret:
            return [Problem(ProblemKind.CONFIG_INVALID, "an Odoo connection needs a password or API key")]
        try:
            version = await self._call("common", "version")
            if not isinstance(version, dict) or "server_version" not in version:
                return [Problem(ProblemKind.UNREACHABLE, "the server does not answer as Odoo does")]
            uid = await self._call(
                "common", "authenticate", self.connection.database, self.connection.username, self._secret, {}
            )
        except Unreachable as exc:
            return [Problem(ProblemKind.UNREACHABLE, str(exc))]
        except ErpError as exc:
            return [Problem(ProblemKind.ERP_ERROR, str(exc))]
        if not uid:
            return [Problem(ProblemKind.AUTH_FAILED, f"Odoo refused the login of {self.connection.username!r}")]
        return [
            Problem(ProblemKind.MAPPING_MISSING, f"mapping.{kind}[{role}] is required")
            for kind, roles, given in (
                ("accounts", ("receivable", "revenue", "cash"), self.connection.mapping.accounts),
                ("journals", ("revenue", "cash"), self.connection.mapping.journals),
            )
            for role in roles
            if not given.get(role)
        ]

    def _unsupported(self) -> NoReturn:
        raise Rejected("sending records to Odoo is not implemented (configuration and test only)")

    async def upsert_customer(self, account: account_pb2.Account, erp_id: str) -> str:
        self._unsupported()

    async def post_invoice(self, bill: bill_pb2.Bill, party: str) -> str:
        self._unsupported()

    async def post_credit_note(
        self, note: credit_note_pb2.CreditNote, party: str, bill: bill_pb2.Bill | None = None
    ) -> str:
        self._unsupported()

    async def record_payment(self, payment: payment_pb2.Payment, party: str) -> str:
        self._unsupported()

    async def post_journal(self, journal: Journal, on: dt.date, reference: str) -> str:
        self._unsupported()

    async def payments_since(
        self, cursor: tuple[str, int] | None, limit: int
    ) -> tuple[list[ErpPayment], tuple[str, int] | None]:
        return [], cursor
