"""The floor under the balance reads' latency, measured in the same run as they are.

GetBalance's p99 is read against what the machine gives a call that does almost nothing: the
same client (the harness's channel: TLS, the token interceptor), the same open loop at the same
rate, to a server process like a service's (bench/floor_server.py: uvloop, TLS, the suite's
interceptor) whose one method makes one PostgreSQL round trip on the stack's PostgreSQL. What
GetBalance adds above this floor is balance's own; the floor itself is gRPC, TLS, the two event
loops and the machine's scheduling, which no change to a service moves.
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import psutil  # type: ignore[import-untyped]  # no stubs pinned; the harness only
from evolutivo_runtime.db import plain_url
from evolutivo_stack.stack import Stack

from bench.common import Figure, open_loop
from bench.floor_server import METHOD

NAME = "gRPC floor (no service)"
_REPO = Path(__file__).resolve().parents[1]


@contextlib.asynccontextmanager
async def floor_server(database_url: str, tls_dir: Path | None) -> AsyncIterator[tuple[str, int]]:
    """The floor's server on that PostgreSQL (with TLS from the stack's development certificates
    in `tls_dir`), started for the block: (its address, its pid)."""
    tls = ["--tls-dir", str(tls_dir)] if tls_dir is not None else []
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "bench.floor_server",
        "--database",
        plain_url(database_url),
        *tls,
        stdout=asyncio.subprocess.PIPE,
        cwd=_REPO,
    )
    try:
        assert proc.stdout is not None
        line = await asyncio.wait_for(proc.stdout.readline(), 60)
        if not line.strip().isdigit():
            raise RuntimeError(f"the floor server did not start (exit code {proc.returncode})")
        yield f"127.0.0.1:{int(line)}", proc.pid
    finally:
        if proc.returncode is None:
            proc.terminate()
            try:
                await asyncio.wait_for(proc.wait(), 10)
            except TimeoutError:
                proc.kill()
                await proc.wait()


async def measure(stack: Stack, seconds: float, rate: float) -> Figure:
    """The floor's latency at `rate` calls per second for `seconds`, and its server's CPU per call."""
    tls_dir = stack.security.dir if stack.transport == "tls" else None
    async with floor_server(stack.server_url, tls_dir) as (address, pid):
        channel = stack.channel_to(address)
        try:
            call = channel.unary_unary(METHOD, request_serializer=None, response_deserializer=None)
            payload = b"\x0a\x24" + b"a" * 36  # a request the size of GetBalance's

            async def read(_: int) -> None:
                await call(payload)

            for _ in range(200):  # connections and statements warm, as the service's are
                await read(0)
            server = psutil.Process(pid)
            before = sum(server.cpu_times()[:2])
            figure = await open_loop(
                seconds, rate, read, NAME, "reads/s", f"open loop at {rate:g}/s; one PostgreSQL read per call"
            )
            figure.extra["cpu_ms_per_read_floor"] = (sum(server.cpu_times()[:2]) - before) * 1000 / max(figure.items, 1)
            return figure
        finally:
            await channel.close(None)
