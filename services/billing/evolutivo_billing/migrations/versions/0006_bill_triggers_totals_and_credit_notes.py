"""Bill now, threshold and trial bills; previous balance and amount due on bills; unit prices on
lines; credit notes and void.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-04
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_TIMESTAMP = sa.DateTime(timezone=True)
_MONEY = sa.Numeric(38, 9)
_STATEMENT = ("previous_balance", "payments_received", "credits", "credit_applied", "amount_due", "credited_amount")


def upgrade() -> None:
    # The billing profile's threshold, and when the unbilled amount reached it (a threshold bill
    # is due while set).
    op.add_column("bill_units", sa.Column("threshold_amount", _MONEY))
    op.add_column("bill_units", sa.Column("threshold_reached_time", _TIMESTAMP))
    op.create_check_constraint("bill_units_threshold", "bill_units", "threshold_amount is null or threshold_amount > 0")
    op.create_index(
        "bill_units_threshold_due",
        "bill_units",
        ["threshold_reached_time"],
        postgresql_where=sa.text("threshold_reached_time is not null"),
    )

    op.add_column("bills", sa.Column("trigger", sa.Text, nullable=False, server_default="cycle"))
    op.add_column("bills", sa.Column("request_id", sa.Uuid))
    for name in _STATEMENT:
        op.add_column("bills", sa.Column(name, _MONEY, nullable=False, server_default="0"))
    # Bills issued before 0006 have no statement: they owed their total.
    op.execute("update bills set amount_due = total")
    op.create_check_constraint("bills_trigger", "bills", "trigger in ('cycle', 'on_demand', 'threshold')")
    op.create_check_constraint(
        "bills_amount_due_adds_up", "bills", "amount_due = previous_balance + total - credit_applied"
    )
    op.drop_constraint("bills_paid_amount", "bills", type_="check")
    op.create_check_constraint(
        "bills_paid_amount",
        "bills",
        "paid_amount >= 0 and credited_amount >= 0"
        " and (paid_amount + credited_amount = 0 or paid_amount + credited_amount <= total)",
    )
    # A cycle has one cycle bill; bill-now and threshold bills of the cycle come on top.
    op.drop_constraint("bills_one_per_cycle", "bills", type_="unique")
    op.create_index(
        "bills_one_per_cycle",
        "bills",
        ["bill_unit_id", "bill_cycle_id"],
        unique=True,
        postgresql_where=sa.text("trigger = 'cycle'"),
    )
    # BillNow's request id: one bill per request, whatever the retries.
    op.create_index(
        "bills_request",
        "bills",
        ["bill_unit_id", "request_id"],
        unique=True,
        postgresql_where=sa.text("request_id is not null"),
    )

    # Unit prices and tier bands, from charging's charges to the bill lines.
    op.add_column("bill_items", sa.Column("unrounded_amount", sa.Numeric))
    op.add_column("bill_items", sa.Column("tiers", JSONB))
    op.add_column("bill_lines", sa.Column("unit_price", sa.Numeric))
    op.add_column("bill_lines", sa.Column("tiers", JSONB))

    op.create_table(
        "credit_notes",
        sa.Column("credit_note_id", sa.Uuid, primary_key=True),
        sa.Column("bill_id", sa.Uuid, sa.ForeignKey("bills.bill_id"), nullable=False),
        sa.Column("bill_unit_id", sa.Uuid, sa.ForeignKey("bill_units.bill_unit_id"), nullable=False),
        sa.Column("account_id", sa.Uuid, nullable=False),
        sa.Column("request_id", sa.Uuid, nullable=False),
        sa.Column("credit_note_number", sa.Text, nullable=False, unique=True),
        sa.Column("number_series", sa.Text, nullable=False),
        sa.Column("number_sequence", sa.BigInteger, nullable=False),
        sa.Column("currency_code", sa.Text, nullable=False),
        sa.Column("reason", sa.Text, nullable=False),
        sa.Column("actor", sa.Text, nullable=False),
        sa.Column("subtotal", _MONEY, nullable=False),
        sa.Column("tax_total", _MONEY, nullable=False),
        sa.Column("total", _MONEY, nullable=False),
        sa.Column("issue_date", sa.Date, nullable=False),
        sa.Column("issue_time", _TIMESTAMP, nullable=False),
        sa.Column("voids_bill", sa.Boolean, nullable=False),
        # What no bill took yet: the account's credit, applied to its next bills.
        sa.Column("unallocated", _MONEY, nullable=False),
        sa.UniqueConstraint("number_series", "number_sequence", name="credit_notes_series_sequence"),
        sa.UniqueConstraint("bill_unit_id", "request_id", name="credit_notes_request"),
        sa.CheckConstraint("total = subtotal + tax_total", name="credit_notes_total_adds_up"),
        sa.CheckConstraint("total > 0", name="credit_notes_total"),
        sa.CheckConstraint("unallocated >= 0 and unallocated <= total", name="credit_notes_unallocated"),
    )
    op.create_index("credit_notes_listing", "credit_notes", ["account_id", "issue_time", "credit_note_id"])
    op.create_index("credit_notes_bill", "credit_notes", ["bill_id"])
    op.create_index(
        "credit_notes_credit",
        "credit_notes",
        ["account_id", "issue_time", "credit_note_id"],
        postgresql_where=sa.text("unallocated > 0"),
    )
    op.create_table(
        "credit_note_lines",
        sa.Column("credit_note_id", sa.Uuid, sa.ForeignKey("credit_notes.credit_note_id"), nullable=False),
        sa.Column("line_number", sa.Integer, nullable=False),
        sa.Column("bill_line_number", sa.Integer, nullable=False),
        sa.Column("charge_offer_code", sa.Text, nullable=False),
        sa.Column("charge_code", sa.Text, nullable=False),
        sa.Column("tax_code", sa.Text, nullable=False),
        sa.Column("amount", _MONEY, nullable=False),
        sa.PrimaryKeyConstraint("credit_note_id", "line_number", name="credit_note_lines_pkey"),
        sa.UniqueConstraint("credit_note_id", "bill_line_number", name="credit_note_lines_bill_line"),
    )
    op.create_table(
        "credit_note_allocations",
        sa.Column("credit_note_id", sa.Uuid, sa.ForeignKey("credit_notes.credit_note_id"), nullable=False),
        sa.Column("bill_id", sa.Uuid, sa.ForeignKey("bills.bill_id"), nullable=False),
        sa.Column("amount", _MONEY, nullable=False),
        sa.Column("create_time", _TIMESTAMP, nullable=False),
        sa.PrimaryKeyConstraint("credit_note_id", "bill_id", name="credit_note_allocations_pkey"),
        sa.CheckConstraint("amount > 0", name="credit_note_allocations_amount"),
    )
    op.create_index("credit_note_allocations_bill", "credit_note_allocations", ["bill_id"])
    op.create_table(
        "credit_note_number_series",
        sa.Column("series_key", sa.Text, primary_key=True),
        sa.Column("last_number", sa.BigInteger, nullable=False),
        sa.CheckConstraint("last_number >= 0", name="credit_note_number_series_last_number"),
    )


def downgrade() -> None:
    op.drop_table("credit_note_number_series")
    op.drop_table("credit_note_allocations")
    op.drop_table("credit_note_lines")
    op.drop_table("credit_notes")
    op.drop_column("bill_lines", "tiers")
    op.drop_column("bill_lines", "unit_price")
    op.drop_column("bill_items", "tiers")
    op.drop_column("bill_items", "unrounded_amount")
    op.drop_index("bills_request", table_name="bills")
    op.drop_index("bills_one_per_cycle", table_name="bills")
    # Fails while a cycle has bill-now or threshold bills besides its cycle bill: they cannot be
    # represented before 0006.
    op.create_unique_constraint("bills_one_per_cycle", "bills", ["bill_unit_id", "bill_cycle_id"])
    op.drop_constraint("bills_paid_amount", "bills", type_="check")
    op.create_check_constraint(
        "bills_paid_amount", "bills", "paid_amount >= 0 and (paid_amount = 0 or paid_amount <= total)"
    )
    op.drop_constraint("bills_amount_due_adds_up", "bills", type_="check")
    op.drop_constraint("bills_trigger", "bills", type_="check")
    for name in reversed(_STATEMENT):
        op.drop_column("bills", name)
    op.drop_column("bills", "request_id")
    op.drop_column("bills", "trigger")
    op.drop_index("bill_units_threshold_due", table_name="bill_units")
    op.drop_constraint("bill_units_threshold", "bill_units", type_="check")
    op.drop_column("bill_units", "threshold_reached_time")
    op.drop_column("bill_units", "threshold_amount")
