"""Credit-note allocation events: the sequence of each credit note's allocations (CreditNoteAllocated).

`credit_notes.allocation_sequence` is the sequence of the last CreditNoteAllocated billing
published for the note: 1 for the allocation made when it was issued (to its own bill), then one
more for each later bill that took part of its credit (docs/billing.md, "Credit notes").

Credit notes billing had before this migration made their allocation at issue without announcing
it: they count as announced (1), so a later bill taking their remaining credit announces it as
number 2. (The ERP gateway never receives a number 1 for them: an allocation does not wait for a
predecessor the gateway never had; docs/erp_gateway.md, "Credit notes as billing allocated them".)

Revision ID: 0013
Revises: 0012
Create Date: 2027-02-09
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0013"
down_revision: str | None = "0012"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("credit_notes", sa.Column("allocation_sequence", sa.Integer, nullable=False, server_default="0"))
    op.create_check_constraint("credit_notes_allocation_sequence", "credit_notes", "allocation_sequence >= 0")
    op.execute("UPDATE credit_notes SET allocation_sequence = 1")


def downgrade() -> None:
    op.drop_constraint("credit_notes_allocation_sequence", "credit_notes", type_="check")
    op.drop_column("credit_notes", "allocation_sequence")
