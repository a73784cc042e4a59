"""Payment allocation events: the sequence of each payment's allocations (PaymentAllocated).

`payments.allocation_sequence` is the sequence of the last PaymentAllocated billing published for
the payment: 1 for the allocation made when it was recorded, then one more for each later
application of its credit to a newly issued bill (docs/billing.md, "Payments").

Payments billing had before this migration made their first allocation without announcing it:
they count as announced (1), except reversed ones (0), which may be payments whose reversal came
first and whose PaymentRecorded is still to come (it then announces its empty allocation; for a
payment reversed after its allocation that is a harmless extra announcement).

Revision ID: 0011
Revises: 0010
Create Date: 2027-02-02
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0011"
down_revision: str | None = "0010"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("payments", sa.Column("allocation_sequence", sa.Integer, nullable=False, server_default="0"))
    op.create_check_constraint("payments_allocation_sequence", "payments", "allocation_sequence >= 0")
    op.execute("UPDATE payments SET allocation_sequence = 1 WHERE NOT reversed")


def downgrade() -> None:
    op.drop_constraint("payments_allocation_sequence", "payments", type_="check")
    op.drop_column("payments", "allocation_sequence")
