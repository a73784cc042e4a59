"""Credit collection: dunning scenarios, cases and their actions, promises to pay.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-04
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_TZ = sa.DateTime(timezone=True)
_MONEY = sa.Numeric(38, 9)


def upgrade() -> None:
    op.create_table(
        "collections_scenarios",
        sa.Column("scenario_id", sa.Uuid, primary_key=True),
        sa.Column("display_name", sa.Text, nullable=False),
        sa.Column("description", sa.Text, nullable=False),
        sa.Column("priority", sa.Integer, nullable=False),
        sa.Column("criteria", postgresql.JSONB, nullable=False),
        sa.Column("steps", postgresql.JSONB, nullable=False),
        sa.Column("create_time", _TZ, nullable=False),
        sa.Column("update_time", _TZ, nullable=False),
        sa.Column("version", sa.Integer, nullable=False),
    )
    op.create_index("collections_scenarios_name", "collections_scenarios", ["display_name"], unique=True)
    op.create_index("collections_scenarios_order", "collections_scenarios", ["priority", "create_time", "scenario_id"])

    op.create_table(
        "collections_accounts",
        sa.Column("account_id", sa.Uuid, primary_key=True),
        sa.Column("exempt", sa.Boolean, nullable=False),
        sa.Column("scenario_id", sa.Text, nullable=False),
        sa.Column("account_type", sa.Text, nullable=False),
        sa.Column("labels", postgresql.JSONB, nullable=False),
        sa.Column("facts_time", _TZ, nullable=False),
    )

    op.create_table(
        "collections_entry_checks",
        sa.Column("bill_unit_id", sa.Uuid, sa.ForeignKey("bill_units.bill_unit_id"), primary_key=True),
        sa.Column("next_check_time", _TZ, nullable=False),
    )

    op.create_table(
        "collections_cases",
        sa.Column("case_id", sa.Uuid, primary_key=True),
        sa.Column("bill_unit_id", sa.Uuid, sa.ForeignKey("bill_units.bill_unit_id"), nullable=False),
        sa.Column("account_id", sa.Uuid, nullable=False),
        sa.Column("currency_code", sa.Text, nullable=False),
        sa.Column("time_zone", sa.Text, nullable=False),
        sa.Column("scenario_id", sa.Uuid, nullable=False),
        sa.Column("scenario_name", sa.Text, nullable=False),
        sa.Column("past_due_since", sa.Date, nullable=False),
        sa.Column("status", sa.Text, nullable=False),
        sa.Column("paused", sa.Boolean, nullable=False),
        sa.Column("pause_reason", sa.Text, nullable=False),
        sa.Column("paused_by", sa.Text, nullable=False),
        sa.Column("pause_time", _TZ),
        sa.Column("overdue_amount", _MONEY, nullable=False),
        sa.Column("open_time", _TZ, nullable=False),
        sa.Column("close_time", _TZ),
        sa.Column("close_reason", sa.Text),
        sa.Column("collector_id", sa.Text, nullable=False),
        sa.Column("wake_time", _TZ),
        sa.CheckConstraint("status in ('open', 'closed')", name="collections_cases_status"),
        sa.CheckConstraint("(status = 'closed') = (close_time is not null)", name="collections_cases_close_time"),
    )
    op.create_index(
        "collections_cases_one_open",
        "collections_cases",
        ["bill_unit_id"],
        unique=True,
        postgresql_where=sa.text("status = 'open'"),
    )
    op.create_index(
        "collections_cases_wake", "collections_cases", ["wake_time"], postgresql_where=sa.text("wake_time is not null")
    )
    op.create_index("collections_cases_listing", "collections_cases", ["open_time", "case_id"])
    op.create_index("collections_cases_account", "collections_cases", ["account_id", "open_time"])
    op.create_index("collections_cases_collector", "collections_cases", ["collector_id", "open_time"])

    op.create_table(
        "collections_actions",
        sa.Column("case_id", sa.Uuid, sa.ForeignKey("collections_cases.case_id"), nullable=False),
        sa.Column("sequence", sa.Integer, nullable=False),
        sa.Column("action_type", sa.Text, nullable=False),
        sa.Column("step_index", sa.Integer, nullable=False),
        sa.Column("step", postgresql.JSONB, nullable=False),
        sa.Column("due_time", _TZ, nullable=False),
        sa.Column("state", sa.Text, nullable=False),
        sa.Column("attempts", sa.Integer, nullable=False),
        sa.Column("claim_token", sa.Uuid),
        sa.Column("lease_until", _TZ),
        sa.Column("finish_time", _TZ),
        sa.Column("outcome", sa.Text, nullable=False),
        sa.Column("amount", _MONEY),
        sa.Column("details", postgresql.JSONB, nullable=False),
        sa.PrimaryKeyConstraint("case_id", "sequence", name="collections_actions_pkey"),
        sa.CheckConstraint(
            "state in ('scheduled', 'executing', 'done', 'skipped', 'failed', 'cancelled')",
            name="collections_actions_state",
        ),
        sa.CheckConstraint(
            "(state = 'executing') = (claim_token is not null and lease_until is not null)",
            name="collections_actions_claim",
        ),
    )

    op.create_table(
        "collections_promises",
        sa.Column("promise_id", sa.Uuid, primary_key=True),
        sa.Column("case_id", sa.Uuid, sa.ForeignKey("collections_cases.case_id"), nullable=False),
        sa.Column("instalments", postgresql.JSONB, nullable=False),
        sa.Column("state", sa.Text, nullable=False),
        sa.Column("paid_amount", _MONEY, nullable=False),
        sa.Column("note", sa.Text, nullable=False),
        sa.Column("actor", sa.Text, nullable=False),
        sa.Column("create_time", _TZ, nullable=False),
        sa.Column("resolve_time", _TZ),
        sa.CheckConstraint("state in ('active', 'kept', 'broken', 'cancelled')", name="collections_promises_state"),
    )
    op.create_index(
        "collections_promises_one_active",
        "collections_promises",
        ["case_id"],
        unique=True,
        postgresql_where=sa.text("state = 'active'"),
    )

    op.create_table(
        "collections_tasks",
        sa.Column("task_id", sa.Uuid, primary_key=True),
        sa.Column("case_id", sa.Uuid, sa.ForeignKey("collections_cases.case_id"), nullable=False),
        sa.Column("account_id", sa.Uuid, nullable=False),
        sa.Column("title", sa.Text, nullable=False),
        sa.Column("description", sa.Text, nullable=False),
        sa.Column("due_date", sa.Date, nullable=False),
        sa.Column("state", sa.Text, nullable=False),
        sa.Column("collector_id", sa.Text, nullable=False),
        sa.Column("outcome", sa.Text, nullable=False),
        sa.Column("completed_by", sa.Text, nullable=False),
        sa.Column("create_time", _TZ, nullable=False),
        sa.Column("complete_time", _TZ),
        sa.CheckConstraint("state in ('open', 'done')", name="collections_tasks_state"),
    )
    op.create_index("collections_tasks_queue", "collections_tasks", ["collector_id", "state", "due_date", "task_id"])
    op.create_index("collections_tasks_case", "collections_tasks", ["case_id"])

    # AIP-155 request ids of the collections RPCs (billing has no request log of its own).
    op.create_table(
        "collections_request_log",
        sa.Column("request_id", sa.Uuid, primary_key=True),
        sa.Column("method", sa.Text, nullable=False),
        sa.Column("response", sa.LargeBinary),
        sa.Column("create_time", _TZ, nullable=False, server_default=sa.func.now()),
    )


def downgrade() -> None:
    op.drop_table("collections_request_log")
    op.drop_table("collections_tasks")
    op.drop_table("collections_promises")
    op.drop_table("collections_actions")
    op.drop_table("collections_cases")
    op.drop_table("collections_entry_checks")
    op.drop_table("collections_accounts")
    op.drop_table("collections_scenarios")
