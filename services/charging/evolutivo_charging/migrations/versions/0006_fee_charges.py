"""Fees on the calendar: the key of every fee charged (once per purchase, charge, period and
kind), and when charging charged the fees due at a purchase's start.

Revision ID: 0006
Revises: 0005
Create Date: 2027-01-15
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "fee_charges",
        sa.Column("purchase_id", sa.Uuid, nullable=False),
        sa.Column("charge_code", sa.Text, nullable=False),
        sa.Column("period_cycle_id", sa.Uuid, nullable=False),
        sa.Column("kind", sa.Text, nullable=False),
        sa.Column("charge_id", sa.Uuid, nullable=False, unique=True),
        sa.Column("account_id", sa.Uuid, nullable=False),
        sa.Column("create_time", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("purchase_id", "charge_code", "period_cycle_id", "kind", name="fee_charges_pkey"),
    )
    op.add_column("purchases", sa.Column("start_fees_time", sa.DateTime(timezone=True)))
    # Purchases that existed before fees were charged are not charged for their past: their
    # fees start with the next cycle event.
    op.execute("UPDATE purchases SET start_fees_time = update_time")
    op.create_index(
        "purchases_start_fees_pending",
        "purchases",
        ["start_time", "purchase_id"],
        postgresql_where=sa.text("start_fees_time IS NULL"),
    )


def downgrade() -> None:
    op.drop_index("purchases_start_fees_pending", "purchases")
    op.drop_column("purchases", "start_fees_time")
    op.drop_table("fee_charges")
