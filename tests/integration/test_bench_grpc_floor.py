"""bench.grpc_floor's server against a real PostgreSQL, over real gRPC: it answers every call of
an open loop with the request it got (one read per call), and is gone once its block ends."""

from __future__ import annotations

import grpc
import psutil  # type: ignore[import-untyped]  # no stubs pinned; the harness only
import pytest

from bench.common import open_loop
from bench.floor_server import METHOD
from bench.grpc_floor import floor_server


async def test_the_floor_server_answers_an_open_loop_and_stops(pg_server_url: str) -> None:
    async with floor_server(pg_server_url, None) as (address, pid):
        async with grpc.aio.insecure_channel(address) as channel:
            call = channel.unary_unary(METHOD, request_serializer=None, response_deserializer=None)
            assert await call(b"ping") == b"ping"
            figure = await open_loop(1.0, 200, lambda _: call(b"x"), "floor", "reads/s")
    assert (figure.operations, figure.items, figure.extra["errors"]) == (200, 200, 0.0)
    assert figure.p50_ms is not None and figure.p99_ms is not None and 0 < figure.p50_ms <= figure.p99_ms
    with pytest.raises(psutil.NoSuchProcess):
        psutil.Process(pid).status()
