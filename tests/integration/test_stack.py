"""Integration tests of the local stack orchestrator (evolutivo_stack.stack.Stack).

These test the orchestration itself, not the services: each service is replaced by a tiny stand-in
package (``evolutivo_<svc>`` put first on PYTHONPATH through the Stack's env overrides) whose
``migrate`` really connects to the database URL the Stack hands it and records the run in a table,
and whose ``serve`` runs the standard gRPC health service on the port the Stack gives it.  PostgreSQL
and NATS are real: the session servers from conftest.py, or the Stack's own embedded ones.
The end-to-end test of the real services lives with the e2e suite.
"""

from __future__ import annotations

import asyncio
import os
import tempfile
import textwrap
import uuid
from collections.abc import Iterator
from pathlib import Path

import asyncpg  # type: ignore[import-untyped,unused-ignore]
import pytest
from evolutivo_stack.stack import SERVICES, Stack, StackError, database_name
from support.databases import drop_databases

# A stand-in for one service: `migrate` and `serve` driven by the same env variables as the real ones.
_FAKE_SERVICE = """
import asyncio
import os
import signal
import sys
import threading
from concurrent import futures

import asyncpg
import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc


def main(service: str) -> None:
    prefix = service.upper() + "_"
    env = {key[len(prefix):]: value for key, value in os.environ.items() if key.startswith(prefix)}
    command = sys.argv[1]
    if os.environ.get("FAKE_FAIL_" + prefix + command.upper()):
        print(f"{service} {command}: failing on purpose", flush=True)
        sys.exit(3)
    if command == "migrate":
        async def migrate() -> None:
            conn = await asyncpg.connect(env["DATABASE_URL"])
            try:
                await conn.execute("CREATE TABLE IF NOT EXISTS fake_migrations (service text, at timestamptz)")
                await conn.execute("INSERT INTO fake_migrations VALUES ($1, now())", service)
            finally:
                await conn.close()
        asyncio.run(migrate())
        print(f"{service} migrated", flush=True)
        return
    assert command == "serve", command
    if os.environ.get("FAKE_HANG_" + prefix + "SERVE"):
        threading.Event().wait(3600)  # never SERVING
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    servicer = health.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(servicer, server)
    server.add_insecure_port(f"{env['GRPC_HOST']}:{env['GRPC_PORT']}")
    server.start()
    servicer.set("", health_pb2.HealthCheckResponse.SERVING)
    print(f"{service} serving clock={env['CLOCK_MODE']} nats={env['NATS_URL']} metrics={env['METRICS_PORT']}",
          flush=True)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    stop.wait()
    server.stop(1).wait()
    print(f"{service} stopped", flush=True)
"""


@pytest.fixture(scope="module")
def fake_services(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder with stand-in packages evolutivo_<svc> for the five services."""
    root = tmp_path_factory.mktemp("fake_services")
    (root / "fake_service.py").write_text(_FAKE_SERVICE)
    for service in SERVICES:
        package = root / f"evolutivo_{service}"
        package.mkdir()
        (package / "__init__.py").write_text("")
        (package / "__main__.py").write_text(
            textwrap.dedent(f"""
                from fake_service import main

                main({service!r})
            """)
        )
    return root


def _env(fake_services: Path, **extra: str) -> dict[str, str]:
    return {"PYTHONPATH": os.pathsep.join([str(fake_services), os.environ.get("PYTHONPATH", "")]), **extra}


@pytest.fixture
def suffix(pg_server_url: str) -> Iterator[str]:
    """A database-name suffix unique to the test; its databases are dropped afterwards."""
    suffix = f"_t{uuid.uuid4().hex[:8]}"
    yield suffix
    asyncio.run(drop_databases(pg_server_url, [database_name(service, suffix) for service in SERVICES]))


async def _migrations(url: str) -> list[str]:
    conn = await asyncpg.connect(url)
    try:
        return [row["service"] for row in await conn.fetch("SELECT service FROM fake_migrations")]
    finally:
        await conn.close()


def test_ports_follow_the_base_port(tmp_path: Path) -> None:
    stack = Stack(tmp_path, base_port=41000, replicas={"balance": 2})
    assert stack.addresses == {
        "customer": "127.0.0.1:41000",
        "charging": "127.0.0.1:41001",
        "balance": "127.0.0.1:41002",
        "billing": "127.0.0.1:41003",
        "erp_gateway": "127.0.0.1:41004",
    }
    assert stack.metrics_ports["erp_gateway"] == 41104
    assert stack.replica_addresses("balance") == ["127.0.0.1:41002", "127.0.0.1:41007"]
    with pytest.raises(StackError, match="unknown service"):
        Stack(tmp_path, replicas={"ledger": 2})


def test_start_creates_and_migrates_every_database_then_serves(
    tmp_path: Path, fake_services: Path, pg_server_url: str, nats_url: str, suffix: str
) -> None:
    stack = Stack(
        tmp_path,
        database_url=pg_server_url,
        nats_url=nats_url,
        base_port=None,
        env=_env(fake_services),
        database_suffix=suffix,
        clock_mode="system",
    )
    with stack:
        for service in SERVICES:
            assert stack.health(service) == "SERVING"
            url = stack.database_url(service)
            assert url.startswith("postgresql://") and url.endswith("/" + database_name(service, suffix))
            assert asyncio.run(_migrations(url)) == [service]
        assert stack.nats_url == nats_url
        log = (stack.log_dir / "erp_gateway.log").read_text()
        assert f"erp_gateway serving clock=system nats={nats_url}" in log

    # Stopped gracefully (SIGTERM): the stand-ins logged their own shutdown.
    assert "customer stopped" in (stack.log_dir / "customer.log").read_text()
    assert not any(stack.is_running(service) for service in SERVICES)

    # Starting again reuses the databases (create is idempotent) and migrates again.
    with Stack(
        tmp_path, database_url=pg_server_url, nats_url=nats_url, base_port=None,
        env=_env(fake_services), database_suffix=suffix,
    ) as again:  # fmt: skip
        assert asyncio.run(_migrations(again.database_url("billing"))) == ["billing", "billing"]


def test_kill_restart_and_replicas(
    tmp_path: Path, fake_services: Path, pg_server_url: str, nats_url: str, suffix: str
) -> None:
    with Stack(
        tmp_path, database_url=pg_server_url, nats_url=nats_url, base_port=None, env=_env(fake_services),
        database_suffix=suffix, services=["customer", "balance"], replicas={"balance": 2},
    ) as stack:  # fmt: skip
        assert stack.services == ("customer", "balance")
        first, second = stack.replicas("balance")
        assert first.address != second.address and first.pid != second.pid
        assert stack.health("balance", 1) == "SERVING"

        stack.kill("balance", 1)
        assert not stack.is_running("balance", 1) and stack.is_running("balance", 0)
        assert stack.health("balance", 1) == "UNREACHABLE"
        stack.start_service("balance")  # starts only the replica that is down
        assert stack.health("balance", 1) == "SERVING"
        assert first.pid is not None and stack.replicas("balance")[0].pid == first.pid

        old_pid = stack.replicas("customer")[0].pid
        stack.restart("customer", graceful=False)
        assert stack.health("customer") == "SERVING"
        assert stack.replicas("customer")[0].pid != old_pid


def test_a_service_that_dies_fails_start_with_its_log(
    tmp_path: Path, fake_services: Path, pg_server_url: str, nats_url: str, suffix: str
) -> None:
    stack = Stack(
        tmp_path, database_url=pg_server_url, nats_url=nats_url, base_port=None,
        env=_env(fake_services, FAKE_FAIL_BILLING_SERVE="1"), database_suffix=suffix,
    )  # fmt: skip
    with pytest.raises(StackError, match=r"(?s)billing exited with code 3.*billing serve: failing on purpose"):
        stack.start()
    assert not stack.is_started
    assert not any(stack.is_running(service) for service in SERVICES)


def test_a_failing_migration_or_a_service_never_serving_fails_start(
    tmp_path: Path, fake_services: Path, pg_server_url: str, nats_url: str, suffix: str
) -> None:
    def charging_only(startup_timeout: float = 90.0, **env: str) -> Stack:
        return Stack(
            tmp_path, database_url=pg_server_url, nats_url=nats_url, base_port=None, services=["charging"],
            database_suffix=suffix, env=_env(fake_services, **env), startup_timeout=startup_timeout,
        )  # fmt: skip

    stack = charging_only(FAKE_FAIL_CHARGING_MIGRATE="1")
    with pytest.raises(StackError, match=r"(?s)charging: migrate failed.*failing on purpose"):
        stack.start()

    stack = charging_only(startup_timeout=3, FAKE_HANG_CHARGING_SERVE="1")
    with pytest.raises(StackError, match="charging not SERVING after 3s"):
        stack.start()
    assert not stack.is_running("charging")


@pytest.fixture
def data_dir() -> Iterator[Path]:
    """A data folder outside pytest's basetemp.

    As root, the embedded PostgreSQL runs as another account that must traverse the folder's
    ancestors; any pytest session starting meanwhile strips the "other" bits of /tmp/pytest-of-root.
    """
    with tempfile.TemporaryDirectory(prefix="evolutivo-stack-test-") as folder:
        yield Path(folder) / "data"


def test_embedded_servers_keep_their_data_across_restarts(data_dir: Path, fake_services: Path) -> None:
    with Stack(data_dir, base_port=None, env=_env(fake_services), services=["customer"]) as stack:
        assert stack.embedded_postgres and stack.embedded_nats
        assert stack.nats_url.startswith("nats://127.0.0.1:")
        assert (data_dir / "postgres" / "pgdata" / "PG_VERSION").exists()
        assert (data_dir / "nats").is_dir()
        # The servers' processes, as the benchmark harness charges their CPU (PostgreSQL's backends
        # are the postmaster's children).
        pids = stack.server_pids()
        assert set(pids) == {"postgres", "nats"}
        assert Path(f"/proc/{pids['postgres']}/cmdline").read_bytes().split(b"\0")[0].endswith(b"postgres")
        assert b"nats-server" in Path(f"/proc/{pids['nats']}/cmdline").read_bytes()
    assert stack.server_pids() == {}, "none once stopped"
    with Stack(data_dir, base_port=None, env=_env(fake_services), services=["customer"]) as stack:
        assert asyncio.run(_migrations(stack.database_url("customer"))) == ["customer", "customer"]
    assert (data_dir / "logs" / "customer.log").read_text().count("customer stopped") == 2
