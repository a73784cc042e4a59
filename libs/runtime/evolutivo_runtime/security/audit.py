"""The audit log: every state-changing call, who made it, what it named, when, and its request id.

Each service has an append-only `audit_log` table (created by its own migration with
`create_audit_log_table`; a trigger refuses UPDATE, DELETE and TRUNCATE, like balance's ledger).

How a record is written (docs/security.md, "Audit"):

- The AuthGuard opens an AuditContext for every call whose rule `mutates` (scopes.py), with
  the verified caller, the method, the request id and the identifiers the request names.
- `UnitOfWork.commit` writes the record in the same transaction as the change it commits (with the
  events it publishes and the identifiers they carry): no change without its record, no record
  without its change. A call that commits twice leaves two records.
- A successful mutating call that committed nothing through a unit of work (admin calls that act
  on NATS, idempotent retries answered from the request log) gets its record from the interceptor
  after the call, in a transaction of its own.
- Failed calls leave no record: they changed nothing.

Work that is not a call (event consumers, scheduled loops) is not audited here: its cause is the
audited call or event upstream, and the outbox/inbox tie them together.
"""

from __future__ import annotations

import contextvars
import hashlib
import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from evolutivo.admin.v1 import audit_admin_service_pb2 as audit_pb
from evolutivo.admin.v1 import audit_admin_service_pb2_grpc as audit_grpc
from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.empty_pb2 import Empty
from google.protobuf.message import Message
from google.protobuf.timestamp_pb2 import Timestamp
from sqlalchemy import BigInteger, Column, DateTime, Identity, Index, MetaData, Table, Text, func, insert, select
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from evolutivo_runtime.clock import Clock
from evolutivo_runtime.ids import parse_uuid
from evolutivo_runtime.pagination import page_size as checked_page_size
from evolutivo_runtime.pagination import parse_int_token
from evolutivo_runtime.server import Context

log = logging.getLogger(__name__)

# The same table in every service's database; it belongs to no service's model.
_metadata = MetaData()
audit_log = Table(
    "audit_log",
    _metadata,
    Column("seq", BigInteger, Identity(always=True), primary_key=True),
    Column("actor", Text, nullable=False),
    Column("actor_issuer", Text, nullable=False),
    Column("rpc", Text, nullable=False),
    Column("request_id", Text, nullable=False),
    Column("account_id", Text),
    Column("resource_ids", JSONB, nullable=False),
    Column("event_types", JSONB, nullable=False),
    Column("source", Text, nullable=False),
    # By the service's clock (business time); record_time is the database's own.
    Column("occur_time", DateTime(timezone=True), nullable=False),
    Column("record_time", DateTime(timezone=True), nullable=False, server_default=func.now()),
    # As create_audit_log_table makes them: the two ways the log is queried.
    Index("audit_log_account", "account_id", "seq"),
    Index("audit_log_actor", "actor", "seq"),
)

_MAX_IDS = 32
_ID_SUFFIXES = ("_id", "_ids")
_ID_NAMES = frozenset({"reference", "payment_reference", "code", "charge_offer_code"})


def create_audit_log_table(op: Any) -> None:
    """The audit log as of its first migration in each service. Frozen: change it with new migrations."""
    import sqlalchemy as sa

    op.create_table(
        "audit_log",
        sa.Column("seq", sa.BigInteger, sa.Identity(always=True), primary_key=True),
        sa.Column("actor", sa.Text, nullable=False),
        sa.Column("actor_issuer", sa.Text, nullable=False),
        sa.Column("rpc", sa.Text, nullable=False),
        sa.Column("request_id", sa.Text, nullable=False),
        sa.Column("account_id", sa.Text),
        sa.Column("resource_ids", JSONB, nullable=False),
        sa.Column("event_types", JSONB, nullable=False),
        sa.Column("source", sa.Text, nullable=False),
        sa.Column("occur_time", sa.DateTime(timezone=True), nullable=False),
        sa.Column("record_time", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
    )
    op.create_index("audit_log_account", "audit_log", ["account_id", "seq"])
    op.create_index("audit_log_actor", "audit_log", ["actor", "seq"])
    # Append-only: nobody, not even the service, rewrites history.
    op.execute(
        """
        CREATE FUNCTION audit_log_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            RAISE EXCEPTION 'audit_log is append-only: % refused', TG_OP;
        END
        $$
        """
    )
    op.execute(
        "CREATE TRIGGER audit_log_append_only BEFORE UPDATE OR DELETE ON audit_log "
        "FOR EACH ROW EXECUTE FUNCTION audit_log_append_only()"
    )
    op.execute(
        "CREATE TRIGGER audit_log_no_truncate BEFORE TRUNCATE ON audit_log "
        "FOR EACH STATEMENT EXECUTE FUNCTION audit_log_append_only()"
    )


def drop_audit_log_table(op: Any) -> None:
    op.execute("DROP TABLE audit_log")
    op.execute("DROP FUNCTION audit_log_append_only()")


def resource_ids(message: Message, prefix: str = "", depth: int = 3) -> dict[str, str]:
    """Identifier fields (…_id, reference, code) of a message and its nested messages, by path.
    Only identifiers: never names, addresses, payment details or amounts."""
    found: dict[str, str] = {}
    for fd, value in message.ListFields():
        path = f"{prefix}.{fd.name}" if prefix else fd.name
        if fd.type == FieldDescriptor.TYPE_STRING:
            if fd.name.endswith(_ID_SUFFIXES) or fd.name in _ID_NAMES:
                if fd.is_repeated:
                    for i, item in enumerate(value):
                        found[f"{path}[{i}]"] = str(item)
                else:
                    found[path] = str(value)
        elif fd.message_type is not None and depth > 1 and not fd.message_type.GetOptions().map_entry:
            if fd.is_repeated:
                for i, item in enumerate(value):
                    if len(found) >= _MAX_IDS:
                        break
                    found.update(resource_ids(item, f"{path}[{i}]", depth - 1))
            else:
                found.update(resource_ids(value, path, depth - 1))
        if len(found) >= _MAX_IDS:
            break
    return dict(list(found.items())[:_MAX_IDS])


def account_of(ids: dict[str, str]) -> str | None:
    for path, value in ids.items():
        if path.rsplit(".", 1)[-1] == "account_id" and value:
            return value
    return None


@dataclass
class AuditContext:
    """The mutating call in progress (set by the AuthGuard for the call's duration)."""

    actor: str
    actor_issuer: str
    rpc: str
    request_id: str
    request_ids: dict[str, str]
    sessions: async_sessionmaker[AsyncSession] | None
    clock: Clock
    recorded: int = field(default=0)
    # SHA-256 of the request as received (evolutivo_runtime.idempotency.request_digest): a request
    # id reused with another request is refused.
    request_digest: str = field(default="")

    def row(self, events: Iterable[tuple[str, Message]], source: str, now: datetime) -> dict[str, Any]:
        ids = dict(self.request_ids)
        event_types: list[str] = []
        for event_type, message in events:
            event_types.append(event_type)
            short = event_type.rsplit(".", 1)[-1]
            for path, value in resource_ids(message).items():
                if len(ids) < _MAX_IDS:
                    ids.setdefault(f"{short}.{path}", value)
        return {
            "actor": self.actor,
            "actor_issuer": self.actor_issuer,
            "rpc": self.rpc,
            "request_id": self.request_id,
            "account_id": account_of(self.request_ids) or account_of(ids),
            "resource_ids": ids,
            "event_types": event_types,
            "source": source,
            "occur_time": now,
        }


_NO_IDS = Empty()


def request_digest(request: Message) -> str:
    """SHA-256 of a request's deterministic serialization: the same request gives the same digest."""
    return hashlib.sha256(request.SerializeToString(deterministic=True)).hexdigest()


current_audit: contextvars.ContextVar[AuditContext | None] = contextvars.ContextVar("audit", default=None)


# Calls whose changes one transaction commits together (a service coalescing concurrent calls,
# e.g. charging's grouped RecordUsage): each still gets its own record, in that transaction.
grouped_audits: contextvars.ContextVar[tuple[AuditContext, ...]] = contextvars.ContextVar("grouped_audits", default=())


@dataclass(frozen=True)
class PendingAudit:
    """The audit records a unit of work's commit writes with its change, and the calls they are for."""

    rows: list[dict[str, Any]]
    contexts: tuple[AuditContext, ...]

    def written(self) -> None:
        for context in self.contexts:
            context.recorded += 1


def audit_in_transaction(events: Iterable[tuple[str, Message]], now: datetime) -> PendingAudit | None:
    """Called by UnitOfWork.commit before it commits: the records it writes in the change's
    transaction (in the same statement as its outbox rows), or None outside a mutating call."""
    group = grouped_audits.get()
    if group:
        # The events are shared by the calls: each record names their types, and only its own
        # call's identifiers (the shared events' identifiers belong to the other calls too).
        types = [(event_type, _NO_IDS) for event_type, _ in events]
        return PendingAudit([c.row(types, "unit_of_work", now) for c in group], group)
    context = current_audit.get()
    if context is None:
        return None
    return PendingAudit([context.row(events, "unit_of_work", now)], (context,))


async def record_after_call(context: AuditContext) -> None:
    """The record of a successful call that committed nothing through a unit of work."""
    if context.recorded or context.sessions is None:
        return
    async with context.sessions() as session:
        await session.execute(insert(audit_log), [context.row((), "interceptor", context.clock.now())])
        await session.commit()


def _record_pb(row: Any) -> audit_pb.AuditRecord:
    occur = Timestamp()
    occur.FromDatetime(row.occur_time)
    return audit_pb.AuditRecord(
        sequence=row.seq,
        actor=row.actor,
        actor_issuer=row.actor_issuer,
        rpc=row.rpc,
        request_id=row.request_id,
        account_id=row.account_id or "",
        resource_ids=row.resource_ids,
        event_types=row.event_types,
        occur_time=occur,
        source=row.source,
    )


class AuditAdminServicer(audit_grpc.AuditAdminServiceServicer):
    def __init__(self, sessions: Callable[[], AsyncSession]) -> None:
        self._sessions = sessions

    async def ListAuditRecords(
        self, request: audit_pb.ListAuditRecordsRequest, context: Context
    ) -> audit_pb.ListAuditRecordsResponse:
        size = checked_page_size(request.page_size)
        after = parse_int_token(request.page_token)
        query = select(audit_log).where(audit_log.c.seq > after).order_by(audit_log.c.seq).limit(size + 1)
        if request.account_id:
            # Account ids are UUIDs everywhere: a malformed one is a caller's mistake, not "no records".
            parse_uuid("account_id", request.account_id)
            query = query.where(audit_log.c.account_id == request.account_id)
        if request.actor:
            query = query.where(audit_log.c.actor == request.actor)
        async with self._sessions() as session:
            rows = (await session.execute(query)).all()
        page, more = rows[:size], len(rows) > size
        return audit_pb.ListAuditRecordsResponse(
            audit_records=[_record_pb(row) for row in page],
            next_page_token=str(page[-1].seq) if more and page else "",
        )
