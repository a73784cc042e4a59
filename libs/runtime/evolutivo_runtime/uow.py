"""Unit of work: one database transaction, and the events it causes, committed together."""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Protocol, Self

from google.protobuf.message import Message
from sqlalchemy import Table, TextClause, text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from evolutivo_runtime.bulk import insert_rows
from evolutivo_runtime.clock import Clock
from evolutivo_runtime.idempotency import RequestLog
from evolutivo_runtime.messaging.envelope import OutgoingEvent
from evolutivo_runtime.messaging.tables import OUTBOX_CHANNEL
from evolutivo_runtime.security.audit import audit_in_transaction, audit_log

# A statement and its parameters.
Write = tuple[TextClause, dict[str, Any]]


@functools.lru_cache(maxsize=64)
def _commit_statement(
    writes: tuple[TextClause, ...], insert_outbox: TextClause | None, insert_audit: TextClause | None
) -> TextClause:
    """What a commit writes, in one statement (one round trip): the writes deferred to it, the
    call's audit records, and the outbox rows with the relay's wake-up. The NOTIFY reaches the
    relay's LISTEN only when the transaction commits. Data-modifying WITH queries run whether or
    not the query reads them, all with the statement's snapshot."""
    parts = [f"write_{i} AS ({w.text})" for i, w in enumerate(writes)]
    if insert_audit is not None:
        parts.append(f"audit AS ({insert_audit.text})")
    if insert_outbox is not None:
        parts.append(f"inserted AS ({insert_outbox.text})")
        return text(f"WITH {', '.join(parts)} SELECT pg_notify('{OUTBOX_CHANNEL}', '')")
    if len(parts) == 1:
        return insert_audit if insert_audit is not None else writes[0]
    return text(f"WITH {', '.join(parts)} SELECT 1")


def _merged(parts: list[dict[str, Any]]) -> dict[str, Any]:
    merged: dict[str, Any] = {}
    for params in parts:
        for name, value in params.items():
            if name in merged and merged[name] != value:
                raise ValueError(f"two writes of one commit bind {name!r} to different values")
            merged[name] = value
    return merged


class Aggregate(Protocol):
    """A domain object that records the events its changes cause."""

    events: list[object]


# Maps a domain event to its subject and protobuf message (each service's adapters/events.py).
EventEncoder = Callable[[object], tuple[str, Message]]


def _no_encoder(event: object) -> tuple[str, Message]:
    raise TypeError(f"this unit of work has no encoder for {type(event).__name__}")


@dataclass(frozen=True)
class Checkpoint:
    events: int
    tracked: int
    aggregate_events: list[int]
    writes: int


class UnitOfWork:
    """Services subclass it to add their repositories (built on `self.session` in `__aenter__`).

    Events added with `publish`, and the domain events of aggregates passed to `track`, are
    written to the outbox by `commit`, in the same transaction as the state change, so an event
    exists if and only if its change does.
    """

    session: AsyncSession

    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        outbox: Table,
        clock: Clock,
        encode: EventEncoder = _no_encoder,
        request_log: Table | None = None,
    ) -> None:
        self._sessions = sessions
        self._outbox = outbox
        self._request_log = request_log
        self.requests: RequestLog | None = None
        self._encode = encode
        self.clock = clock
        self.events: list[OutgoingEvent] = []
        self._tracked: list[Aggregate] = []
        self._writes: list[Write] = []
        self._after_commit: list[Callable[[], None]] = []

    async def __aenter__(self) -> Self:
        self.session = self._sessions()
        if self._request_log is not None:
            self.requests = RequestLog(self.session, self._request_log)
        self.events = []
        self._tracked = []
        self._writes = []
        self._after_commit = []
        return self

    def track(self, aggregate: Aggregate) -> None:
        """Collect this aggregate's domain events at commit (cosmicpython's `seen`)."""
        self._tracked.append(aggregate)

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        # Whatever was not committed is rolled back.
        await self.session.rollback()
        await self.session.close()

    async def limit_lock_waits(self, seconds: float) -> None:
        """From here to the end of the transaction, a statement that waits longer than `seconds` for
        a lock fails (SQLSTATE 55P03: the transaction rolls back and a call is answered ABORTED,
        transient_errors) instead of waiting on: for a call whose caller should not wait behind a long
        transaction (SET LOCAL lock_timeout)."""
        await self.session.execute(
            text("SELECT set_config('lock_timeout', :timeout, true)"), {"timeout": f"{max(1, round(seconds * 1000))}ms"}
        )

    def publish(self, subject: str, message: Message) -> OutgoingEvent:
        event = OutgoingEvent(subject=subject, message=message, occurred_at=self.clock.now())
        self.events.append(event)
        return event

    def write_at_commit(self, statement: TextClause, params: dict[str, Any]) -> None:
        """A write whose outcome this transaction does not read (an append, an update of rows it
        holds locked), sent with the commit's own statement: one round trip for all of them.
        They run together, as PostgreSQL runs a data-modifying WITH: none sees another's effects,
        so no two may touch the same rows; a parameter name two writes share must have the same
        value. The commit re-reads each one's SQL text, so a parameter's type goes in the text
        (CAST), not in `bindparams`. A write that fails fails the commit."""
        self._writes.append((statement, params))

    def after_commit(self, callback: Callable[[], None]) -> None:
        """Runs `callback` once this transaction has committed (never if it rolls back): for what
        a process may only learn of committed state, e.g. a replica's in-memory knowledge. A
        savepoint rolled back does not drop the callbacks registered in it (checkpoints leave them
        out): register only what holds once the transaction commits, whichever steps commit."""
        self._after_commit.append(callback)

    def checkpoint(self) -> Checkpoint:
        """Marks what is pending now, so a failed step (a rolled-back savepoint) can drop its events
        and writes."""
        return Checkpoint(
            len(self.events), len(self._tracked), [len(a.events) for a in self._tracked], len(self._writes)
        )

    def discard_since(self, checkpoint: Checkpoint) -> None:
        """Drops the events and writes recorded after `checkpoint`, also the events added to
        aggregates tracked before it. (The aggregates' other in-memory changes are the failed step's to discard.)"""
        del self.events[checkpoint.events :]
        del self._tracked[checkpoint.tracked :]
        del self._writes[checkpoint.writes :]
        for aggregate, kept in zip(self._tracked, checkpoint.aggregate_events, strict=True):
            del aggregate.events[kept:]

    async def commit(self) -> None:
        for aggregate in self._tracked:
            for event in aggregate.events:
                self.publish(*self._encode(event))
            aggregate.events.clear()
        self._tracked = []
        outbox: TextClause | None = None
        audit_statement: TextClause | None = None
        params = [p for _, p in self._writes]
        if self.events:
            # In publication order: the relay publishes by seq (evolutivo_runtime.bulk keeps the order).
            outbox, outbox_params = insert_rows(
                self._outbox,
                [
                    {
                        "event_id": e.event_id,
                        "subject": e.subject,
                        "event_type": e.event_type,
                        "payload": e.message.SerializeToString(),
                        "headers": e.headers(),
                    }
                    for e in self.events
                ],
                param_prefix="outbox_",
            )
            params.append(outbox_params)
        # Inside a state-changing RPC: its audit record joins this transaction (security/audit.py).
        audit = audit_in_transaction([(e.event_type, e.message) for e in self.events], self.clock.now())
        if audit is not None:
            audit_statement, audit_params = insert_rows(audit_log, audit.rows, param_prefix="audit_")
            params.append(audit_params)
        if params:
            writes = tuple(w for w, _ in self._writes)
            await self.session.execute(_commit_statement(writes, outbox, audit_statement), _merged(params))
        if audit is not None:
            audit.written()
        await self.session.commit()
        self.events = []
        self._writes = []
        callbacks, self._after_commit = self._after_commit, []
        for callback in callbacks:
            callback()

    async def rollback(self) -> None:
        await self.session.rollback()
        self.events = []
        self._tracked = []
        self._writes = []
        self._after_commit = []
