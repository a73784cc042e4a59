"""Indexes the bill run's statement reads (docs/performance.md, "The bill run set-based").

Every bill's statement (docs/billing.md, "What a bill says") reads when the unit's last bill was
issued and the payments the account's billing recorded since. Neither had an index that a query
by unit (all bills, any trigger) or by account (all payments, credit or not) could use: each bill
of a run scanned `bills` and `payments` whole, a cost that grows with every bill issued.

Revision ID: 0012
Revises: 0011
Create Date: 2027-02-02
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0012"
down_revision: str | None = "0011"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_index("bills_unit_issue", "bills", ["bill_unit_id", "issue_time"])
    op.create_index("payments_account_record", "payments", ["account_id", "record_time"])


def downgrade() -> None:
    op.drop_index("payments_account_record", table_name="payments")
    op.drop_index("bills_unit_issue", table_name="bills")
