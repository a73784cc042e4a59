"""The closer's claim reads due cycles in its own order (docs/performance.md, "Seventh round").

The claim takes the open cycles that ended by the cutoff, `ORDER BY end_time, bill_cycle_id
LIMIT n FOR UPDATE SKIP LOCKED`. `bill_cycles_due` held `end_time` alone, and cycles end at the
same instants (every unit of a cycle day in a time zone ends at its midnight): PostgreSQL read
every due cycle and sorted them all to take the first hundred, in every pass: over 30,000 open
cycles ending together, 23.8 ms (a sort spilling to disk); in the index's order it reads the
hundred it takes, ~0.2 ms.

Revision ID: 0014
Revises: 0013
Create Date: 2027-02-16
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0014"
down_revision: str | None = "0013"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.drop_index("bill_cycles_due", table_name="bill_cycles")
    op.create_index(
        "bill_cycles_due", "bill_cycles", ["end_time", "bill_cycle_id"], postgresql_where=sa.text("status = 'open'")
    )


def downgrade() -> None:
    op.drop_index("bill_cycles_due", table_name="bill_cycles")
    op.create_index("bill_cycles_due", "bill_cycles", ["end_time"], postgresql_where=sa.text("status = 'open'"))
