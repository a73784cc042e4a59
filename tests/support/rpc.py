"""A service's servicer behind a real gRPC server, and the field violations its errors carry."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any, TypeVar

import grpc
from google.rpc import error_details_pb2, status_pb2
from grpc_status import rpc_status

S = TypeVar("S")


@asynccontextmanager
async def serving(
    add_servicer: Callable[[S, grpc.aio.Server], Any], servicer: S, *interceptors: grpc.aio.ServerInterceptor[Any, Any]
) -> AsyncIterator[grpc.aio.Channel]:
    """`servicer` on a server of its own on a free local port; a channel to it until exit."""
    server = grpc.aio.server(interceptors=list(interceptors))
    add_servicer(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            yield channel
    finally:
        await server.stop(None)


def violated_fields(status: status_pb2.Status) -> list[str]:
    """The fields a google.rpc.Status's BadRequest details name, in order."""
    fields = []
    for detail in status.details:
        if detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
            bad = error_details_pb2.BadRequest()
            detail.Unpack(bad)
            fields += [v.field for v in bad.field_violations]
    return fields


def bad_request_fields(error: grpc.aio.AioRpcError) -> list[str]:
    """The fields a failed call's BadRequest details name, in order."""
    status = rpc_status.from_call(error)  # type: ignore[arg-type]
    assert status is not None
    return violated_fields(status)
