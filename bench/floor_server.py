"""The gRPC floor's server: what a read costs with no service behind it.

A process like a service's, as little as one can be: grpc.aio on uvloop, the suite's TLS and its
ServiceInterceptor (request ids, metrics, error mapping; no guards: they need a service's
tokens and database), and one method that makes one PostgreSQL round trip through an asyncpg
pool. `python -m bench.floor_server --database URL [--tls-dir DIR]` prints its port, then
serves until it is terminated.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import asyncpg
import grpc
import uvloop
from evolutivo_runtime.server.interceptors import ServiceInterceptor

SERVICE = "evolutivo.bench.v1.Floor"
METHOD = f"/{SERVICE}/Read"
# The development certificate it serves with (a service's: the harness's client trusts it).
CERTIFICATE_OF = "balance"


async def serve(database: str, tls_dir: Path | None) -> None:
    pool = await asyncpg.create_pool(database, min_size=2, max_size=4)

    async def read(request: bytes, context: grpc.aio.ServicerContext[bytes, bytes]) -> bytes:
        async with pool.acquire() as conn:
            await conn.fetchval("SELECT $1::int + 1", len(request))
        return request

    server = grpc.aio.server(interceptors=[ServiceInterceptor("bench.evolutivo.io")], maximum_concurrent_rpcs=100)
    server.add_generic_rpc_handlers(
        (grpc.method_handlers_generic_handler(SERVICE, {"Read": grpc.unary_unary_rpc_method_handler(read)}),)
    )
    if tls_dir is None:
        port = server.add_insecure_port("127.0.0.1:0")
    else:
        credentials = grpc.ssl_server_credentials(
            [((tls_dir / f"{CERTIFICATE_OF}-key.pem").read_bytes(), (tls_dir / f"{CERTIFICATE_OF}.pem").read_bytes())],
            root_certificates=(tls_dir / "ca.pem").read_bytes(),
            require_client_auth=True,
        )
        port = server.add_secure_port("127.0.0.1:0", credentials)
    await server.start()
    print(port, flush=True)
    try:
        await server.wait_for_termination()
    finally:
        await pool.close()


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.floor_server")
    parser.add_argument("--database", required=True, help="a libpq URL the pool connects to")
    parser.add_argument("--tls-dir", type=Path, default=None, help="the stack's development certificates")
    args = parser.parse_args()
    uvloop.run(serve(args.database, args.tls_dir))


if __name__ == "__main__":
    main()
