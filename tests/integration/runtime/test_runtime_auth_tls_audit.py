"""The security guard and transport on a real grpc.aio server, and the audit log on a real
PostgreSQL: every way a call is refused (and that the handler then never ran), mutual TLS, and the
audit record written in the same transaction as the change."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import grpc
import pytest
import sqlalchemy as sa
from evolutivo.admin.v1 import audit_admin_service_pb2 as audit_pb
from evolutivo.admin.v1 import audit_admin_service_pb2_grpc as audit_grpc
from evolutivo.balance.v1 import balance_service_pb2
from evolutivo_balance.entrypoints.app import MIGRATIONS as BALANCE_MIGRATIONS
from evolutivo_runtime import clients
from evolutivo_runtime.clock import SystemClock
from evolutivo_runtime.db import create_engine, session_factory
from evolutivo_runtime.messaging.tables import messaging_tables
from evolutivo_runtime.security.audit import AuditAdminServicer, audit_log
from evolutivo_runtime.security.interceptor import AuthGuard, current_principal
from evolutivo_runtime.security.ratelimit import Limit, RateLimiter
from evolutivo_runtime.security.scopes import Rule
from evolutivo_runtime.security.tokens import TokenIssuer, TokenVerifier, load_jwks
from evolutivo_runtime.security.transport import TlsFiles, open_channel, server_credentials
from evolutivo_runtime.server.interceptors import ServiceInterceptor
from evolutivo_runtime.settings import ServiceSettings
from evolutivo_runtime.uow import UnitOfWork
from evolutivo_stack.devsecurity import DevSecurity
from google.protobuf.wrappers_pb2 import StringValue
from google.rpc import error_details_pb2
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_status import rpc_status
from sqlalchemy.ext.asyncio import AsyncEngine

DOMAIN = "test.evolutivo.io"
SERVICE = "evolutivo.test.v1.TestService"
# The balance service's method names, so that the audit test records what a real call names.
RULES = {
    f"/{SERVICE}/Read": Rule("things:read", mutates=False, rate="expensive_read"),
    f"/{SERVICE}/Write": Rule("things:write", mutates=True),
}


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> DevSecurity:
    security = DevSecurity(tmp_path_factory.mktemp("pki"), ["svc"])
    security.ensure()
    return security


def _verifier(pki: DevSecurity) -> TokenVerifier:
    return TokenVerifier(load_jwks(pki.jwks_file.read_text()), ["evolutivo-dev"], "evolutivo", 0)


class Calls:
    """What the handlers saw: a refused call must never reach them."""

    def __init__(self) -> None:
        self.handled: list[tuple[str, str | None]] = []


def _handlers(calls: Calls, on_write: Callable[[], Awaitable[None]] | None) -> grpc.GenericRpcHandler[Any, Any]:
    async def read(request: StringValue, context: Any) -> StringValue:
        principal = current_principal.get()
        calls.handled.append(("Read", principal.subject if principal else None))
        return StringValue(value=principal.subject if principal else "")

    async def write(request: StringValue, context: Any) -> StringValue:
        principal = current_principal.get()
        calls.handled.append(("Write", principal.subject if principal else None))
        if on_write is not None:
            await on_write()
        return StringValue(value="written")

    def unary(fn: Any) -> grpc.RpcMethodHandler[Any, Any]:
        return grpc.unary_unary_rpc_method_handler(
            fn, request_deserializer=StringValue.FromString, response_serializer=StringValue.SerializeToString
        )

    return grpc.method_handlers_generic_handler(
        SERVICE, {"Read": unary(read), "Write": unary(write), "Undeclared": unary(read)}
    )


async def _serve(
    pki: DevSecurity,
    calls: Calls,
    *,
    settings: ServiceSettings | None = None,
    limits: dict[str, Limit] | None = None,
    engine: AsyncEngine | None = None,
    on_write: Callable[[], Awaitable[None]] | None = None,
) -> tuple[grpc.aio.Server, int]:
    sessions = session_factory(engine) if engine is not None else None
    server = grpc.aio.server(
        interceptors=[
            ServiceInterceptor(
                DOMAIN,
                guards=[
                    AuthGuard(
                        _verifier(pki),
                        RateLimiter(limits or {}),
                        max_repeated_items=2,
                        clock=SystemClock(),
                        audit_sessions=sessions,
                        rules={**RULES, "/evolutivo.admin.v1.AuditAdminService/ListAuditRecords": Rule("audit:read")},
                    )
                ],
            ),
        ]
    )
    server.add_generic_rpc_handlers((_handlers(calls, on_write),))
    health_servicer = health.aio.HealthServicer()  # type: ignore[attr-defined]
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    if sessions is not None:
        audit_grpc.add_AuditAdminServiceServicer_to_server(AuditAdminServicer(sessions), server)
    credentials = server_credentials(settings) if settings is not None else None
    if credentials is None:
        port = server.add_insecure_port("127.0.0.1:0")
    else:
        port = server.add_secure_port("127.0.0.1:0", credentials)
    await server.start()
    await health_servicer.set("", health_pb2.HealthCheckResponse.SERVING)
    return server, port


async def _call(channel: grpc.aio.Channel, method: str, value: str = "x") -> str:
    stub = channel.unary_unary(
        f"/{SERVICE}/{method}",
        request_serializer=StringValue.SerializeToString,
        response_deserializer=StringValue.FromString,
    )
    response: StringValue = await stub(StringValue(value=value), timeout=5)
    return response.value


@pytest.fixture
async def plain_server(pki: DevSecurity) -> AsyncIterator[tuple[int, Calls]]:
    calls = Calls()
    server, port = await _serve(pki, calls, limits={"expensive_read": Limit(rate=0.001, burst=2)})
    yield port, calls
    await server.stop(None)


def _token(pki: DevSecurity, scopes: list[str], **kwargs: Any) -> str:
    return pki.issuer().issue("platform:test", scopes, **kwargs)


def _other_issuer(tmp_path: Path) -> TokenIssuer:
    other = DevSecurity(tmp_path / "other", [])
    other.ensure()
    return other.issuer()


async def test_refusals_have_the_right_code_and_never_reach_the_handler(
    pki: DevSecurity, plain_server: tuple[int, Calls], tmp_path: Path
) -> None:
    port, calls = plain_server
    address = f"127.0.0.1:{port}"
    cases = {
        "no token": (None, grpc.StatusCode.UNAUTHENTICATED),
        "garbage": ("not-a-token", grpc.StatusCode.UNAUTHENTICATED),
        "expired": (_token(pki, ["things:write"], ttl_seconds=-120), grpc.StatusCode.UNAUTHENTICATED),
        "other key": (
            _other_issuer(tmp_path).issue("platform:test", ["things:write"]),
            grpc.StatusCode.UNAUTHENTICATED,
        ),
        "other audience": (_token(pki, ["things:write"], audience="billing-portal"), grpc.StatusCode.UNAUTHENTICATED),
        "no scope": (_token(pki, ["things:read"]), grpc.StatusCode.PERMISSION_DENIED),
    }
    for name, (token, code) in cases.items():
        channel = open_channel(address, tls=None, token=(lambda t=token: t) if token else None)  # type: ignore[misc]
        async with channel:
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                await _call(channel, "Write")
        assert refused.value.code() == code, name
        assert "eyJ" not in (refused.value.details() or ""), name
    # A method missing from the table is denied even with every scope the table knows.
    async with open_channel(address, tls=None, token=lambda: _token(pki, ["things:read", "things:write"])) as channel:
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await _call(channel, "Undeclared")
        assert refused.value.code() == grpc.StatusCode.PERMISSION_DENIED
        assert calls.handled == []
        assert await _call(channel, "Write") == "written"
    assert calls.handled == [("Write", "platform:test")]


async def test_health_needs_no_token(plain_server: tuple[int, Calls]) -> None:
    port, _ = plain_server
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        response = await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(service=""))
    assert response.status == health_pb2.HealthCheckResponse.SERVING


async def test_rate_limit_answers_resource_exhausted_with_retry_info(
    pki: DevSecurity, plain_server: tuple[int, Calls]
) -> None:
    port, calls = plain_server
    greedy = _token(pki, ["things:read"])
    async with open_channel(f"127.0.0.1:{port}", tls=None, token=lambda: greedy) as channel:
        assert [await _call(channel, "Read") for _ in range(2)] == ["platform:test"] * 2
        with pytest.raises(grpc.aio.AioRpcError) as limited:
            await _call(channel, "Read")
    assert limited.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    status = rpc_status.from_call(limited.value)  # type: ignore[arg-type]
    assert status is not None
    retry = [d for d in status.details if d.Is(error_details_pb2.RetryInfo.DESCRIPTOR)]
    assert len(retry) == 1
    info = error_details_pb2.RetryInfo()
    retry[0].Unpack(info)
    assert info.retry_delay.ToTimedelta().total_seconds() > 0
    # Another caller has a bucket of its own.
    other = pki.issuer().issue("platform:other", ["things:read"])
    async with open_channel(f"127.0.0.1:{port}", tls=None, token=lambda: other) as channel:
        assert await _call(channel, "Read") == "platform:other"
    assert len(calls.handled) == 3


def _tls_settings(pki: DevSecurity, **overrides: Any) -> ServiceSettings:
    values: dict[str, Any] = {
        "transport": "tls",
        "tls_cert_file": str(pki.cert_file("svc")),
        "tls_key_file": str(pki.key_file("svc")),
        "tls_ca_file": str(pki.ca_file),
        "tls_require_client_cert": True,
    }
    values.update(overrides)
    return ServiceSettings(**values)


def _files(pki: DevSecurity, name: str | None) -> TlsFiles:
    if name is None:
        return TlsFiles(None, None, pki.ca_file.read_bytes())
    return TlsFiles(pki.cert_file(name).read_bytes(), pki.key_file(name).read_bytes(), pki.ca_file.read_bytes())


async def test_a_tls_only_server_refuses_plaintext_and_callers_without_a_certificate(pki: DevSecurity) -> None:
    calls = Calls()
    server, port = await _serve(pki, calls, settings=_tls_settings(pki))
    address = f"127.0.0.1:{port}"
    token = _token(pki, ["things:read"])
    try:
        for tls in (None, _files(pki, None)):  # plaintext; TLS without a client certificate
            async with open_channel(address, tls=tls, token=lambda: token) as channel:
                with pytest.raises(grpc.aio.AioRpcError) as refused:
                    await _call(channel, "Read")
            assert refused.value.code() == grpc.StatusCode.UNAVAILABLE
        assert calls.handled == []
        async with open_channel(address, tls=_files(pki, "client"), token=lambda: token) as channel:
            assert await _call(channel, "Read") == "platform:test"
        # A service's own channels, as serve() configures them: its certificate and its token.
        clients.configure(clients.ClientSecurity(_files(pki, "svc"), lambda: token))
        try:
            async with clients.service_channel(address) as channel:
                assert await _call(channel, "Read") == "platform:test"
        finally:
            clients.configure(clients.ClientSecurity(None, None))
    finally:
        await server.stop(None)


def test_tls_without_its_files_does_not_start(pki: DevSecurity) -> None:
    with pytest.raises(ValueError, match="tls_cert_file"):
        server_credentials(ServiceSettings(transport="tls"))
    assert server_credentials(ServiceSettings(transport="plaintext")) is None
    assert server_credentials(_tls_settings(pki, tls_require_client_cert=False)) is not None


async def test_audit_record_joins_the_change_and_is_append_only(
    pki: DevSecurity, migrated_database: Callable[[str, Path], Awaitable[str]]
) -> None:
    url = await migrated_database("audit", BALANCE_MIGRATIONS)
    engine = create_engine(url, 2)
    sessions = session_factory(engine)
    outbox, _ = messaging_tables(sa.MetaData())
    changes = {"fail": False}

    async def change() -> None:
        """A unit of work that publishes an event naming an account, as a real handler does."""
        async with UnitOfWork(sessions, outbox, SystemClock()) as uow:
            uow.publish(
                "evolutivo.test.v1.thing.written",
                balance_service_pb2.GetBalanceRequest(account_id="2b1c3d4e-0000-4000-8000-000000000001"),
            )
            if changes["fail"]:
                raise RuntimeError("rolled back")
            await uow.commit()

    calls = Calls()
    server, port = await _serve(pki, calls, engine=engine, on_write=change)
    token = pki.issuer().issue("platform:crm", ["things:write", "things:read", "audit:read"])
    try:
        async with open_channel(f"127.0.0.1:{port}", tls=None, token=lambda: token) as channel:
            assert await _call(channel, "Write") == "written"
            changes["fail"] = True
            with pytest.raises(grpc.aio.AioRpcError):
                await _call(channel, "Write")  # no change, so no record
            await _call(channel, "Read")  # reads are not audited
            audit = audit_grpc.AuditAdminServiceStub(channel)
            by_account = await audit.ListAuditRecords(
                audit_pb.ListAuditRecordsRequest(account_id="2b1c3d4e-0000-4000-8000-000000000001")
            )
            by_actor = await audit.ListAuditRecords(audit_pb.ListAuditRecordsRequest(actor="platform:crm"))
            nobody = await audit.ListAuditRecords(audit_pb.ListAuditRecordsRequest(actor="platform:other"))
        assert len(by_account.audit_records) == 1
        assert list(by_actor.audit_records) == list(by_account.audit_records)
        assert nobody.audit_records == []
        record = by_account.audit_records[0]
        assert record.rpc == f"/{SERVICE}/Write"
        assert record.actor == "platform:crm" and record.actor_issuer == "evolutivo-dev"
        assert record.source == "unit_of_work"
        assert record.request_id
        assert list(record.event_types) == ["evolutivo.balance.v1.GetBalanceRequest"]
        async with engine.begin() as conn:
            assert (await conn.execute(sa.select(sa.func.count()).select_from(audit_log))).scalar_one() == 1
            outbox_rows = (await conn.execute(sa.select(sa.func.count()).select_from(outbox))).scalar_one()
            assert outbox_rows == 1
        for statement in ("UPDATE audit_log SET actor = 'someone-else'", "DELETE FROM audit_log", "TRUNCATE audit_log"):
            with pytest.raises(sa.exc.DBAPIError, match="append-only"):
                async with engine.begin() as conn:
                    await conn.execute(sa.text(statement))
    finally:
        await server.stop(None)
        await engine.dispose()


async def test_a_mutating_call_without_a_unit_of_work_is_audited_after_success(
    pki: DevSecurity, migrated_database: Callable[[str, Path], Awaitable[str]]
) -> None:
    url = await migrated_database("audit", BALANCE_MIGRATIONS)
    engine = create_engine(url, 2)
    calls = Calls()
    server, port = await _serve(pki, calls, engine=engine)
    token = pki.issuer().issue("ops:alice", ["things:write"])
    try:
        async with open_channel(f"127.0.0.1:{port}", tls=None, token=lambda: token) as channel:
            await _call(channel, "Write")
        async with engine.begin() as conn:
            rows = (await conn.execute(sa.select(audit_log))).all()
        assert [(r.actor, r.rpc, r.source) for r in rows] == [("ops:alice", f"/{SERVICE}/Write", "interceptor")]
        assert json.loads(json.dumps(rows[0].resource_ids)) == {}
    finally:
        await server.stop(None)
        await engine.dispose()
