"""The ledger, payments, closable groups and the request log.

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-20
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from evolutivo_runtime.idempotency import create_request_log_table

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

ENTRY_TYPES = ("charge", "payment", "adjustment", "write_off", "refund", "payment_reversal", "transfer")


def upgrade() -> None:
    op.add_column("balance_groups", sa.Column("close_time", sa.DateTime(timezone=True)))
    op.create_index(
        "balance_groups_open_name",
        "balance_groups",
        ["account_id", "name"],
        unique=True,
        postgresql_where=sa.text("close_time IS NULL"),
    )
    op.create_table(
        "ledger_entries",
        sa.Column("entry_id", sa.Uuid, primary_key=True),
        sa.Column("seq", sa.BigInteger, sa.Identity(always=True), nullable=False, unique=True),
        sa.Column("balance_group_id", sa.Uuid, sa.ForeignKey("balance_groups.balance_group_id"), nullable=False),
        sa.Column("account_id", sa.Uuid, nullable=False),
        sa.Column("type", sa.Text, nullable=False),
        sa.Column("amount", sa.Numeric(38, 9), nullable=False),
        sa.Column("currency_code", sa.Text, nullable=False),
        sa.Column("source_type", sa.Text, nullable=False),
        sa.Column("source_id", sa.Text, nullable=False),
        sa.Column("reason_code", sa.Text, nullable=False),
        sa.Column("reason", sa.Text, nullable=False),
        sa.Column("actor", sa.Text, nullable=False),
        sa.Column("effective_time", sa.DateTime(timezone=True), nullable=False),
        sa.Column("create_time", sa.DateTime(timezone=True), nullable=False),
        sa.UniqueConstraint("type", "source_type", "source_id", name="ledger_entries_source"),
        sa.CheckConstraint(f"type IN {ENTRY_TYPES!r}", name="ledger_entries_type"),
    )
    op.create_index("ledger_entries_group_time", "ledger_entries", ["balance_group_id", "effective_time"])
    op.create_index("ledger_entries_account_time", "ledger_entries", ["account_id", "effective_time", "seq"])
    # Append-only: a correction is a new entry, never an edit.
    op.execute(
        """
        CREATE FUNCTION ledger_entries_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            RAISE EXCEPTION 'ledger_entries is append-only: % refused', TG_OP;
        END
        $$
        """
    )
    op.execute(
        "CREATE TRIGGER ledger_entries_append_only BEFORE UPDATE OR DELETE ON ledger_entries "
        "FOR EACH ROW EXECUTE FUNCTION ledger_entries_append_only()"
    )
    op.create_table(
        "payments",
        sa.Column("payment_id", sa.Uuid, primary_key=True),
        sa.Column("reference", sa.Text, nullable=False, unique=True),
        sa.Column("account_id", sa.Uuid, nullable=False, index=True),
        sa.Column("balance_group_id", sa.Uuid, nullable=False),
        sa.Column("amount", sa.Numeric(38, 9), nullable=False),
        sa.Column("currency_code", sa.Text, nullable=False),
        sa.Column("method", sa.Text, nullable=False),
        sa.Column("received_time", sa.DateTime(timezone=True), nullable=False),
        sa.Column("state", sa.Text, nullable=False),
        sa.Column("entry_id", sa.Uuid, nullable=False),
        sa.Column("reversal_entry_id", sa.Uuid),
        sa.Column("reversal_reason", sa.Text, nullable=False),
        sa.Column("reverse_time", sa.DateTime(timezone=True)),
        sa.Column("create_time", sa.DateTime(timezone=True), nullable=False),
    )
    create_request_log_table(op)


def downgrade() -> None:
    op.drop_table("request_log")
    op.drop_table("payments")
    op.drop_table("ledger_entries")
    op.execute("DROP FUNCTION ledger_entries_append_only()")
    op.drop_index("balance_groups_open_name", table_name="balance_groups")
    op.drop_column("balance_groups", "close_time")
