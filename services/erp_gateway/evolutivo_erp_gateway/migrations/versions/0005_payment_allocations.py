"""Billing's allocations of payments to bills (PaymentAllocated), which payments follow in the ERP.

Revision ID: 0005
Revises: 0004
Create Date: 2027-02-02
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "payment_allocations",
        sa.Column("payment_id", sa.Uuid, nullable=False),
        sa.Column("sequence", sa.BigInteger, nullable=False),
        sa.Column("entity_id", sa.Uuid, nullable=False),
        sa.Column("account_id", sa.Uuid, nullable=False),
        sa.Column("payload", sa.LargeBinary, nullable=False),
        sa.Column("receive_time", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("payment_id", "sequence", name="payment_allocations_pkey"),
        sa.UniqueConstraint("entity_id", name="payment_allocations_entity_id_key"),
        sa.CheckConstraint("sequence >= 1", name="payment_allocations_sequence"),
    )


def downgrade() -> None:
    op.drop_table("payment_allocations")
