"""ServiceInterceptor on a real grpc.aio server: ServiceErrors become rich statuses, anything else
INTERNAL with the request id, and request ids are taken from the caller's metadata."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import grpc
import pytest
from evolutivo_runtime.errors import FailedPrecondition, InvalidArgument, NotFound
from evolutivo_runtime.logging import request_id_var
from evolutivo_runtime.server.interceptors import REQUEST_ID_METADATA, ServiceInterceptor
from google.protobuf.wrappers_pb2 import StringValue
from google.rpc import code_pb2, error_details_pb2, status_pb2
from grpc_status import rpc_status

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
