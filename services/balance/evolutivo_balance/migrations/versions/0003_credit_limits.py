"""Credit limits, temporary limits and thresholds on balance groups, with their published state;
tax and credit-note ledger entries.

Revision ID: 0003
Revises: 0002
Create Date: 2027-01-12
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

ENTRY_TYPES_0002 = ("charge", "payment", "adjustment", "write_off", "refund", "payment_reversal", "transfer")
ENTRY_TYPES = (*ENTRY_TYPES_0002, "tax", "credit_note")


def upgrade() -> None:
    op.add_column("balance_groups", sa.Column("credit_limit", sa.Numeric(38, 9)))
    op.add_column("balance_groups", sa.Column("temporary_credit_limit", sa.Numeric(38, 9)))
    op.add_column("balance_groups", sa.Column("temporary_limit_expire_time", sa.DateTime(timezone=True)))
    op.add_column(
        "balance_groups",
        sa.Column("credit_thresholds", JSONB, nullable=False, server_default=sa.text("'[]'::jsonb")),
    )
    op.add_column(
        "balance_groups",
        sa.Column("credit_limit_exceeded", sa.Boolean, nullable=False, server_default=sa.text("false")),
    )
    op.add_column(
        "balance_groups",
        sa.Column("credit_thresholds_reached", JSONB, nullable=False, server_default=sa.text("'[]'::jsonb")),
    )
    op.add_column(
        "balance_groups", sa.Column("credit_state_version", sa.BigInteger, nullable=False, server_default=sa.text("0"))
    )
    op.add_column(
        "balance_groups",
        sa.Column("threshold_state_version", sa.BigInteger, nullable=False, server_default=sa.text("0")),
    )
    op.create_index(
        "balance_groups_temporary_limit_expiry",
        "balance_groups",
        ["temporary_limit_expire_time"],
        postgresql_where=sa.text("temporary_limit_expire_time IS NOT NULL"),
    )
    op.drop_constraint("ledger_entries_type", "ledger_entries", type_="check")
    op.create_check_constraint("ledger_entries_type", "ledger_entries", f"type IN {ENTRY_TYPES!r}")


def downgrade() -> None:
    # Tax and credit-note entries cannot be kept by the older schema, and the ledger is append-only:
    # going down with them booked fails on the constraint, as it should.
    op.drop_constraint("ledger_entries_type", "ledger_entries", type_="check")
    op.create_check_constraint("ledger_entries_type", "ledger_entries", f"type IN {ENTRY_TYPES_0002!r}")
    op.drop_index("balance_groups_temporary_limit_expiry", table_name="balance_groups")
    for column in (
        "threshold_state_version",
        "credit_state_version",
        "credit_thresholds_reached",
        "credit_limit_exceeded",
        "credit_thresholds",
        "temporary_limit_expire_time",
        "temporary_credit_limit",
        "credit_limit",
    ):
        op.drop_column("balance_groups", column)
