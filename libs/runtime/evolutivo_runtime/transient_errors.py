"""Failures of PostgreSQL and NATS a caller can outlive by retrying, told apart from bugs.

A deadlock, a serialization failure, a lock wait past `lock_timeout`, a database or a NATS server
that is restarting or out of reach says nothing about the request: the same call, retried, may
well succeed. The server interceptor answers them ABORTED, UNAVAILABLE or, where the call may
have taken effect before the answer was lost, DEADLINE_EXCEEDED (AIP-193: a client retries those)
instead of INTERNAL, and the runtime consumer retries conflicts in place.

SQLAlchemy wraps asyncpg's error, which carries the SQLSTATE; a connection refused when the pool
connects comes as the OSError itself, raised through the pool's and asyncpg's frames. Few calls
touch NATS themselves (their events go through the outbox): the shared clock's and the dead-letter
administration's.
"""

from __future__ import annotations

import asyncio
import os
import ssl
from types import TracebackType

import asyncpg
import nats.errors
import nats.js.errors
import sqlalchemy
import sqlalchemy.exc
import uvloop

from evolutivo_runtime.errors import Aborted, DeadlineExceeded, ServiceError, Unavailable

# serialization_failure, deadlock_detected: PostgreSQL rolled the transaction back for a concurrent one.
CONFLICT_STATES = frozenset({"40001", "40P01"})
LOCK_NOT_AVAILABLE = "55P03"
# The connection failed or was lost (class 08, but not 08P01 protocol_violation: a malformed
# message is the client's and would fail again), the server is shutting down, crashed, not yet
# accepting connections, or out of connection slots.
_UNAVAILABLE_STATES = frozenset(
    {"08000", "08001", "08003", "08004", "08006", "08007", "57P01", "57P02", "57P03", "53300"}
)
_DRIVER_DIRS = tuple(os.path.dirname(m.__file__ or "") + os.sep for m in (asyncpg, sqlalchemy))
# Where a connection's own OSError is raised: the driver, or the event loop and socket code it calls
# (uvloop's is Cython: its frames are named after its sources, "uvloop/loop.pyx").
_CONNECTING_DIRS = (
    *_DRIVER_DIRS,
    os.path.dirname(asyncio.__file__) + os.sep,
    os.path.dirname(ssl.__file__) + os.sep,
    os.path.dirname(uvloop.__file__ or "") + os.sep,
    "uvloop" + os.sep,
)
# NATS never got the request: out of reach, reconnecting, draining, nobody subscribed, JetStream
# not ready. (A timeout or a connection gone stale after sending is another matter: below.)
_NATS_NOT_SENT = (
    nats.errors.ConnectionClosedError,
    nats.errors.ConnectionDrainingError,
    nats.errors.ConnectionReconnectingError,
    nats.errors.NoServersError,
    nats.errors.OutboundBufferLimitError,
    nats.errors.NoRespondersError,
    nats.js.errors.ServiceUnavailableError,
    nats.js.errors.NoStreamResponseError,
)
# No answer in time, or the connection died after the request went out: it may have taken effect
# (the shared clock's AdvanceClock carries no request id, so a retry could move it twice).
_NATS_NO_ANSWER = (nats.errors.TimeoutError, nats.errors.StaleConnectionError)


def _chain(exc: BaseException) -> list[BaseException]:
    seen: list[BaseException] = []
    current: BaseException | None = exc
    while current is not None and all(current is not s for s in seen):
        seen.append(current)
        current = current.__cause__ or getattr(current, "orig", None)
    return seen


def _states(exc: BaseException) -> list[str]:
    found = (getattr(error, "sqlstate", None) or getattr(error, "pgcode", None) for error in _chain(exc))
    return [state for state in found if isinstance(state, str)]


def sqlstate(exc: BaseException) -> str | None:
    """The SQLSTATE of the first PostgreSQL error in the exception's chain, if any."""
    return next(iter(_states(exc)), None)


def is_conflict(exc: BaseException) -> bool:
    """Whether PostgreSQL aborted the transaction for a concurrent one (deadlock, serialization)
    anywhere in the exception's chain."""
    return any(state in CONFLICT_STATES for state in _states(exc))


def _raised_by_the_driver(tb: TracebackType | None) -> bool:
    """Whether an OSError went through the driver's frames and was raised in its own, the event
    loop's or the socket layer's code (an OSError raised by our code that SQLAlchemy called back,
    in `run_sync` say, is not a connection's)."""
    through, innermost = False, ""
    while tb is not None:
        innermost = tb.tb_frame.f_code.co_filename
        through = through or innermost.startswith(_DRIVER_DIRS)
        tb = tb.tb_next
    return through and innermost.startswith(_CONNECTING_DIRS)


def _database_unreachable(exc: BaseException) -> bool:
    for error in _chain(exc):
        if isinstance(error, sqlalchemy.exc.DBAPIError) and error.connection_invalidated:
            return True
        if isinstance(error, sqlalchemy.exc.TimeoutError):  # no pooled connection came free in time
            return True
        if isinstance(error, asyncpg.exceptions.ConnectionDoesNotExistError):
            return True
        # Refused, reset or timed out while the pool connected (no SQLSTATE: the server never
        # answered); an OSError from anything else a handler does (a mail server, an ERP) is not
        # the database's.
        if isinstance(error, OSError) and _raised_by_the_driver(error.__traceback__):
            return True
    return False


def retryable(exc: BaseException) -> ServiceError | None:
    """The retryable answer for a failure of the database or NATS a retry can outlive, or None for
    anything else. The messages say what a client should do; a SQLSTATE goes in the ErrorInfo's
    metadata."""
    conflict = next((s for s in _states(exc) if s in CONFLICT_STATES), None)
    if conflict is not None:
        return Aborted(
            "TRANSACTION_CONFLICT",
            "the call's transaction lost to a concurrent one (deadlock or serialization failure) and "
            "was rolled back; retry the call (writes with the same request_id)",
            {"sqlstate": conflict},
        )
    state = sqlstate(exc)
    metadata = {"sqlstate": state} if state else {}
    if state == LOCK_NOT_AVAILABLE:
        return Aborted(
            "LOCK_TIMEOUT",
            "another transaction held what the call needed for longer than the call waits; it was "
            "rolled back; retry the call (writes with the same request_id)",
            metadata,
        )
    if state in _UNAVAILABLE_STATES or (state is None and _database_unreachable(exc)):
        return Unavailable(
            "DATABASE_UNAVAILABLE",
            "the service's database is restarting, out of reach or out of connections; retry the "
            "call with backoff (writes with the same request_id: a retry never applies twice)",
            metadata,
        )
    for error in _chain(exc):
        if isinstance(error, _NATS_NOT_SENT):
            return Unavailable(
                "MESSAGING_UNAVAILABLE",
                "the service's NATS server is restarting or out of reach; the call changed nothing: "
                "retry it with backoff",
                {"error": type(error).__name__},
            )
        if isinstance(error, _NATS_NO_ANSWER):
            return DeadlineExceeded(
                "MESSAGING_TIMEOUT",
                "the service's NATS server did not answer in time; the call may or may not have taken "
                "effect: check before retrying a call without a request id",
                {"error": type(error).__name__},
            )
    return None
