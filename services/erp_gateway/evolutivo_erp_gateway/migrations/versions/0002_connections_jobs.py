"""Connections, sync jobs, general-ledger postings, inbound payments, request log.

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-04
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from evolutivo_runtime.idempotency import create_request_log_table
from sqlalchemy.dialects.postgresql import JSONB

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("sync_states", sa.Column("account_id", sa.Uuid))
    op.add_column("sync_states", sa.Column("payload", sa.LargeBinary))
    op.add_column("sync_states", sa.Column("payload_version", sa.DateTime(timezone=True)))
    op.create_table(
        "connections",
        sa.Column("connection_id", sa.Uuid, primary_key=True),
        sa.Column("display_name", sa.Text, nullable=False),
        sa.Column("type", sa.Text, nullable=False),
        sa.Column("endpoint_url", sa.Text, nullable=False),
        sa.Column("database", sa.Text, nullable=False),
        sa.Column("username", sa.Text, nullable=False),
        sa.Column("secret", sa.LargeBinary),
        sa.Column("mapping", JSONB, nullable=False),
        sa.Column("enabled", sa.Boolean, nullable=False),
        sa.Column("import_payments", sa.Boolean, nullable=False),
        sa.Column("create_request_id", sa.Uuid, unique=True),
        sa.Column("create_time", sa.DateTime(timezone=True), nullable=False),
        sa.Column("update_time", sa.DateTime(timezone=True), nullable=False),
        sa.Column("version", sa.Integer, nullable=False),
        sa.Column("import_cursor_time", sa.Text),
        sa.Column("import_cursor_id", sa.BigInteger),
        sa.Column("consecutive_failures", sa.Integer, nullable=False, server_default="0"),
        sa.Column("paused_until", sa.DateTime(timezone=True)),
    )
    op.create_table(
        "sync_jobs",
        sa.Column("job_id", sa.Uuid, primary_key=True),
        sa.Column("sequence", sa.BigInteger, sa.Identity(always=True), nullable=False, unique=True),
        sa.Column("connection_id", sa.Uuid, sa.ForeignKey("connections.connection_id"), nullable=False),
        sa.Column("entity_type", sa.Text, nullable=False),
        sa.Column("entity_id", sa.Uuid, nullable=False),
        sa.Column("account_id", sa.Uuid, nullable=False),
        sa.Column("state", sa.Text, nullable=False),
        sa.Column("attempts", sa.Integer, nullable=False),
        sa.Column("last_error", sa.Text, nullable=False),
        sa.Column("next_attempt_time", sa.DateTime(timezone=True), nullable=False),
        sa.Column("erp_id", sa.Text, nullable=False),
        sa.Column("payload_version", sa.DateTime(timezone=True)),
        sa.Column("create_time", sa.DateTime(timezone=True), nullable=False),
        sa.Column("update_time", sa.DateTime(timezone=True), nullable=False),
        sa.UniqueConstraint("connection_id", "entity_type", "entity_id"),
    )
    op.create_index("sync_jobs_due", "sync_jobs", ["state", "next_attempt_time"])
    op.create_index("sync_jobs_account", "sync_jobs", ["connection_id", "account_id"])
    op.create_table(
        "gl_postings",
        sa.Column("posting_id", sa.BigInteger, sa.Identity(always=True), primary_key=True),
        sa.Column("source_type", sa.Text, nullable=False),
        sa.Column("source_id", sa.Text, nullable=False),
        sa.Column("currency_code", sa.Text, nullable=False),
        sa.Column("effective_time", sa.DateTime(timezone=True), nullable=False),
        sa.Column("role", sa.Text, nullable=False),
        sa.Column("charge_offer_code", sa.Text, nullable=False),
        sa.Column("amount", sa.Numeric(38, 9), nullable=False),
        sa.UniqueConstraint("source_type", "source_id", "role", "charge_offer_code"),
    )
    op.create_index("gl_postings_period", "gl_postings", ["currency_code", "effective_time"])
    op.create_table(
        "inbound_payments",
        sa.Column("connection_id", sa.Uuid, sa.ForeignKey("connections.connection_id"), primary_key=True),
        sa.Column("erp_id", sa.Text, primary_key=True),
        sa.Column("reference", sa.Text, nullable=False),
        sa.Column("account_id", sa.Uuid),
        sa.Column("amount", sa.Numeric(38, 9), nullable=False),
        sa.Column("currency_code", sa.Text, nullable=False),
        sa.Column("status", sa.Text, nullable=False),
        sa.Column("payment_id", sa.Text, nullable=False),
        sa.Column("reason", sa.Text, nullable=False),
        sa.Column("create_time", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index("ix_inbound_payments_reference", "inbound_payments", ["reference"])
    create_request_log_table(op)


def downgrade() -> None:
    op.drop_table("request_log")
    op.drop_table("inbound_payments")
    op.drop_table("gl_postings")
    op.drop_table("sync_jobs")
    op.drop_table("connections")
    op.drop_column("sync_states", "payload_version")
    op.drop_column("sync_states", "payload")
    op.drop_column("sync_states", "account_id")
