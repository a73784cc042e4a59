"""Runs the whole suite locally: PostgreSQL, NATS and the five services as separate processes.

:class:`Stack` is shared by the ``python -m evolutivo_stack up`` command and by end-to-end tests.

``start()``:

1. starts an embedded PostgreSQL in ``data_dir/postgres`` and an embedded NATS (JetStream) in
   ``data_dir/nats`` -- unless external server URLs were given, which are then used as they are;
2. creates one database per service (``evolutivo_<svc>``), idempotently;
3. runs ``python -m evolutivo_<svc> migrate`` for every service (in parallel; each service's
   migrations serialise themselves with an advisory lock, so running them twice is safe);
4. starts ``python -m evolutivo_<svc> serve`` for every replica of every service, with its
   settings in the environment (``<SVC>_DATABASE_URL``, ``<SVC>_NATS_URL``, ``<SVC>_GRPC_PORT``...)
   and its output appended to ``<log_dir>/<svc>.log`` (``<svc>-<n>.log`` for replica n > 0);
5. waits, with a bounded timeout, until the standard gRPC health check of every replica answers
   SERVING for the service ``""``.

Security (docs/security.md): before anything starts, the development CA, the services' and a
client's certificates, the token signing key and its JWKS are made under ``data_dir/security`` if
missing (:mod:`evolutivo_stack.devsecurity`). Every service serves mutual TLS and requires a token
(``transport="plaintext"`` turns TLS off, for debugging with plaintext tools; tokens stay required).
:meth:`Stack.channel` is the one place clients get a channel: TLS with the client certificate and
a token with every scope, or the token a test asks for.  A service that exits or never becomes SERVING makes ``start()``
   stop everything again and raise :class:`StackError` with the tail of that service's log.

``stop()`` sends SIGTERM to every service process (the runtime finishes in-flight calls and drains
its outbox), sends SIGKILL to what is still alive after ``stop_timeout``, then stops NATS and
PostgreSQL (only the embedded ones).  Data directories are kept, so the next ``start()`` on the same
``data_dir`` finds every account again.

Ports: with ``base_port=B``, replica 0 of the services listens on B..B+4 in the order
customer, charging, balance, billing, erp_gateway, and replica n on B+5n..B+5n+4; each metrics
port is its gRPC port + 100.  With ``base_port=None`` every port is a free port picked by the OS
(what tests want, so that two stacks never collide).
"""

from __future__ import annotations

import asyncio
import atexit
import concurrent.futures
import contextlib
import os
import random
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType
from typing import IO, Final, Literal, TypeVar
from urllib.parse import quote, urlsplit, urlunsplit

import grpc
from evolutivo_runtime.security.scopes import ALL_SCOPES
from evolutivo_runtime.security.transport import TlsFiles, open_channel
from grpc_health.v1 import health_pb2, health_pb2_grpc

from evolutivo_stack.devsecurity import DevSecurity
from evolutivo_stack.embedded import HOST, EmbeddedNats, EmbeddedPostgres, create_database, free_port

__all__ = [
    "SERVICES",
    "ClockMode",
    "Replica",
    "Stack",
    "StackError",
    "database_name",
    "env_prefix",
    "redact_url",
]

#: The five services, in port order.
SERVICES: Final[tuple[str, ...]] = ("customer", "charging", "balance", "billing", "erp_gateway")

#: Metrics port = gRPC port + this.
METRICS_PORT_OFFSET: Final = 100

ClockMode = Literal["system", "controllable"]
Transport = Literal["tls", "plaintext"]

# The development token's subject, as the audit log shows it.
DEV_SUBJECT: Final = "dev:admin"

_LOG_TAIL_LINES: Final = 60
_POLL_INTERVAL: Final = 0.2
_T = TypeVar("_T")


class StackError(RuntimeError):
    """The stack (or one of its services) failed to start or is used wrongly."""


def env_prefix(service: str) -> str:
    """Environment prefix of a service's settings, e.g. ``ERP_GATEWAY_``."""
    return f"{service.upper()}_"


def database_name(service: str, suffix: str = "") -> str:
    """Name of the service's own database, e.g. ``evolutivo_erp_gateway`` (plus ``suffix`` if any)."""
    return f"evolutivo_{service}{suffix}"


def _with_database(server_url: str, name: str | None = None) -> str:
    """``server_url`` with its database replaced by ``name`` and its scheme normalised to postgresql.

    ``name=None`` keeps the URL's database.  ``postgresql+asyncpg://`` and ``postgres://`` become
    ``postgresql://``, which asyncpg, Alembic and the services all accept.
    """
    parts = urlsplit(server_url)
    scheme = parts.scheme.split("+", 1)[0]
    if scheme == "postgres":
        scheme = "postgresql"
    if scheme != "postgresql":
        raise StackError(f"not a PostgreSQL URL: {redact_url(server_url)!r}")
    path = parts.path if name is None else "/" + quote(name, safe="")
    return urlunsplit(parts._replace(scheme=scheme, path=path))


def redact_url(url: str) -> str:
    """The URL with any password replaced by ``***`` (for printing)."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    return urlunsplit(parts._replace(netloc=netloc))


def _run_coroutine(factory: Callable[[], Awaitable[_T]]) -> _T:
    """Run a coroutine to completion from sync code, also when called inside a running event loop."""

    async def main() -> _T:
        return await factory()

    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(main())
    # Called from async code (e.g. an async test): run it on a private loop in another thread.
    with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(asyncio.run, main()).result()


def _port_is_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((HOST, port))
        except OSError:
            return False
        return True


def _log_tail(path: Path, offset: int, lines: int = _LOG_TAIL_LINES) -> str:
    """Last ``lines`` lines written to ``path`` since ``offset``."""
    if not path.exists():
        return "(no log)"
    with open(path, "rb") as fh:
        fh.seek(offset)
        text = fh.read().decode("utf-8", errors="replace")
    tail = text.splitlines()[-lines:]
    return "\n".join(tail) if tail else "(log is empty)"


def _stable_port_range() -> tuple[int, int]:
    """[low, high) of ports below the ephemeral range (/proc/sys/net/ipv4/ip_local_port_range),
    or (0, 0) when that range cannot be read or leaves no room."""
    try:
        start = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return (0, 0)
    return (20000, start) if start > 21000 else (0, 0)


_STABLE_PORTS = _stable_port_range()


def _bindable(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind((HOST, port))
        except OSError:
            return False
    return True


def _health_status(
    address: str, credentials: grpc.ChannelCredentials | None = None, timeout: float = 1.0
) -> int | None:
    """Status of the health check for service ``""`` at ``address``; None if it does not answer.

    With ``credentials`` it speaks TLS first and falls back to plaintext, so a service run (or
    replaced) with transport=plaintext is still watched."""
    attempts = [credentials, None] if credentials is not None else [None]
    for creds in attempts:
        channel = grpc.secure_channel(address, creds) if creds is not None else grpc.insecure_channel(address)
        with channel:
            stub = health_pb2_grpc.HealthStub(channel)
            try:
                response = stub.Check(health_pb2.HealthCheckRequest(service=""), timeout=timeout)
            except grpc.RpcError:
                continue
            status: int = response.status
            return status
    return None


@dataclass
class Replica:
    """One ``serve`` process of a service (replica 0 is the one ``addresses`` points at)."""

    service: str
    index: int
    grpc_port: int
    metrics_port: int
    log_path: Path
    process: subprocess.Popen[bytes] | None = field(default=None, repr=False)
    _log_offset: int = field(default=0, repr=False)

    @property
    def name(self) -> str:
        """``customer`` for replica 0, ``customer-1`` for replica 1, ..."""
        return self.service if self.index == 0 else f"{self.service}-{self.index}"

    @property
    def address(self) -> str:
        return f"{HOST}:{self.grpc_port}"

    @property
    def metrics_url(self) -> str:
        return f"http://{HOST}:{self.metrics_port}/metrics"

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.is_running and self.process is not None else None

    @property
    def is_running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def log_tail(self, lines: int = _LOG_TAIL_LINES) -> str:
        """What this replica wrote since it was last started."""
        return _log_tail(self.log_path, self._log_offset, lines)


class Stack:
    """PostgreSQL + NATS + the five services, started and stopped as one.

    Usable as a context manager (``with Stack(tmp) as stack: ...``).  Not thread-safe.
    """

    def __init__(
        self,
        data_dir: Path | str,
        *,
        database_url: str | None = None,
        nats_url: str | None = None,
        base_port: int | None = 50051,
        clock_mode: ClockMode = "controllable",
        env: Mapping[str, str] | None = None,
        python: str | None = None,
        log_dir: Path | str | None = None,
        replicas: Mapping[str, int] | None = None,
        services: Sequence[str] = SERVICES,
        log_level: str = "INFO",
        database_suffix: str = "",
        startup_timeout: float = 90.0,
        migrate_timeout: float = 120.0,
        stop_timeout: float = 20.0,
        progress: Callable[[str], None] | None = None,
        transport: Transport = "tls",
    ) -> None:
        """Describe a stack; nothing starts before :meth:`start`.

        * ``data_dir``: embedded servers keep their data in ``data_dir/postgres`` and ``data_dir/nats``.
        * ``database_url``: server-level URL of an external PostgreSQL (any database the user may
          connect to; the per-service databases are created on that server).  ``nats_url``: an
          external NATS server with JetStream.  Either one left ``None`` runs embedded.
        * ``base_port``: see the module doc; ``None`` picks free ports (for tests).
        * ``clock_mode``: ``<SVC>_CLOCK_MODE`` of every service.
        * ``env``: extra environment for every service process, applied last so it can override
          anything (e.g. ``{"BALANCE_CONSUMER_MAX_DELIVER": "3"}``).
        * ``python``: interpreter that runs ``-m evolutivo_<svc>`` (default: this one).
        * ``log_dir``: default ``data_dir/logs``.
        * ``replicas``: number of ``serve`` processes per service (default 1 each).
        * ``services``: the subset of :data:`SERVICES` to run (default all five).
        * ``database_suffix``: appended to every database name (``evolutivo_customer_t1``), so that
          tests sharing one PostgreSQL server do not share databases.
        * ``startup_timeout`` / ``migrate_timeout`` / ``stop_timeout``: seconds to reach SERVING, for
          all migrations, and between SIGTERM and SIGKILL.
        * ``progress``: called with a short message at each step of start/stop (the CLI prints them).
        * ``transport``: ``"tls"`` (mutual TLS everywhere, the default) or ``"plaintext"`` (development).
        """
        self.data_dir = Path(data_dir).resolve()
        self.log_dir = Path(log_dir).resolve() if log_dir is not None else self.data_dir / "logs"
        self.clock_mode: ClockMode = clock_mode
        if clock_mode not in ("system", "controllable"):
            raise StackError(f"clock_mode must be 'system' or 'controllable', not {clock_mode!r}")
        self.python = python or sys.executable
        self.log_level = log_level
        self.startup_timeout = startup_timeout
        self.migrate_timeout = migrate_timeout
        self.stop_timeout = stop_timeout
        self._env = dict(env or {})
        self.database_suffix = database_suffix
        if transport not in ("tls", "plaintext"):
            raise StackError(f"transport must be 'tls' or 'plaintext', not {transport!r}")
        self.transport: Transport = transport
        self._progress = progress or (lambda _message: None)
        self._external_database_url = database_url
        self._external_nats_url = nats_url
        if database_url is not None:
            _with_database(database_url)  # validates the scheme early

        unknown = [s for s in [*services, *(replicas or {})] if s not in SERVICES]
        if unknown:
            raise StackError(f"unknown service(s) {unknown}; the services are {list(SERVICES)}")
        if not services:
            raise StackError("no services to run")
        self.services: tuple[str, ...] = tuple(s for s in SERVICES if s in services)
        counts = {s: 1 for s in self.services}
        for service, count in (replicas or {}).items():
            if count < 1:
                raise StackError(f"replicas[{service!r}] must be at least 1, not {count}")
            if service in counts:
                counts[service] = count
        if base_port is not None and not 0 < base_port <= 65535 - METRICS_PORT_OFFSET - len(SERVICES) * max(
            counts.values()
        ):
            raise StackError(f"base port {base_port} leaves no room for the service ports")
        self.base_port = base_port

        self._replicas: dict[str, list[Replica]] = {}
        self._picked_ports: set[int] = set()
        self._rng = random.Random()
        for service, count in counts.items():
            position = SERVICES.index(service)
            self._replicas[service] = []
            for index in range(count):
                if base_port is None:
                    grpc_port, metrics_port = self._free_port(), self._free_port()
                else:
                    grpc_port = base_port + index * len(SERVICES) + position
                    metrics_port = grpc_port + METRICS_PORT_OFFSET
                name = service if index == 0 else f"{service}-{index}"
                self._replicas[service].append(
                    Replica(service, index, grpc_port, metrics_port, self.log_dir / f"{name}.log")
                )

        self.security = DevSecurity(self.data_dir / "security", self.services)
        self._dev_token: str | None = None
        self._postgres: EmbeddedPostgres | None = None
        self._nats: EmbeddedNats | None = None
        self._server_url: str | None = None
        self._nats_url: str | None = None
        self._started = False

    def _free_port(self) -> int:
        """A free port not handed to another replica of this stack already, below the kernel's
        ephemeral range when there is room: the ports are picked before PostgreSQL and NATS start,
        and a port from that range can meanwhile become the source port of any outgoing
        connection (a service's own to PostgreSQL), which made a replica fail with "address
        already in use"."""
        low, high = _STABLE_PORTS
        for _ in range(200):
            port = self._rng.randrange(low, high) if high > low else free_port()
            if port not in self._picked_ports and _bindable(port):
                self._picked_ports.add(port)
                return port
        raise StackError("no free port for a service replica")

    # ------------------------------------------------------------------ context manager

    def __enter__(self) -> Stack:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # ------------------------------------------------------------------ addresses and URLs

    @property
    def addresses(self) -> dict[str, str]:
        """Service -> ``127.0.0.1:port`` of its replica 0."""
        return {service: replicas[0].address for service, replicas in self._replicas.items()}

    @property
    def metrics_ports(self) -> dict[str, int]:
        """Service -> metrics port of its replica 0."""
        return {service: replicas[0].metrics_port for service, replicas in self._replicas.items()}

    def server_pids(self) -> dict[str, int]:
        """The embedded servers' process ids, by name ("postgres", "nats"): those running (an
        external server is not this stack's to name)."""
        found = {
            "postgres": self._postgres.pid if self._postgres else None,
            "nats": self._nats.pid if self._nats else None,
        }
        return {name: pid for name, pid in found.items() if pid is not None}

    def replicas(self, service: str) -> list[Replica]:
        """Every replica of ``service``, replica 0 first."""
        return list(self._replicas_of(service, None))

    def channel(
        self,
        service: str,
        replica: int = 0,
        *,
        token: str | None = None,
        client_certificate: bool = True,
    ) -> grpc.aio.Channel:
        """An asyncio gRPC channel to one replica of ``service``, with the credentials the stack's
        clients need. Every client of the stack (tests, tools) opens its channels here, so how they
        authenticate is decided in one place: TLS with the development client certificate, and on
        every call the development token (every scope, subject ``dev:admin``).

        ``token`` replaces that token (``""``: no token at all); ``client_certificate=False``
        leaves the certificate out (the server then refuses the TLS handshake)."""
        return self.channel_to(
            self.replica_addresses(service)[replica], token=token, client_certificate=client_certificate
        )

    def channel_to(
        self, address: str, *, token: str | None = None, client_certificate: bool = True
    ) -> grpc.aio.Channel:
        """``channel`` to any address: a server of the stack's own that is not a service (the
        harness's gRPC floor), with the same credentials."""
        bearer = self.dev_token() if token is None else token
        return open_channel(
            address,
            tls=self._client_tls(client_certificate),
            token=(lambda: bearer) if bearer else None,
            options=[("grpc.max_receive_message_length", 8 * 1024 * 1024)],
        )

    def dev_token(self) -> str:
        """A token with every scope (subject ``dev:admin``), signed when first asked for."""
        if self._dev_token is None:
            self._dev_token = self.token(DEV_SUBJECT, ALL_SCOPES)
        return self._dev_token

    def token(self, subject: str, scopes: Iterable[str], ttl_seconds: float = 86400.0) -> str:
        """A token signed by the stack's development issuer, for tests that need another caller."""
        if not self.security.signing_key_file.exists():
            self.security.ensure()
        return self.security.token(subject, scopes, ttl_seconds)

    def _client_tls(self, client_certificate: bool = True) -> TlsFiles | None:
        if self.transport == "plaintext":
            return None
        sec = self.security
        if client_certificate:
            return TlsFiles(
                sec.cert_file("client").read_bytes(), sec.key_file("client").read_bytes(), sec.ca_file.read_bytes()
            )
        return TlsFiles(None, None, sec.ca_file.read_bytes())

    def _health_credentials(self) -> grpc.ChannelCredentials | None:
        if self.transport == "plaintext" or not self.security.ca_file.exists():
            return None
        tls = self._client_tls()
        assert tls is not None
        return grpc.ssl_channel_credentials(tls.ca, tls.key, tls.cert)

    def replica_addresses(self, service: str) -> list[str]:
        """``127.0.0.1:port`` of every replica of ``service``, replica 0 first."""
        return [r.address for r in self._replicas_of(service, None)]

    @property
    def server_url(self) -> str:
        """Server-level PostgreSQL URL (embedded or external)."""
        if self._server_url is None:
            if self._external_database_url is not None:
                return self._external_database_url
            raise StackError("the stack is not started: no PostgreSQL yet")
        return self._server_url

    @property
    def nats_url(self) -> str:
        if self._nats_url is None:
            if self._external_nats_url is not None:
                return self._external_nats_url
            raise StackError("the stack is not started: no NATS yet")
        return self._nats_url

    def database_url(self, service: str) -> str:
        """The plain ``postgresql://`` URL of the service's own database."""
        self._replicas_of(service, None)  # validates the name
        return _with_database(self.server_url, database_name(service, self.database_suffix))

    @property
    def embedded_postgres(self) -> bool:
        return self._external_database_url is None

    @property
    def embedded_nats(self) -> bool:
        return self._external_nats_url is None

    def service_env(self, service: str, replica: int = 0) -> dict[str, str]:
        """The environment a replica's processes run with (this process's env + its settings)."""
        target = self._replicas_of(service, replica)[0]
        prefix = env_prefix(service)
        env = dict(os.environ)
        env.update(
            {
                "PYTHONUNBUFFERED": "1",
                f"{prefix}DATABASE_URL": self.database_url(service),
                f"{prefix}NATS_URL": self.nats_url,
                f"{prefix}GRPC_HOST": HOST,
                f"{prefix}GRPC_PORT": str(target.grpc_port),
                f"{prefix}METRICS_PORT": str(target.metrics_port),
                f"{prefix}CLOCK_MODE": self.clock_mode,
                f"{prefix}LOG_LEVEL": self.log_level,
            }
        )
        env.update(self._security_env(service, prefix))
        # Where each service finds the others it calls (replica 0 of each; SERVICE_ADDRESS).
        for other, replicas in self._replicas.items():
            env[f"{prefix}{other.upper()}_ADDRESS"] = replicas[0].address
        env.update(self._env)
        return env

    def _security_env(self, service: str, prefix: str) -> dict[str, str]:
        env = self.security.service_env(service, prefix)
        if self.transport == "plaintext":
            env = {k: v for k, v in env.items() if not k.startswith(prefix + "TLS_")}
            env[prefix + "TRANSPORT"] = "plaintext"
        if os.environ.get(f"{prefix}CREDENTIAL_KEYS"):
            env.pop(f"{prefix}CREDENTIAL_KEYS", None)  # an operator's own key wins
        if os.environ.get(f"{prefix}PAYMENT_DETAILS_KEYS"):
            env.pop(f"{prefix}PAYMENT_DETAILS_KEYS", None)
        return env

    # ------------------------------------------------------------------ whole stack

    def start(self) -> None:
        """Start servers, create and migrate the databases, start every service, wait for SERVING.

        On any failure everything started so far is stopped again and the error is raised
        (:class:`StackError` with the failing service's log tail, or the embedded server's error).
        """
        if self._started:
            raise StackError("the stack is already started")
        self._started = True
        try:
            self._check_ports_free()
            self.log_dir.mkdir(parents=True, exist_ok=True)
            self._progress(f"development CA, certificates and token keys in {self.security.dir}")
            self.security.ensure()
            self._start_servers()
            names = ", ".join(database_name(s, self.database_suffix) for s in self.services)
            self._progress(f"creating databases {names}")
            self._create_databases()
            self._progress("migrating databases")
            self._migrate()
            self._progress("starting services")
            for service in self.services:
                for replica in self._replicas[service]:
                    self._spawn(replica)
            self._wait_serving(self._all_replicas(), self.startup_timeout)
            self._progress("all services SERVING")
        except BaseException:
            self.stop()
            raise

    def stop(self) -> None:
        """Stop every service (SIGTERM, then SIGKILL after ``stop_timeout``), then NATS, then PostgreSQL.

        Data is kept.  Safe to call more than once and after a failed start.
        """
        try:
            if any(r.process is not None for r in self._all_replicas()):
                self._progress("stopping services")
            self._terminate(self._all_replicas(), graceful=True)
        finally:
            try:
                if self._nats is not None:
                    self._progress("stopping NATS")
                    self._nats.stop()
            finally:
                if self._postgres is not None:
                    self._progress("stopping PostgreSQL")
                    self._postgres.stop()
                self._nats = self._postgres = None
                self._nats_url = self._server_url = None
                self._started = False

    @property
    def is_started(self) -> bool:
        return self._started

    # ------------------------------------------------------------------ single services

    def kill(self, service: str, replica: int | None = None) -> None:
        """SIGKILL the service's replica (all its replicas when ``replica`` is None); no clean-up at all."""
        self._terminate(self._replicas_of(service, replica), graceful=False)

    def stop_service(self, service: str, replica: int | None = None) -> None:
        """Stop replica(s) of a service gracefully (SIGTERM, SIGKILL after ``stop_timeout``)."""
        self._terminate(self._replicas_of(service, replica), graceful=True)

    def start_service(self, service: str, replica: int | None = None, *, wait: bool = True) -> None:
        """(Re)start replica(s) of a service that are not running; with ``wait``, until SERVING.

        Replicas that are still running are left alone.  The databases are not migrated again.
        """
        self._require_started()
        targets = self._replicas_of(service, replica)
        for target in targets:
            if not target.is_running:
                self._spawn(target)
        if wait:
            self._wait_serving(targets, self.startup_timeout)

    def restart(self, service: str, replica: int | None = None, *, graceful: bool = True) -> None:
        """Stop (SIGTERM, or SIGKILL when not ``graceful``) and start again, waiting for SERVING."""
        if graceful:
            self.stop_service(service, replica)
        else:
            self.kill(service, replica)
        self.start_service(service, replica)

    def restart_nats(self, *, down_seconds: float = 0.0, kill: bool = False) -> None:
        """Stop the embedded NATS (SIGTERM, or SIGKILL with ``kill``) and start it again after
        ``down_seconds`` on the same port with its JetStream data: an outage the services ride out
        (they reconnect forever). Fault tests use it; an external NATS is the operator's."""
        self._require_started()
        if self._nats is None or self._nats.port is None:
            raise StackError("NATS is external (or stopped): restart it yourself")
        port = self._nats.port
        self._progress("restarting NATS")
        self._nats.stop(kill=kill)
        time.sleep(down_seconds)
        self._nats.start(self.data_dir / "nats", port=port)

    def restart_postgres(self, *, down_seconds: float = 0.0, immediate: bool = False) -> None:
        """Stop the embedded PostgreSQL (fast shutdown, or ``immediate``: every connection cut at
        once, crash recovery at the next start) and start it again after ``down_seconds`` on the
        same port and data. Fault tests use it; an external PostgreSQL is the operator's."""
        self._require_started()
        if self._postgres is None or self._postgres.port is None:
            raise StackError("PostgreSQL is external (or stopped): restart it yourself")
        port = self._postgres.port
        self._progress("restarting PostgreSQL")
        self._postgres.stop(immediate=immediate)
        time.sleep(down_seconds)
        self._postgres.start(self.data_dir / "postgres", port=port)

    def wait_serving(self, service: str, replica: int | None = None, timeout: float | None = None) -> None:
        """Wait until the replica(s) of ``service`` report SERVING; raise StackError if one dies or times out."""
        self._wait_serving(self._replicas_of(service, replica), timeout or self.startup_timeout)

    def is_running(self, service: str, replica: int = 0) -> bool:
        return self._replicas_of(service, replica)[0].is_running

    def health(self, service: str, replica: int = 0) -> str:
        """Current health status name (``SERVING``, ``NOT_SERVING``...), or ``UNREACHABLE``."""
        status = _health_status(self._replicas_of(service, replica)[0].address, self._health_credentials())
        if status is None:
            return "UNREACHABLE"
        name: str = health_pb2.HealthCheckResponse.ServingStatus.Name(status)
        return name

    def exited(self) -> list[Replica]:
        """Replicas that were started and have exited since (crashed, or killed from outside)."""
        return [r for r in self._all_replicas() if r.process is not None and r.process.poll() is not None]

    # ------------------------------------------------------------------ internals

    def _require_started(self) -> None:
        if not self._started:
            raise StackError("the stack is not started")

    def _replicas_of(self, service: str, replica: int | None) -> list[Replica]:
        if service not in self._replicas:
            raise StackError(f"service {service!r} is not part of this stack ({list(self._replicas)})")
        replicas = self._replicas[service]
        if replica is None:
            return list(replicas)
        if not 0 <= replica < len(replicas):
            raise StackError(f"{service} has {len(replicas)} replica(s); there is no replica {replica}")
        return [replicas[replica]]

    def _all_replicas(self) -> list[Replica]:
        return [r for service in self.services for r in self._replicas[service]]

    def _check_ports_free(self) -> None:
        taken = [
            f"{r.name} {kind} port {port}"
            for r in self._all_replicas()
            for kind, port in (("gRPC", r.grpc_port), ("metrics", r.metrics_port))
            if not _port_is_free(port)
        ]
        if taken:
            raise StackError(
                f"port(s) already in use: {', '.join(taken)} (is another stack running? choose another base port)"
            )

    def _start_servers(self) -> None:
        if self._external_database_url is not None:
            self._server_url = self._external_database_url
        else:
            self._progress(f"starting embedded PostgreSQL (data in {self.data_dir / 'postgres'})")
            self._postgres = EmbeddedPostgres()
            self._server_url = self._postgres.start(self.data_dir / "postgres")
        if self._external_nats_url is not None:
            self._nats_url = self._external_nats_url
        else:
            self._progress(f"starting embedded NATS with JetStream (data in {self.data_dir / 'nats'})")
            self._nats = EmbeddedNats()
            self._nats_url = self._nats.start(self.data_dir / "nats")

    def _create_databases(self) -> None:
        server_url = _with_database(self.server_url)

        async def create_all() -> None:
            for service in self.services:
                await create_database(server_url, database_name(service, self.database_suffix))

        try:
            _run_coroutine(create_all)
        except Exception as exc:
            raise StackError(f"could not create the service databases on {redact_url(server_url)}: {exc!r}") from exc

    def _migrate(self) -> None:
        """Run every service's ``migrate`` command at once; raise with the log of the first that fails."""
        running: list[tuple[str, subprocess.Popen[bytes], Path, int]] = []
        try:
            for service in self.services:
                log_path = self.log_dir / f"{service}.migrate.log"
                with open(log_path, "ab") as log:
                    offset = self._write_banner(log, f"migrate {service}")
                    proc = subprocess.Popen(
                        [self.python, "-m", f"evolutivo_{service}", "migrate"],
                        env=self.service_env(service),
                        stdin=subprocess.DEVNULL,
                        stdout=log,
                        stderr=subprocess.STDOUT,
                    )
                running.append((service, proc, log_path, offset))
            deadline = time.monotonic() + self.migrate_timeout
            for service, proc, log_path, offset in running:
                try:
                    code = proc.wait(max(0.0, deadline - time.monotonic()))
                except subprocess.TimeoutExpired:
                    raise StackError(
                        f"{service}: migrate did not finish within {self.migrate_timeout:.0f}s\n"
                        f"--- last lines of {log_path} ---\n{_log_tail(log_path, offset)}"
                    ) from None
                if code != 0:
                    raise StackError(
                        f"{service}: migrate failed (exit code {code})\n"
                        f"--- last lines of {log_path} ---\n{_log_tail(log_path, offset)}"
                    )
        finally:
            for _, proc, _, _ in running:
                if proc.poll() is None:
                    proc.kill()
                proc.wait()

    @staticmethod
    def _write_banner(log: IO[bytes], what: str) -> int:
        """Append a start marker to a log file; return the offset where this run's output begins."""
        log.write(f"=== {datetime.now(UTC).isoformat(timespec='seconds')} {what} ===\n".encode())
        log.flush()
        return log.tell()

    def _spawn(self, replica: Replica) -> None:
        env = self.service_env(replica.service, replica.index)
        with open(replica.log_path, "ab") as log:
            replica._log_offset = self._write_banner(log, f"serve {replica.name} on {replica.address}")
            # Same process group as the launcher: a Ctrl-C in its terminal reaches the services
            # too, which the runtime treats as a graceful shutdown (like SIGTERM).
            replica.process = subprocess.Popen(
                [self.python, "-m", f"evolutivo_{replica.service}", "serve"],
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        _LIVE.add(replica.process)

    def _wait_serving(self, replicas: Iterable[Replica], timeout: float) -> None:
        pending = list(replicas)
        health = self._health_credentials()
        deadline = time.monotonic() + timeout
        while pending:
            for replica in list(pending):
                proc = replica.process
                if proc is None:
                    raise StackError(f"{replica.name} is not started")
                code = proc.poll()
                if code is not None:
                    raise StackError(
                        f"{replica.name} exited with code {code} before it was SERVING\n"
                        f"--- last lines of {replica.log_path} ---\n{replica.log_tail()}"
                    )
                if _health_status(replica.address, health) == health_pb2.HealthCheckResponse.SERVING:
                    pending.remove(replica)
            if not pending:
                return
            if time.monotonic() >= deadline:
                replica = pending[0]
                raise StackError(
                    f"{', '.join(r.name for r in pending)} not SERVING after {timeout:.0f}s\n"
                    f"--- last lines of {replica.log_path} ---\n{replica.log_tail()}"
                )
            time.sleep(_POLL_INTERVAL)

    def _terminate(self, replicas: Sequence[Replica], *, graceful: bool) -> None:
        """Signal all ``replicas`` at once, then wait for each (escalating to SIGKILL after the timeout)."""
        first = signal.SIGTERM if graceful else signal.SIGKILL
        for replica in replicas:
            if replica.is_running and replica.process is not None:
                with contextlib.suppress(ProcessLookupError):
                    replica.process.send_signal(first)
        deadline = time.monotonic() + self.stop_timeout
        for replica in replicas:
            proc = replica.process
            if proc is None:
                continue
            try:
                proc.wait(max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                self._progress(f"{replica.name} still running {self.stop_timeout:.0f}s after SIGTERM: sending SIGKILL")
                proc.kill()
                proc.wait()
            _LIVE.discard(proc)
            replica.process = None


#: Service processes started and not yet stopped, by any Stack of this process.
_LIVE: set[subprocess.Popen[bytes]] = set()


@atexit.register
def _kill_at_exit() -> None:
    """Never leave a service orphaned when the launcher exits without ``stop()``."""
    for proc in list(_LIVE):
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    _LIVE.clear()
