"""A real Tryton server for the ERP gateway's tests, started once per test session.

Tryton lives in its own virtualenv (.venv-tryton, made by scripts/setup.sh from
requirements-tryton.txt) because its dependencies are not the suite's. Once per session:
trytond-admin creates a database on the tests' PostgreSQL with account_invoice and its dependencies
activated, tryton_bootstrap.py adds a company, fiscal years, a chart of accounts, taxes and invoice
sequences, and `trytond` serves JSON-RPC on a free local port. The tests talk to it as the gateway
does (JSON-RPC over HTTP) and read back through the same API what the gateway created.

Modules share that Tryton, and the stacks of two modules number accounts and bills alike (A-00000001,
F-<year>-000001), which the gateway uses to find its records again. A module that checks all the
ERP holds takes `fresh_tryton` instead: a copy of the database as set up, served on its own.
"""

from __future__ import annotations

import asyncio
import atexit
import json
import os
import shutil
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from evolutivo_runtime.db import plain_url
from sqlalchemy.engine import make_url

ROOT = Path(__file__).resolve().parents[2]
TRYTON_VENV = Path(os.environ.get("EVOLUTIVO_TRYTON_VENV", ROOT / ".venv-tryton"))
ADMIN = "admin"
ADMIN_PASSWORD = "evolutivo-admin"
STARTUP_SECONDS = 60.0


@dataclass
class Tryton:
    """A running trytond: its JSON-RPC URL and what tryton_bootstrap.py set up."""

    url: str
    database: str
    company: int
    accounts: dict[str, int]
    taxes: dict[str, int]
    journals: dict[str, int]
    process: subprocess.Popen[bytes]
    log: Path
    env: dict[str, str] = field(repr=False)
    # The database as tryton_bootstrap.py left it, never served: `fresh_tryton` copies it.
    template: str = ""

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    def close(self) -> None:
        """Stops the server for good and removes its scratch folder (log, password file)."""
        self.stop()
        shutil.rmtree(self.log.parent, ignore_errors=True)

    def start(self) -> None:
        """(Re)starts the server on the same port and database (after `stop`)."""
        self.process = _serve(self.env, self.database, self.log)
        _wait_until_serving(self.url, self.process, self.log)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _server_uri(pg_server_url: str) -> str:
    """trytond's database URI: the server without a database (trytond appends the name)."""
    url = make_url(pg_server_url)
    return url.set(drivername="postgresql", database="").render_as_string(hide_password=False)


def _serve(env: dict[str, str], database: str, log: Path) -> subprocess.Popen[bytes]:
    # -d loads the database's pool at start (a login before that finds an empty pool).
    command = [str(TRYTON_VENV / "bin" / "trytond"), "-d", database]
    with log.open("ab") as out:
        return subprocess.Popen(command, env=env, stdout=out, stderr=subprocess.STDOUT)


def _wait_until_serving(url: str, process: subprocess.Popen[bytes], log: Path) -> None:
    # Methods outside a database are posted to the server's root.
    url = url.split("/", 3)[0] + "//" + url.split("/", 3)[2] + "/rpc/"
    deadline = time.monotonic() + STARTUP_SECONDS
    body = json.dumps({"id": 0, "method": "common.server.version", "params": []}).encode()
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"trytond exited with {process.returncode}:\n{log.read_text()[-3000:]}")
        try:
            request = urllib.request.Request(url, body, {"Content-Type": "application/json"})
            with urllib.request.urlopen(request, timeout=2):
                return
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            time.sleep(0.2)  # the server is still starting
    raise RuntimeError(f"trytond did not answer within {STARTUP_SECONDS}s:\n{log.read_text()[-3000:]}")


def _create_database(pg_server_url: str, database: str) -> None:
    """trytond-admin initialises a database but does not create it."""

    async def create() -> None:
        conn = await asyncpg.connect(plain_url(pg_server_url))
        try:
            await conn.execute(f"CREATE DATABASE \"{database}\" ENCODING 'UTF8' TEMPLATE template0")
        finally:
            await conn.close()

    asyncio.run(create())


def _copy_database(pg_server_url: str, template: str, database: str) -> None:
    """A copy of a database nobody is connected to (PostgreSQL's CREATE DATABASE ... TEMPLATE)."""

    async def copy() -> None:
        conn = await asyncpg.connect(plain_url(pg_server_url))
        try:
            await conn.execute(f'CREATE DATABASE "{database}" TEMPLATE "{template}"')
        finally:
            await conn.close()

    asyncio.run(copy())


def start_tryton(pg_server_url: str) -> Tryton:
    if not (TRYTON_VENV / "bin" / "trytond").exists():
        raise RuntimeError(f"{TRYTON_VENV} has no trytond: run `make setup`")
    work = Path(tempfile.mkdtemp(prefix="evolutivo-tryton-"))
    database = f"tryton_{uuid.uuid4().hex[:12]}"
    password_file = work / "admin-password"
    password_file.write_text(ADMIN_PASSWORD)
    port = _free_port()
    env = {
        **os.environ,
        "TRYTOND_DATABASE__URI": _server_uri(pg_server_url),
        "TRYTOND_DATABASE__PATH": str(work / "data"),
        "TRYTOND_WEB__LISTEN": f"127.0.0.1:{port}",
        # One process answers all: no worker, queued tasks run in the request that queued them.
        "TRYTONPASSFILE": str(password_file),
        "PYTHONDONTWRITEBYTECODE": "1",
    }
    log = work / "trytond.log"
    _create_database(pg_server_url, database)
    with log.open("ab") as out:
        subprocess.run(
            [
                str(TRYTON_VENV / "bin" / "trytond-admin"),
                "-d", database,
                "--email", "admin@example.com",
                "-u", "account_invoice",
                "--activate-dependencies",
            ],
            env=env, stdout=out, stderr=subprocess.STDOUT, check=True,
        )  # fmt: skip
    bootstrap = subprocess.run(
        [str(TRYTON_VENV / "bin" / "python"), str(Path(__file__).with_name("tryton_bootstrap.py")), database],
        env=env,
        capture_output=True,
        check=False,
    )
    if bootstrap.returncode != 0:
        raise RuntimeError(f"tryton_bootstrap.py failed:\n{bootstrap.stderr.decode()[-3000:]}")
    setup: dict[str, Any] = json.loads(bootstrap.stdout)
    template = f"{database}_template"
    _copy_database(pg_server_url, database, template)
    url = f"http://127.0.0.1:{port}/{database}/"
    process = _serve(env, database, log)
    server = Tryton(
        url=url,
        database=database,
        company=setup["company"],
        accounts=setup["accounts"],
        taxes=setup["taxes"],
        journals=setup["journals"],
        process=process,
        log=log,
        env=env,
        template=template,
    )
    atexit.register(server.close)
    _wait_until_serving(url, process, log)
    return server


_shared: Tryton | None = None


def shared_tryton(pg_server_url: str) -> Tryton:
    """The session's one Tryton (its database is created once, whatever the modules that use it)."""
    global _shared
    if _shared is None or _shared.process.poll() is not None:
        if _shared is not None:
            _shared.start()
        else:
            _shared = start_tryton(pg_server_url)
    return _shared


def fresh_tryton(pg_server_url: str) -> Tryton:
    """A Tryton of its own, for a module that checks everything the ERP holds: a copy of the
    session's database as tryton_bootstrap.py set it up (the same company, accounts, taxes and
    journals, with the same ids), served by its own trytond on a free port — seconds instead of
    the set-up's minute. Close it when done."""
    shared = shared_tryton(pg_server_url)
    database = f"tryton_{uuid.uuid4().hex[:12]}"
    _copy_database(pg_server_url, shared.template, database)
    work = Path(tempfile.mkdtemp(prefix="evolutivo-tryton-"))
    port = _free_port()
    env = {**shared.env, "TRYTOND_DATABASE__PATH": str(work / "data"), "TRYTOND_WEB__LISTEN": f"127.0.0.1:{port}"}
    log = work / "trytond.log"
    url = f"http://127.0.0.1:{port}/{database}/"
    server = Tryton(
        url=url,
        database=database,
        company=shared.company,
        accounts=shared.accounts,
        taxes=shared.taxes,
        journals=shared.journals,
        process=_serve(env, database, log),
        log=log,
        env=env,
    )
    atexit.register(server.close)
    _wait_until_serving(url, server.process, log)
    return server


@pytest.fixture(scope="session")
def tryton(pg_server_url: str) -> Iterator[Tryton]:
    """Import into a test module: `from support.tryton import tryton  # noqa: F401`."""
    server = shared_tryton(pg_server_url)
    yield server
