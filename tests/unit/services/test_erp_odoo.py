"""The Odoo adapter's TestConnection against recorded shapes of Odoo's external JSON-RPC API
(POST /jsonrpc, service "common": "version", then "authenticate"): no Odoo server runs here."""

from __future__ import annotations

import datetime as dt
import json
import uuid
from typing import Any

import httpx
from evolutivo_erp_gateway.adapters.erp import ProblemKind
from evolutivo_erp_gateway.adapters.odoo import OdooAdapter
from evolutivo_erp_gateway.domain.connections import Connection, ConnectionType, Mapping

NOW = dt.datetime(2031, 5, 17, tzinfo=dt.UTC)
# Recorded from Odoo 17's /jsonrpc.
VERSION = {
    "jsonrpc": "2.0",
    "id": 1,
    "result": {
        "server_version": "17.0",
        "server_version_info": [17, 0, 0, "final", 0, ""],
        "server_serie": "17.0",
        "protocol_version": 1,
    },
}
AUTH_OK = {"jsonrpc": "2.0", "id": 1, "result": 2}
AUTH_REFUSED = {"jsonrpc": "2.0", "id": 1, "result": False}
DB_MISSING = {
    "jsonrpc": "2.0",
    "id": 1,
    "error": {
        "code": 200,
        "message": "Odoo Server Error",
        "data": {"name": "psycopg2.OperationalError", "message": 'FATAL:  database "prod" does not exist'},
    },
}


def connection(mapping: Mapping | None = None) -> Connection:
    return Connection(
        connection_id=uuid.uuid4(),
        display_name="Odoo",
        type=ConnectionType.ODOO,
        endpoint_url="https://odoo.example",
        database="prod",
        username="gateway@example.com",
        mapping=mapping
        or Mapping(journals={"revenue": "1", "cash": "7"}, accounts={"receivable": "6", "revenue": "21", "cash": "5"}),
        enabled=True,
        import_payments=False,
        has_credentials=True,
        create_time=NOW,
        update_time=NOW,
    )


def replaying(*answers: dict[str, Any]) -> tuple[httpx.MockTransport, list[dict[str, Any]]]:
    sent: list[dict[str, Any]] = []
    queue = list(answers)

    def handle(request: httpx.Request) -> httpx.Response:
        assert request.url == "https://odoo.example/jsonrpc"
        sent.append(json.loads(request.content))
        return httpx.Response(200, json=queue.pop(0))

    return httpx.MockTransport(handle), sent


async def test_a_good_connection_has_no_problem_and_authenticates_as_odoo_documents() -> None:
    transport, sent = replaying(VERSION, AUTH_OK)
    adapter = OdooAdapter(connection(), "api-key", 5.0, transport)
    assert await adapter.test() == []
    assert [(s["params"]["service"], s["params"]["method"]) for s in sent] == [
        ("common", "version"),
        ("common", "authenticate"),
    ]
    assert sent[1]["params"]["args"] == ["prod", "gateway@example.com", "api-key", {}]
    await adapter.aclose()


async def test_refused_login_missing_database_and_missing_mapping_are_told_apart() -> None:
    transport, _ = replaying(VERSION, AUTH_REFUSED)
    (problem,) = await OdooAdapter(connection(), "wrong", 5.0, transport).test()
    assert problem.kind is ProblemKind.AUTH_FAILED
    transport, _ = replaying(VERSION, DB_MISSING)
    (problem,) = await OdooAdapter(connection(), "key", 5.0, transport).test()
    assert (problem.kind, problem.message) == (ProblemKind.ERP_ERROR, 'Odoo: FATAL:  database "prod" does not exist')
    transport, _ = replaying(VERSION, AUTH_OK)
    problems = await OdooAdapter(connection(Mapping()), "key", 5.0, transport).test()
    assert {p.kind for p in problems} == {ProblemKind.MAPPING_MISSING}
    assert "mapping.accounts[receivable] is required" in {p.message for p in problems}


async def test_a_server_that_is_not_odoo_or_does_not_answer_is_unreachable() -> None:
    not_odoo = httpx.MockTransport(lambda request: httpx.Response(200, text="<html>hello</html>"))
    (problem,) = await OdooAdapter(connection(), "key", 5.0, not_odoo).test()
    assert problem.kind is ProblemKind.UNREACHABLE

    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused", request=request)

    (problem,) = await OdooAdapter(connection(), "key", 5.0, httpx.MockTransport(refuse)).test()
    assert problem.kind is ProblemKind.UNREACHABLE
    (problem,) = await OdooAdapter(connection(), "", 5.0, httpx.MockTransport(refuse)).test()
    assert problem.kind is ProblemKind.CONFIG_INVALID
