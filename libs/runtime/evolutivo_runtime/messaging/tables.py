"""Outbox and inbox tables. Each service adds them to its own metadata and creates them in its
own database through its own migrations (see evolutivo_runtime.migrations)."""

from __future__ import annotations

from sqlalchemy import BigInteger, Column, DateTime, Identity, LargeBinary, MetaData, Table, Text, func
from sqlalchemy.dialects.postgresql import JSONB, UUID

# Channel the unit of work NOTIFYs after writing to the outbox, so the relay publishes at once.
OUTBOX_CHANNEL = "evolutivo_outbox"


def outbox_table(metadata: MetaData) -> Table:
    return Table(
        "outbox",
        metadata,
        # Publication order: the relay publishes in seq order.
        Column("seq", BigInteger, Identity(always=True), primary_key=True),
        Column("event_id", UUID(as_uuid=True), nullable=False, unique=True),
        Column("subject", Text, nullable=False),
        Column("event_type", Text, nullable=False),
        Column("payload", LargeBinary, nullable=False),
        Column("headers", JSONB, nullable=False),
        Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    )


def inbox_table(metadata: MetaData) -> Table:
    return Table(
        "inbox",
        metadata,
        Column("consumer", Text, primary_key=True),
        Column("event_id", UUID(as_uuid=True), primary_key=True),
        Column("event_type", Text, nullable=False),
        Column("applied_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    )


def messaging_tables(metadata: MetaData) -> tuple[Table, Table]:
    return outbox_table(metadata), inbox_table(metadata)
