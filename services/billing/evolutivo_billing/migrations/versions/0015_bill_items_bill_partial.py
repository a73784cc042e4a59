"""A bill's items are indexed once they are billed, not while they wait (docs/performance.md,
"Tenth round").

`bill_items_bill` (bill_id, bill_line_number, charge_id) serves the reads of a bill's lines'
charges (`bill_id IN (...)`) and the foreign key's checks from `bills`. It indexed every item from
its insert, with a NULL bill_id until the bill run: one index entry per charge received that no
query reads (each costs a WAL record and a descent of the index on the ingest's hottest insert).
Partial on `bill_id IS NOT NULL`, an item enters it when the bill run marks it billed (that update
writes a new index entry anyway). A condition on `bill_id = ...` or `bill_id IN (...)` implies the
predicate, so the same queries use it.

Building it reads the table once under a SHARE lock (inserts wait, reads go on): migrations run in
one transaction under the runner's advisory lock, so not CONCURRENTLY. On a large table an operator
may build `bill_items_billed` with CREATE INDEX CONCURRENTLY before the release (this migration
then only drops the old index; deploy/README.md, "Upgrades without downtime").

Revision ID: 0015
Revises: 0014
Create Date: 2027-03-02
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0015"
down_revision: str | None = "0014"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.execute(
        "CREATE INDEX IF NOT EXISTS bill_items_billed ON bill_items (bill_id, bill_line_number, charge_id)"
        " WHERE bill_id IS NOT NULL"
    )
    op.drop_index("bill_items_bill", table_name="bill_items")


def downgrade() -> None:
    op.create_index("bill_items_bill", "bill_items", ["bill_id", "bill_line_number", "charge_id"])
    op.drop_index("bill_items_billed", table_name="bill_items")
