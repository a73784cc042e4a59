"""Bill units, outbox and inbox.

Revision ID: 0001
Revises:
Create Date: 2026-12-04
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from evolutivo_runtime.migrations import create_messaging_tables

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "bill_units",
        sa.Column("bill_unit_id", sa.Uuid, primary_key=True),
        sa.Column("account_id", sa.Uuid, nullable=False, unique=True),
        sa.Column("currency_code", sa.Text, nullable=False),
        sa.Column("time_zone", sa.Text, nullable=False),
        sa.Column("bill_cycle_day", sa.Integer, nullable=False),
        sa.Column("billing_frequency", sa.Text, nullable=False),
        sa.Column("payment_terms_days", sa.Integer, nullable=False),
        sa.Column("create_time", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index("bill_units_listing", "bill_units", ["create_time", "bill_unit_id"])
    create_messaging_tables(op)


def downgrade() -> None:
    op.drop_table("inbox")
    op.drop_table("outbox")
    op.drop_table("bill_units")
