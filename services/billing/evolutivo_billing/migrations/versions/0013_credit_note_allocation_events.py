"""Credit-note allocation events: the sequence of each credit note's allocations (CreditNoteAllocated).

`credit_notes.allocation_sequence` is the sequence of the last CreditNoteAllocated billing
published for the note: 1 for the allocation made when it was issued (to its own bill), then one
more for each later bill that took part of its credit (docs/billing.md, "Credit notes").

Credit notes billing had before this migration made their allocation at issue without announcing
it: they count as announced (1), so a later bill taking their remaining credit announces it as
number 2. (The ERP gateway never receives a number 1 for them: an allocation does not wait for a
predecessor the gateway never had; docs/erp_gateway.md, "Credit notes as billing allocated them".)
That is the column's default, so that

- adding it changes the catalog only (PostgreSQL 11 and later keep a constant default without
  rewriting the table) and no full-table UPDATE writes every note again (the check added with it
  reads the table once, writing nothing), and
- notes that billing replicas still on the previous version insert during a rolling deploy (they
  do not name the column, nor announce their allocation at issue) count as announced too: a later
  bill taking their credit announces number 2, not a number 1 that the gateway would take for the
  allocation to the note's own bill.

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
    op.add_column("credit_notes", sa.Column("allocation_sequence", sa.Integer, nullable=False, server_default="1"))
    op.create_check_constraint("credit_notes_allocation_sequence", "credit_notes", "allocation_sequence >= 0")


def downgrade() -> None:
    op.drop_constraint("credit_notes_allocation_sequence", "credit_notes", type_="check")
    op.drop_column("credit_notes", "allocation_sequence")
