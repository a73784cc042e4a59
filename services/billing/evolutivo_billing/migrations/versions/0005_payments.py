"""Payments allocated to bills: what each bill has paid, the payments billing received from
balance with their unallocated remainder (account credit), and the allocations.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-29
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_TIMESTAMP = sa.DateTime(timezone=True)
_MONEY = sa.Numeric(38, 9)


def upgrade() -> None:
    op.add_column("bills", sa.Column("paid_amount", _MONEY, nullable=False, server_default="0"))
    op.add_column("bills", sa.Column("overdue_time", _TIMESTAMP))
    op.create_check_constraint(
        "bills_paid_amount", "bills", "paid_amount >= 0 and (paid_amount = 0 or paid_amount <= total)"
    )
    op.create_index(
        "bills_open",
        "bills",
        ["bill_unit_id", "due_date"],
        postgresql_where=sa.text("status in ('issued', 'partially_paid', 'overdue')"),
    )
    op.create_table(
        "payments",
        sa.Column("payment_id", sa.Uuid, primary_key=True),
        sa.Column("account_id", sa.Uuid, nullable=False),
        sa.Column("currency_code", sa.Text, nullable=False),
        sa.Column("amount", _MONEY, nullable=False),
        sa.Column("unallocated", _MONEY, nullable=False),
        sa.Column("reversed", sa.Boolean, nullable=False),
        sa.Column("received_time", _TIMESTAMP, nullable=False),
        sa.Column("record_time", _TIMESTAMP, nullable=False),
        sa.CheckConstraint("unallocated >= 0 and unallocated <= amount", name="payments_unallocated"),
        sa.CheckConstraint("not reversed or unallocated = 0", name="payments_reversed_no_credit"),
    )
    op.create_index(
        "payments_credit",
        "payments",
        ["account_id", "received_time", "payment_id"],
        postgresql_where=sa.text("unallocated > 0"),
    )
    op.create_table(
        "payment_allocations",
        sa.Column("payment_id", sa.Uuid, sa.ForeignKey("payments.payment_id"), nullable=False),
        sa.Column("bill_id", sa.Uuid, sa.ForeignKey("bills.bill_id"), nullable=False),
        sa.Column("amount", _MONEY, nullable=False),
        sa.Column("create_time", _TIMESTAMP, nullable=False),
        sa.PrimaryKeyConstraint("payment_id", "bill_id", name="payment_allocations_pkey"),
        sa.CheckConstraint("amount > 0", name="payment_allocations_amount"),
    )
    op.create_index("payment_allocations_bill", "payment_allocations", ["bill_id"])


def downgrade() -> None:
    op.drop_table("payment_allocations")
    op.drop_table("payments")
    op.drop_index("bills_open", table_name="bills")
    op.drop_constraint("bills_paid_amount", "bills", type_="check")
    op.drop_column("bills", "overdue_time")
    op.drop_column("bills", "paid_amount")
