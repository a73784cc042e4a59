"""Billing's allocations of credit notes' credit to bills (CreditNoteAllocated), which the ERP
follows as it follows payments' (docs/erp_gateway.md, "Credit notes as billing allocated them").

Revision ID: 0006
Revises: 0005
Create Date: 2027-02-09
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
        "credit_note_allocations",
        sa.Column("credit_note_id", sa.Uuid, nullable=False),
        sa.Column("sequence", sa.BigInteger, nullable=False),
        sa.Column("entity_id", sa.Uuid, nullable=False),
        sa.Column("account_id", sa.Uuid, nullable=False),
        sa.Column("payload", sa.LargeBinary, nullable=False),
        sa.Column("receive_time", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("credit_note_id", "sequence", name="credit_note_allocations_pkey"),
        sa.UniqueConstraint("entity_id", name="credit_note_allocations_entity_id_key"),
        sa.CheckConstraint("sequence >= 1", name="credit_note_allocations_sequence"),
    )


def downgrade() -> None:
    op.drop_table("credit_note_allocations")
