"""Charging's projections of customer's purchases and billing's cycles.

Revision ID: 0004
Revises: 0003
Create Date: 2027-01-08
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "purchases",
        sa.Column("purchase_id", sa.Uuid, primary_key=True),
        sa.Column("account_id", sa.Uuid, nullable=False),
        sa.Column("service_id", sa.Uuid),
        sa.Column("charge_offer_code", sa.Text, nullable=False),
        sa.Column("charge_offer_version", sa.Integer, nullable=False),
        sa.Column("quantity", sa.Numeric, nullable=False),
        sa.Column("start_time", sa.DateTime(timezone=True), nullable=False),
        sa.Column("end_time", sa.DateTime(timezone=True)),
        sa.Column("cancel_time", sa.DateTime(timezone=True)),
        sa.Column("price_overrides", postgresql.JSONB, nullable=False),
        sa.Column("end_update_time", sa.DateTime(timezone=True)),
        sa.Column("update_time", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index("purchases_account", "purchases", ["account_id"])
    op.create_table(
        "bill_cycles",
        sa.Column("bill_cycle_id", sa.Uuid, primary_key=True),
        sa.Column("account_id", sa.Uuid, nullable=False),
        sa.Column("bill_unit_id", sa.Uuid),
        sa.Column("sequence", sa.BigInteger, nullable=False),
        sa.Column("start_time", sa.DateTime(timezone=True), nullable=False),
        sa.Column("end_time", sa.DateTime(timezone=True), nullable=False),
        sa.Column("status", sa.Text, nullable=False),
        sa.Column("close_time", sa.DateTime(timezone=True)),
        sa.Column("time_zone", sa.Text, nullable=False),
        sa.Column("update_time", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index("bill_cycles_account", "bill_cycles", ["account_id"])


def downgrade() -> None:
    op.drop_index("bill_cycles_account", "bill_cycles")
    op.drop_table("bill_cycles")
    op.drop_index("purchases_account", "purchases")
    op.drop_table("purchases")
