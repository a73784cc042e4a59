"""Bill items (the charges received from charging), bills with their lines and taxes, and the
bill number series.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-28
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_TIMESTAMP = sa.DateTime(timezone=True)
_MONEY = sa.Numeric(38, 9)
_STATUSES = "'draft', 'issued', 'partially_paid', 'paid', 'overdue', 'void', 'written_off'"


def upgrade() -> None:
    op.create_table(
        "bills",
        sa.Column("bill_id", sa.Uuid, primary_key=True),
        sa.Column("bill_unit_id", sa.Uuid, sa.ForeignKey("bill_units.bill_unit_id"), nullable=False),
        sa.Column("account_id", sa.Uuid, nullable=False),
        sa.Column("bill_cycle_id", sa.Uuid, sa.ForeignKey("bill_cycles.bill_cycle_id")),
        sa.Column("status", sa.Text, nullable=False),
        sa.Column("bill_number", sa.Text, unique=True),
        sa.Column("number_series", sa.Text),
        sa.Column("number_sequence", sa.BigInteger),
        sa.Column("currency_code", sa.Text, nullable=False),
        sa.Column("period_start_date", sa.Date, nullable=False),
        sa.Column("period_end_date", sa.Date, nullable=False),
        sa.Column("issue_date", sa.Date, nullable=False),
        sa.Column("due_date", sa.Date, nullable=False),
        sa.Column("subtotal", _MONEY, nullable=False),
        sa.Column("tax_total", _MONEY, nullable=False),
        sa.Column("total", _MONEY, nullable=False),
        sa.Column("create_time", _TIMESTAMP, nullable=False),
        sa.Column("issue_time", _TIMESTAMP),
        sa.Column("suppressed", sa.Boolean, nullable=False, server_default="false"),
        sa.UniqueConstraint("bill_unit_id", "bill_cycle_id", name="bills_one_per_cycle"),
        sa.UniqueConstraint("number_series", "number_sequence", name="bills_series_sequence"),
        sa.CheckConstraint(f"status in ({_STATUSES})", name="bills_status"),
        sa.CheckConstraint(
            "(status = 'draft') = (bill_number is null)"
            " and (bill_number is null) = (number_series is null)"
            " and (bill_number is null) = (number_sequence is null)",
            name="bills_numbered_when_issued",
        ),
        sa.CheckConstraint("(status = 'draft') = (issue_time is null)", name="bills_issue_time"),
        sa.CheckConstraint("not suppressed or (status = 'draft' and total = 0)", name="bills_suppressed_zero"),
        sa.CheckConstraint("total = subtotal + tax_total", name="bills_total_adds_up"),
    )
    op.create_index("bills_listing", "bills", ["account_id", "issue_date", "create_time", "bill_id"])
    op.create_table(
        "bill_lines",
        sa.Column("bill_id", sa.Uuid, sa.ForeignKey("bills.bill_id"), nullable=False),
        sa.Column("line_number", sa.Integer, nullable=False),
        sa.Column("period_start_date", sa.Date, nullable=False),
        sa.Column("period_end_date", sa.Date, nullable=False),
        sa.Column("charge_offer_code", sa.Text, nullable=False),
        sa.Column("charge_code", sa.Text, nullable=False),
        sa.Column("tax_code", sa.Text, nullable=False),
        sa.Column("quantity", sa.Numeric, nullable=False),
        sa.Column("amount", _MONEY, nullable=False),
        sa.Column("charge_count", sa.Integer, nullable=False),
        sa.PrimaryKeyConstraint("bill_id", "line_number", name="bill_lines_pkey"),
    )
    op.create_table(
        "bill_taxes",
        sa.Column("bill_id", sa.Uuid, sa.ForeignKey("bills.bill_id"), nullable=False),
        sa.Column("tax_code", sa.Text, nullable=False),
        sa.Column("rate", sa.Numeric, nullable=False),
        sa.Column("taxable_amount", _MONEY, nullable=False),
        sa.Column("tax_amount", _MONEY, nullable=False),
        sa.PrimaryKeyConstraint("bill_id", "tax_code", name="bill_taxes_pkey"),
    )
    op.create_table(
        "bill_items",
        sa.Column("charge_id", sa.Uuid, primary_key=True),
        sa.Column("account_id", sa.Uuid, nullable=False),
        sa.Column("bill_unit_id", sa.Uuid, sa.ForeignKey("bill_units.bill_unit_id"), nullable=False),
        sa.Column("bill_cycle_id", sa.Uuid, sa.ForeignKey("bill_cycles.bill_cycle_id"), nullable=False),
        sa.Column("rated_bill_cycle_id", sa.Uuid),
        sa.Column("kind", sa.Text, nullable=False),
        sa.Column("event_id", sa.Text, nullable=False),
        sa.Column("charge_offer_code", sa.Text, nullable=False),
        sa.Column("charge_offer_version", sa.Integer, nullable=False),
        sa.Column("charge_code", sa.Text, nullable=False),
        sa.Column("tax_code", sa.Text, nullable=False),
        sa.Column("quantity", sa.Numeric, nullable=False),
        sa.Column("amount", _MONEY, nullable=False),
        sa.Column("currency_code", sa.Text, nullable=False),
        sa.Column("event_time", _TIMESTAMP, nullable=False),
        sa.Column("late", sa.Boolean, nullable=False),
        sa.Column("period_start_date", sa.Date, nullable=False),
        sa.Column("period_end_date", sa.Date, nullable=False),
        sa.Column("receive_time", _TIMESTAMP, nullable=False),
        sa.Column("bill_id", sa.Uuid, sa.ForeignKey("bills.bill_id")),
        sa.Column("bill_line_number", sa.Integer),
        sa.CheckConstraint("(bill_id is null) = (bill_line_number is null)", name="bill_items_line"),
    )
    op.create_index("bill_items_unbilled", "bill_items", ["bill_cycle_id"], postgresql_where=sa.text("bill_id is null"))
    op.create_index(
        "bill_items_unbilled_listing",
        "bill_items",
        ["account_id", "event_time", "charge_id"],
        postgresql_where=sa.text("bill_id is null"),
    )
    op.create_index("bill_items_bill", "bill_items", ["bill_id", "bill_line_number", "charge_id"])
    op.create_table(
        "bill_number_series",
        sa.Column("series_key", sa.Text, primary_key=True),
        sa.Column("last_number", sa.BigInteger, nullable=False),
        sa.CheckConstraint("last_number >= 0", name="bill_number_series_last_number"),
    )


def downgrade() -> None:
    op.drop_table("bill_number_series")
    op.drop_table("bill_items")
    op.drop_table("bill_taxes")
    op.drop_table("bill_lines")
    op.drop_table("bills")
