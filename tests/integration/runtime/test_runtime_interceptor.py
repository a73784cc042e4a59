"""ServiceInterceptor on a real grpc.aio server: ServiceErrors become rich statuses, database
failures a retry can outlive ABORTED or UNAVAILABLE (on a real PostgreSQL), anything else INTERNAL
with the request id, and request ids are taken from the caller's metadata."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import grpc
import nats
import pytest
from evolutivo_runtime.db import create_engine
from evolutivo_runtime.errors import FailedPrecondition, InvalidArgument, NotFound
from evolutivo_runtime.logging import request_id_var
from evolutivo_runtime.server.interceptors import REQUEST_ID_METADATA, ServiceInterceptor
from google.protobuf.wrappers_pb2 import StringValue
from google.rpc import code_pb2, error_details_pb2, status_pb2
from grpc_status import rpc_status
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

DOMAIN = "test.evolutivo.io"
SERVICE = "evolutivo.test.v1.TestService"


async def unary(request: StringValue, context: grpc.aio.ServicerContext[Any, Any]) -> StringValue:
    match request.value:
        case "invalid":
            raise InvalidArgument("amount", "must be positive", reason="AMOUNT_INVALID")
        case "missing":
            raise NotFound("account", "acc-9")
        case "precondition":
            raise FailedPrecondition("ACCOUNT_CLOSED", "account is closed", {"account_id": "acc-1"})
        case "crash":
            raise RuntimeError("secret internals")
        case "abort":
            await context.abort(grpc.StatusCode.PERMISSION_DENIED, "not yours")
        case _:
            return StringValue(value=request_id_var.get(None) or "")
    raise AssertionError("unreachable")


async def client_stream(
    requests: AsyncIterator[StringValue], context: grpc.aio.ServicerContext[Any, Any]
) -> StringValue:
    values = [r.value async for r in requests]
    if "invalid" in values:
        raise InvalidArgument("values", "must not contain 'invalid'")
    return StringValue(value=",".join(values))


def _handlers() -> grpc.GenericRpcHandler[Any, Any]:
    return grpc.method_handlers_generic_handler(
        SERVICE,
        {
            "Unary": grpc.unary_unary_rpc_method_handler(
                unary, request_deserializer=StringValue.FromString, response_serializer=StringValue.SerializeToString
            ),
            "ClientStream": grpc.stream_unary_rpc_method_handler(
                client_stream,
                request_deserializer=StringValue.FromString,
                response_serializer=StringValue.SerializeToString,
            ),
        },
    )


@pytest.fixture
async def channel() -> AsyncIterator[grpc.aio.Channel]:
    server = grpc.aio.server(interceptors=[ServiceInterceptor(DOMAIN)])
    server.add_generic_rpc_handlers((_handlers(),))
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as ch:
            yield ch
    finally:
        await server.stop(None)


def _unary(channel: grpc.aio.Channel) -> Callable[..., Any]:
    return channel.unary_unary(
        f"/{SERVICE}/Unary",
        request_serializer=StringValue.SerializeToString,
        response_deserializer=StringValue.FromString,
    )


async def _rich_status(call: Any) -> status_pb2.Status:
    status = await rpc_status.aio.from_call(call)  # type: ignore[attr-defined,unused-ignore]
    assert status is not None, "no grpc-status-details-bin trailer"
    return status


def _unpack(status: status_pb2.Status, cls: type[Any]) -> list[Any]:
    found = []
    for detail in status.details:
        if detail.Is(cls.DESCRIPTOR):
            message = cls()
            detail.Unpack(message)
            found.append(message)
    return found


async def _failing_call(call: Awaitable[Any]) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as excinfo:
        await call
    return excinfo.value


async def test_invalid_argument_becomes_rich_status(channel: grpc.aio.Channel) -> None:
    call = _unary(channel)(StringValue(value="invalid"))
    error = await _failing_call(call)
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert error.details() == "amount: must be positive"
    status = await _rich_status(call)
    assert status.code == code_pb2.INVALID_ARGUMENT
    [info] = _unpack(status, error_details_pb2.ErrorInfo)
    assert (info.reason, info.domain, dict(info.metadata)) == ("AMOUNT_INVALID", DOMAIN, {"field": "amount"})
    [bad] = _unpack(status, error_details_pb2.BadRequest)
    assert [(v.field, v.description) for v in bad.field_violations] == [("amount", "must be positive")]


@pytest.mark.parametrize(
    ("value", "code", "reason", "metadata"),
    [
        (
            "missing",
            grpc.StatusCode.NOT_FOUND,
            "ACCOUNT_NOT_FOUND",
            {"resource_type": "account", "resource_id": "acc-9"},
        ),
        ("precondition", grpc.StatusCode.FAILED_PRECONDITION, "ACCOUNT_CLOSED", {"account_id": "acc-1"}),
    ],
)
async def test_service_errors_map_to_their_codes(
    channel: grpc.aio.Channel, value: str, code: grpc.StatusCode, reason: str, metadata: dict[str, str]
) -> None:
    call = _unary(channel)(StringValue(value=value))
    error = await _failing_call(call)
    assert error.code() == code
    [info] = _unpack(await _rich_status(call), error_details_pb2.ErrorInfo)
    assert (info.reason, info.domain, dict(info.metadata)) == (reason, DOMAIN, metadata)


async def test_unexpected_exception_is_internal_and_names_the_request_id(channel: grpc.aio.Channel) -> None:
    call = _unary(channel)(StringValue(value="crash"), metadata=((REQUEST_ID_METADATA, "req-123"),))
    error = await _failing_call(call)
    assert error.code() == grpc.StatusCode.INTERNAL
    assert "req-123" in (error.details() or "")
    assert "secret internals" not in (error.details() or "")


async def test_handler_abort_passes_through(channel: grpc.aio.Channel) -> None:
    error = await _failing_call(_unary(channel)(StringValue(value="abort")))
    assert error.code() == grpc.StatusCode.PERMISSION_DENIED
    assert error.details() == "not yours"


async def test_request_id_from_metadata_or_generated(channel: grpc.aio.Channel) -> None:
    given = await _unary(channel)(StringValue(value="ok"), metadata=((REQUEST_ID_METADATA, "req-abc"),))
    assert given.value == "req-abc"
    first = await _unary(channel)(StringValue(value="ok"))
    second = await _unary(channel)(StringValue(value="ok"))
    assert first.value and second.value and first.value != second.value


async def test_client_streaming_errors_are_mapped(channel: grpc.aio.Channel) -> None:
    method = channel.stream_unary(
        f"/{SERVICE}/ClientStream",
        request_serializer=StringValue.SerializeToString,
        response_deserializer=StringValue.FromString,
    )

    async def requests(*values: str) -> AsyncIterator[StringValue]:
        for v in values:
            yield StringValue(value=v)

    assert (await method(requests("a", "b"))).value == "a,b"
    call = method(requests("a", "invalid"))
    error = await _failing_call(call)
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    [bad] = _unpack(await _rich_status(call), error_details_pb2.BadRequest)
    assert bad.field_violations[0].field == "values"


# Database and NATS failures a retry can outlive (evolutivo_runtime.transient_errors), on a real
# PostgreSQL and NATS: each handler below fails one way, most inside a transaction that first
# wrote a row (which must not stay).


@dataclass
class DbService:
    channel: grpc.aio.Channel
    engine: AsyncEngine
    # Set by the deadlock handler once it holds row 1; it then asks for row 2 once `go` is set.
    locked: asyncio.Event = field(default_factory=asyncio.Event)
    go: asyncio.Event = field(default_factory=asyncio.Event)


@pytest.fixture
async def db_service(new_database: Callable[[str], Awaitable[str]], nats_url: str) -> AsyncIterator[DbService]:
    engine = create_engine(await new_database("dberr"), pool_size=4)
    closed_nats = await nats.connect(nats_url)
    await closed_nats.close()
    live_nats = await nats.connect(nats_url)
    silent = f"evolutivo.test.silent.{uuid.uuid4().hex}"
    await live_nats.subscribe(silent, cb=_ignore)  # a responder that never answers
    async with engine.begin() as conn:
        await conn.execute(text("CREATE TABLE rows (id int PRIMARY KEY)"))
        await conn.execute(text("CREATE TABLE written (note text PRIMARY KEY)"))
        await conn.execute(text("INSERT INTO rows VALUES (1), (2)"))
    unreachable = create_engine("postgresql://postgres@127.0.0.1:1/nowhere", pool_size=1)
    locked, go = asyncio.Event(), asyncio.Event()

    async def fail(request: StringValue, context: grpc.aio.ServicerContext[Any, Any]) -> StringValue:
        if request.value == "unreachable":
            async with unreachable.begin() as conn:
                await conn.execute(text("SELECT 1"))
        if request.value == "nats_closed":  # a call that publishes itself, NATS gone meanwhile
            await closed_nats.publish("evolutivo.test.nowhere", b"")
        if request.value == "nats_no_responders":  # JetStream (or the server) not answering
            await live_nats.request(f"evolutivo.test.nobody.{uuid.uuid4().hex}", b"", timeout=2)
        if request.value == "nats_timeout":  # received, never answered: it may have taken effect
            await live_nats.request(silent, b"", timeout=0.2)
        async with engine.begin() as conn:
            await conn.execute(text("INSERT INTO written VALUES (:note)"), {"note": request.value})
            match request.value:
                case "lock_timeout":
                    await conn.execute(text("SET LOCAL lock_timeout = '200ms'"))
                    await conn.execute(text("SELECT id FROM rows WHERE id = 1 FOR UPDATE"))
                case "deadlock":
                    # The other transaction already waits for row 1 when this one asks for row 2,
                    # and this one checks for a deadlock first (100 ms against its 10 s): PostgreSQL
                    # aborts this one.
                    await conn.execute(text("SET LOCAL deadlock_timeout = '100ms'"))
                    await conn.execute(text("SELECT id FROM rows WHERE id = 1 FOR UPDATE"))
                    locked.set()
                    await asyncio.wait_for(go.wait(), 30)
                    await conn.execute(text("SELECT id FROM rows WHERE id = 2 FOR UPDATE"))
                case "terminated":
                    pid = await conn.scalar(text("SELECT pg_backend_pid()"))
                    async with engine.connect() as other:
                        await other.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": pid})
                    await conn.execute(text("SELECT 1"))
                case "duplicate":
                    await conn.execute(text("INSERT INTO rows VALUES (1)"))
                case "other_os_error":
                    raise ConnectionRefusedError(111, "Connection refused")  # an SMTP server, say
                case "callback_os_error":  # through SQLAlchemy's frames, raised in our code
                    await conn.run_sync(_refusing_callback)
        return StringValue(value="done")

    handlers = grpc.method_handlers_generic_handler(
        SERVICE,
        {
            "Fail": grpc.unary_unary_rpc_method_handler(
                fail, request_deserializer=StringValue.FromString, response_serializer=StringValue.SerializeToString
            )
        },
    )
    server = grpc.aio.server(interceptors=[ServiceInterceptor(DOMAIN)])
    server.add_generic_rpc_handlers((handlers,))
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    service = DbService(grpc.aio.insecure_channel(f"127.0.0.1:{port}"), engine, locked, go)
    try:
        yield service
    finally:
        await service.channel.close()
        await server.stop(None)
        await unreachable.dispose()
        await engine.dispose()
        await live_nats.close()


def _refusing_callback(_: Any) -> None:
    raise ConnectionRefusedError(111, "Connection refused")


async def _ignore(msg: Any) -> None:
    return None


async def _fail(service: DbService, value: str) -> tuple[grpc.aio.AioRpcError, error_details_pb2.ErrorInfo | None]:
    call = service.channel.unary_unary(
        f"/{SERVICE}/Fail",
        request_serializer=StringValue.SerializeToString,
        response_deserializer=StringValue.FromString,
    )(StringValue(value=value))
    error = await _failing_call(call)
    status = await rpc_status.aio.from_call(call)  # type: ignore[attr-defined,unused-ignore]
    infos = _unpack(status, error_details_pb2.ErrorInfo) if status is not None else []
    return error, (infos[0] if infos else None)


async def _written(service: DbService) -> list[str]:
    async with service.engine.connect() as conn:
        return list((await conn.scalars(text("SELECT note FROM written ORDER BY note"))).all())


async def test_a_lock_wait_past_the_timeout_is_aborted_and_changes_nothing(db_service: DbService) -> None:
    async with db_service.engine.connect() as holder:
        await holder.execute(text("SELECT id FROM rows WHERE id = 1 FOR UPDATE"))
        error, info = await _fail(db_service, "lock_timeout")
        await holder.rollback()
    assert error.code() == grpc.StatusCode.ABORTED
    assert info is not None
    assert (info.reason, info.domain, dict(info.metadata)) == ("LOCK_TIMEOUT", DOMAIN, {"sqlstate": "55P03"})
    assert "retry" in (error.details() or "")
    assert await _written(db_service) == []


async def test_a_deadlock_is_aborted_and_changes_nothing(db_service: DbService) -> None:
    async with db_service.engine.connect() as other:
        await other.execute(text("SET LOCAL deadlock_timeout = '10s'"))
        pid = await other.scalar(text("SELECT pg_backend_pid()"))
        await other.execute(text("SELECT id FROM rows WHERE id = 2 FOR UPDATE"))
        failing = asyncio.create_task(_fail(db_service, "deadlock"))
        await asyncio.wait_for(db_service.locked.wait(), 10)
        # Row 1 is the handler's: this waits until PostgreSQL aborts the handler's transaction.
        waiting = asyncio.create_task(other.execute(text("SELECT id FROM rows WHERE id = 1 FOR UPDATE")))
        async with db_service.engine.connect() as watcher:
            for _ in range(300):
                blocked = await watcher.scalar(
                    text("SELECT count(*) FROM pg_locks WHERE pid = :pid AND NOT granted"), {"pid": pid}
                )
                if blocked:
                    break
                await asyncio.sleep(0.01)
            assert blocked, "the other transaction waits for row 1"
        db_service.go.set()
        error, info = await failing
        await asyncio.wait_for(waiting, 30)
        await other.rollback()
    assert error.code() == grpc.StatusCode.ABORTED
    assert info is not None
    assert (info.reason, dict(info.metadata)) == ("TRANSACTION_CONFLICT", {"sqlstate": "40P01"})
    assert await _written(db_service) == []


@pytest.mark.parametrize("value", ["unreachable", "terminated"])
async def test_a_database_out_of_reach_is_unavailable(db_service: DbService, value: str) -> None:
    error, info = await _fail(db_service, value)
    assert error.code() == grpc.StatusCode.UNAVAILABLE
    assert info is not None
    assert info.reason == "DATABASE_UNAVAILABLE"
    assert await _written(db_service) == []


@pytest.mark.parametrize(
    ("value", "error"), [("nats_closed", "ConnectionClosedError"), ("nats_no_responders", "NoRespondersError")]
)
async def test_nats_out_of_reach_is_unavailable(db_service: DbService, value: str, error: str) -> None:
    answer, info = await _fail(db_service, value)
    assert answer.code() == grpc.StatusCode.UNAVAILABLE
    assert info is not None
    assert (info.reason, dict(info.metadata)) == ("MESSAGING_UNAVAILABLE", {"error": error})


async def test_nats_not_answering_in_time_is_deadline_exceeded(db_service: DbService) -> None:
    """The request reached a subscriber that never answered: it may have taken effect, so not
    UNAVAILABLE (which says retry as is) but DEADLINE_EXCEEDED."""
    answer, info = await _fail(db_service, "nats_timeout")
    assert answer.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    assert info is not None
    assert (info.reason, dict(info.metadata)) == ("MESSAGING_TIMEOUT", {"error": "TimeoutError"})


@pytest.mark.parametrize("value", ["duplicate", "other_os_error", "callback_os_error"])
async def test_other_failures_stay_internal(db_service: DbService, value: str) -> None:
    """A constraint violation is a bug a retry repeats; a refused connection to anything but the
    database (no driver frame in its traceback) is not the database's."""
    error, info = await _fail(db_service, value)
    assert error.code() == grpc.StatusCode.INTERNAL
    assert info is None
    assert await _written(db_service) == []
