"""The charge-offer catalog (one row per version of an offer) and the request log.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-18
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from evolutivo_runtime.idempotency import create_request_log_table
from sqlalchemy.dialects import postgresql

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "charge_offers",
        sa.Column("charge_offer_id", sa.Uuid, primary_key=True),
        sa.Column("code", sa.Text, nullable=False),
        sa.Column("version", sa.Integer, nullable=False),
        sa.Column("name", sa.Text, nullable=False),
        sa.Column("description", sa.Text, nullable=False),
        sa.Column("currency_code", sa.Text, nullable=False),
        sa.Column("valid_from", sa.DateTime(timezone=True)),
        sa.Column("valid_to", sa.DateTime(timezone=True)),
        sa.Column("status", sa.Text, nullable=False),
        # A JSON array of evolutivo.charging.v1.Charge in protobuf JSON form (proto field names).
        sa.Column("charges", postgresql.JSONB, nullable=False),
        sa.Column("create_time", sa.DateTime(timezone=True), nullable=False),
        sa.Column("activate_time", sa.DateTime(timezone=True)),
        sa.Column("retire_time", sa.DateTime(timezone=True)),
        sa.UniqueConstraint("code", "version", name="charge_offers_code_version"),
    )
    # At most one activated version of a code is open-ended: activation ends the previous one.
    op.create_index(
        "charge_offers_one_open_ended",
        "charge_offers",
        ["code"],
        unique=True,
        postgresql_where=sa.text("status <> 'draft' AND valid_to IS NULL"),
    )
    create_request_log_table(op)


def downgrade() -> None:
    op.drop_table("request_log")
    op.drop_index("charge_offers_one_open_ended", "charge_offers")
    op.drop_table("charge_offers")
