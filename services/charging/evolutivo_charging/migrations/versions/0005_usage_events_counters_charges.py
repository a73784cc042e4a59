"""Usage rating: usage events (idempotency and the kept unrated ones), usage counters, charges.

Revision ID: 0005
Revises: 0004
Create Date: 2027-01-08
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "usage_events",
        sa.Column("event_id", sa.Text, primary_key=True),
        sa.Column("seq", sa.BigInteger, sa.Identity(always=True), nullable=False, unique=True),
        sa.Column("payload_sha256", sa.Text, nullable=False),
        sa.Column("account_id", sa.Uuid, nullable=False),
        sa.Column("payload", postgresql.JSONB, nullable=False),
        sa.Column("status", sa.Text, nullable=False),
        sa.Column("reason", sa.Text, nullable=False),
        sa.Column("charge_ids", postgresql.ARRAY(sa.Uuid), nullable=False),
        sa.Column("receive_time", sa.DateTime(timezone=True), nullable=False),
        sa.Column("rate_time", sa.DateTime(timezone=True), nullable=False),
        sa.Column("attempts", sa.Integer, nullable=False),
    )
    op.create_index("usage_events_kept", "usage_events", ["seq"], postgresql_where=sa.text("status <> 'rated'"))
    op.create_index(
        "usage_events_kept_by_account",
        "usage_events",
        ["account_id", "seq"],
        postgresql_where=sa.text("status <> 'rated'"),
    )
    op.create_table(
        "usage_counters",
        sa.Column("account_id", sa.Uuid, nullable=False),
        sa.Column("purchase_id", sa.Uuid, nullable=False),
        sa.Column("charge_code", sa.Text, nullable=False),
        sa.Column("bill_cycle_id", sa.Uuid, nullable=False),
        sa.Column("units", sa.Numeric, nullable=False),
        sa.Column("update_time", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint(
            "account_id", "purchase_id", "charge_code", "bill_cycle_id", name="usage_counters_pkey"
        ),
    )
    op.create_table(
        "charges",
        sa.Column("charge_id", sa.Uuid, primary_key=True),
        sa.Column("seq", sa.BigInteger, sa.Identity(always=True), nullable=False, unique=True),
        sa.Column("account_id", sa.Uuid, nullable=False),
        sa.Column("kind", sa.Text, nullable=False),
        sa.Column("event_id", sa.Text, nullable=False),
        sa.Column("purchase_id", sa.Uuid, nullable=False),
        sa.Column("charge_offer_code", sa.Text, nullable=False),
        sa.Column("charge_offer_version", sa.Integer, nullable=False),
        sa.Column("charge_code", sa.Text, nullable=False),
        sa.Column("balance_group", sa.Text, nullable=False),
        sa.Column("tax_code", sa.Text, nullable=False),
        sa.Column("quantity", sa.Numeric, nullable=False),
        sa.Column("amount", sa.Numeric(38, 9), nullable=False),
        sa.Column("currency_code", sa.Text, nullable=False),
        sa.Column("unrounded_amount", sa.Numeric, nullable=False),
        sa.Column("tiers", postgresql.JSONB, nullable=False),
        sa.Column("event_time", sa.DateTime(timezone=True), nullable=False),
        sa.Column("rate_time", sa.DateTime(timezone=True), nullable=False),
        sa.Column("bill_cycle_id", sa.Uuid, nullable=False),
        sa.Column("late", sa.Boolean, nullable=False),
        sa.Column("reverses_charge_id", sa.Uuid),
    )
    op.create_index("charges_account", "charges", ["account_id", "seq"])
    op.create_index("charges_account_cycle", "charges", ["account_id", "bill_cycle_id", "seq"])


def downgrade() -> None:
    op.drop_table("charges")
    op.drop_table("usage_counters")
    op.drop_table("usage_events")
