"""The collections tables (migration 0008), on billing's metadata (docs/collections.md)."""

from sqlalchemy import (
    Boolean,
    CheckConstraint,
    Column,
    Date,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    Numeric,
    PrimaryKeyConstraint,
    Table,
    Text,
    Uuid,
    func,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB

from evolutivo_billing.adapters.orm import metadata

_TZ = DateTime(timezone=True)
_MONEY = Numeric(38, 9)

collections_scenarios = Table(
    "collections_scenarios",
    metadata,
    Column("scenario_id", Uuid, primary_key=True),
    Column("display_name", Text, nullable=False),
    Column("description", Text, nullable=False),
    Column("priority", Integer, nullable=False),
    Column("criteria", JSONB, nullable=False),
    Column("steps", JSONB, nullable=False),
    Column("create_time", _TZ, nullable=False),
    Column("update_time", _TZ, nullable=False),
    Column("version", Integer, nullable=False),
    # Names are unique; the list's order is priority, then creation.
    Index("collections_scenarios_name", "display_name", unique=True),
    Index("collections_scenarios_order", "priority", "create_time", "scenario_id"),
)

# What collections knows of each account, from customer's account events (newest facts_time wins).
collections_accounts = Table(
    "collections_accounts",
    metadata,
    Column("account_id", Uuid, primary_key=True),
    Column("exempt", Boolean, nullable=False),
    Column("scenario_id", Text, nullable=False),
    Column("account_type", Text, nullable=False),
    Column("labels", JSONB, nullable=False),
    Column("facts_time", _TZ, nullable=False),
)

# A bill unit whose overdue debt entered no scenario is looked at again at next_check_time (its
# next local midnight), or at once when its account's facts or the scenarios change (row deleted).
collections_entry_checks = Table(
    "collections_entry_checks",
    metadata,
    Column("bill_unit_id", Uuid, ForeignKey("bill_units.bill_unit_id"), primary_key=True),
    Column("next_check_time", _TZ, nullable=False),
)

collections_cases = Table(
    "collections_cases",
    metadata,
    Column("case_id", Uuid, primary_key=True),
    Column("bill_unit_id", Uuid, ForeignKey("bill_units.bill_unit_id"), nullable=False),
    Column("account_id", Uuid, nullable=False),
    Column("currency_code", Text, nullable=False),
    Column("time_zone", Text, nullable=False),
    Column("scenario_id", Uuid, nullable=False),
    Column("scenario_name", Text, nullable=False),
    Column("past_due_since", Date, nullable=False),
    Column("status", Text, nullable=False),
    Column("paused", Boolean, nullable=False),
    Column("pause_reason", Text, nullable=False),
    Column("paused_by", Text, nullable=False),
    Column("pause_time", _TZ),
    Column("overdue_amount", _MONEY, nullable=False),
    Column("open_time", _TZ, nullable=False),
    Column("close_time", _TZ),
    Column("close_reason", Text),
    Column("collector_id", Text, nullable=False),
    Column("wake_time", _TZ),
    CheckConstraint("status in ('open', 'closed')", name="collections_cases_status"),
    CheckConstraint("(status = 'closed') = (close_time is not null)", name="collections_cases_close_time"),
    # One open case per bill unit, whoever (replica, rerun) opens it.
    Index("collections_cases_one_open", "bill_unit_id", unique=True, postgresql_where=text("status = 'open'")),
    # The processor's claim: cases due a look.
    Index("collections_cases_wake", "wake_time", postgresql_where=text("wake_time is not null")),
    Index("collections_cases_listing", "open_time", "case_id"),
    Index("collections_cases_account", "account_id", "open_time"),
    Index("collections_cases_collector", "collector_id", "open_time"),
)

collections_actions = Table(
    "collections_actions",
    metadata,
    Column("case_id", Uuid, ForeignKey("collections_cases.case_id"), nullable=False),
    Column("sequence", Integer, nullable=False),
    Column("action_type", Text, nullable=False),
    Column("step_index", Integer, nullable=False),
    Column("step", JSONB, nullable=False),
    Column("due_time", _TZ, nullable=False),
    Column("state", Text, nullable=False),
    Column("attempts", Integer, nullable=False),
    Column("claim_token", Uuid),
    Column("lease_until", _TZ),
    Column("finish_time", _TZ),
    Column("outcome", Text, nullable=False),
    Column("amount", _MONEY),
    Column("details", JSONB, nullable=False),
    PrimaryKeyConstraint("case_id", "sequence", name="collections_actions_pkey"),
    CheckConstraint(
        "state in ('scheduled', 'executing', 'done', 'skipped', 'failed', 'cancelled')",
        name="collections_actions_state",
    ),
    # An executing action holds a claim token and a lease; nothing else does.
    CheckConstraint(
        "(state = 'executing') = (claim_token is not null and lease_until is not null)",
        name="collections_actions_claim",
    ),
)

collections_promises = Table(
    "collections_promises",
    metadata,
    Column("promise_id", Uuid, primary_key=True),
    Column("case_id", Uuid, ForeignKey("collections_cases.case_id"), nullable=False),
    Column("instalments", JSONB, nullable=False),
    Column("state", Text, nullable=False),
    Column("paid_amount", _MONEY, nullable=False),
    Column("note", Text, nullable=False),
    Column("actor", Text, nullable=False),
    Column("create_time", _TZ, nullable=False),
    Column("resolve_time", _TZ),
    CheckConstraint("state in ('active', 'kept', 'broken', 'cancelled')", name="collections_promises_state"),
    # At most one active promise per case.
    Index("collections_promises_one_active", "case_id", unique=True, postgresql_where=text("state = 'active'")),
)

collections_tasks = Table(
    "collections_tasks",
    metadata,
    Column("task_id", Uuid, primary_key=True),
    Column("case_id", Uuid, ForeignKey("collections_cases.case_id"), nullable=False),
    Column("account_id", Uuid, nullable=False),
    Column("title", Text, nullable=False),
    Column("description", Text, nullable=False),
    Column("due_date", Date, nullable=False),
    Column("state", Text, nullable=False),
    Column("collector_id", Text, nullable=False),
    Column("outcome", Text, nullable=False),
    Column("completed_by", Text, nullable=False),
    Column("create_time", _TZ, nullable=False),
    Column("complete_time", _TZ),
    CheckConstraint("state in ('open', 'done')", name="collections_tasks_state"),
    # A collector's work queue, earliest due first.
    Index("collections_tasks_queue", "collector_id", "state", "due_date", "task_id"),
    Index("collections_tasks_case", "case_id"),
)

collections_request_log = Table(
    "collections_request_log",
    metadata,
    Column("request_id", Uuid, primary_key=True),
    Column("method", Text, nullable=False),
    Column("response", LargeBinary),
    Column("create_time", _TZ, nullable=False, server_default=func.now()),
)
