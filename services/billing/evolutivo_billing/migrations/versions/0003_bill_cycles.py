"""Bill cycles: the billing periods of each bill unit; bill units opened before it get their first.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-18
"""

import uuid
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from evolutivo_billing.domain import calendar

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_TIMESTAMP = sa.DateTime(timezone=True)
_MONTHS = {"monthly": 1, "quarterly": 3, "semi_annual": 6, "annual": 12}


def upgrade() -> None:
    cycles = op.create_table(
        "bill_cycles",
        sa.Column("bill_cycle_id", sa.Uuid, primary_key=True),
        sa.Column("bill_unit_id", sa.Uuid, sa.ForeignKey("bill_units.bill_unit_id"), nullable=False),
        sa.Column("account_id", sa.Uuid, nullable=False),
        sa.Column("sequence", sa.BigInteger, nullable=False),
        sa.Column("start_time", _TIMESTAMP, nullable=False),
        sa.Column("end_time", _TIMESTAMP, nullable=False),
        sa.Column("start_date", sa.Date, nullable=False),
        sa.Column("end_date", sa.Date, nullable=False),
        sa.Column("time_zone", sa.Text, nullable=False),
        sa.Column("status", sa.Text, nullable=False),
        sa.Column("close_time", _TIMESTAMP),
        sa.UniqueConstraint("bill_unit_id", "sequence", name="bill_cycles_unit_sequence"),
        sa.CheckConstraint("status in ('open', 'closed')", name="bill_cycles_status"),
        sa.CheckConstraint("(status = 'closed') = (close_time is not null)", name="bill_cycles_close_time"),
        sa.CheckConstraint("end_time > start_time", name="bill_cycles_window"),
    )
    op.create_index(
        "bill_cycles_one_open",
        "bill_cycles",
        ["bill_unit_id"],
        unique=True,
        postgresql_where=sa.text("status = 'open'"),
    )
    op.create_index("bill_cycles_due", "bill_cycles", ["end_time"], postgresql_where=sa.text("status = 'open'"))
    op.create_index("bill_cycles_listing", "bill_cycles", ["account_id", "sequence"])

    # Units opened before cycles existed get their first cycle, from the day the unit was created
    # (their account's creation instant was not kept). Cycles already past close one by one, as
    # for any unit the closer finds behind; they publish their events then.
    units = op.get_bind().execute(
        sa.text(
            "select bill_unit_id, account_id, time_zone, bill_cycle_day, billing_frequency, create_time from bill_units"
        )
    )
    rows = []
    for unit in units:
        window = calendar.first_cycle(
            unit.create_time, unit.bill_cycle_day, calendar.Frequency(_MONTHS[unit.billing_frequency]), unit.time_zone
        )
        rows.append(
            {
                "bill_cycle_id": uuid.uuid4(),
                "bill_unit_id": unit.bill_unit_id,
                "account_id": unit.account_id,
                "sequence": 1,
                "start_time": window.start,
                "end_time": window.end,
                "start_date": window.start_date,
                "end_date": window.end_date,
                "time_zone": unit.time_zone,
                "status": "open",
                "close_time": None,
            }
        )
    if rows:
        op.bulk_insert(cycles, rows)


def downgrade() -> None:
    op.drop_table("bill_cycles")
