"""The collections tables (migrations 0008 and 0010), on billing's metadata (docs/collections.md)."""

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
    UniqueConstraint,
    Uuid,
    func,
    text,
)
from sqlalchemy.dialects.postgresql import ARRAY, JSONB

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

# Since 0010: the notices (payment reminders, dunning letters) cases' actions made, each with its
# email delivery (docs/collections.md, "Notices"); the id is the action's request id.
collections_notices = Table(
    "collections_notices",
    metadata,
    Column("notice_id", Uuid, primary_key=True),
    Column("case_id", Uuid, ForeignKey("collections_cases.case_id"), nullable=False),
    Column("action_sequence", Integer, nullable=False),
    Column("account_id", Uuid, nullable=False),
    Column("kind", Text, nullable=False),
    Column("template", Text, nullable=False),
    Column("currency_code", Text, nullable=False),
    Column("time_zone", Text, nullable=False),
    Column("overdue_amount", _MONEY, nullable=False),
    Column("days_past_due", Integer, nullable=False),
    # The overdue bills as they stood when it was made: what it says, whenever it is rendered.
    Column("bills", JSONB, nullable=False),
    Column("late_fees", _MONEY, nullable=False),
    Column("create_time", _TZ, nullable=False),
    Column("state", Text, nullable=False),
    Column("attempts", Integer, nullable=False),
    Column("next_attempt_time", _TZ),
    Column("last_attempt_time", _TZ),
    Column("last_error", Text, nullable=False),
    Column("sent_time", _TZ),
    Column("recipients", ARRAY(Text), nullable=False),
    Column("message_id", Text, nullable=False),
    # One notice per action, whatever reruns the action's transaction.
    UniqueConstraint("case_id", "action_sequence", name="collections_notices_action"),
    CheckConstraint("kind in ('reminder_email', 'dunning_letter')", name="collections_notices_kind"),
    CheckConstraint(
        "state in ('pending', 'sent', 'failed', 'no_recipient', 'cancelled')", name="collections_notices_state"
    ),
    CheckConstraint("attempts >= 0", name="collections_notices_attempts"),
    CheckConstraint("(state = 'pending') = (next_attempt_time is not null)", name="collections_notices_due"),
    CheckConstraint("(state = 'sent') = (sent_time is not null)", name="collections_notices_sent_time"),
    # The delivery loop's claim: pending notices by due time.
    Index("collections_notices_pending", "next_attempt_time", postgresql_where=text("state = 'pending'")),
)

# Since 0010: each dunning letter's PDF, kept as first rendered.
collections_notice_documents = Table(
    "collections_notice_documents",
    metadata,
    Column("notice_id", Uuid, ForeignKey("collections_notices.notice_id"), primary_key=True),
    Column("content_type", Text, nullable=False),
    Column("file_name", Text, nullable=False),
    Column("content", LargeBinary, nullable=False),
    Column("sha256", Text, nullable=False),
    Column("render_time", _TZ, nullable=False),
)

# Since 0010: collectors' calls (and other contacts) with a case's customer and their outcomes.
collections_contact_attempts = Table(
    "collections_contact_attempts",
    metadata,
    Column("attempt_id", Uuid, primary_key=True),
    Column("case_id", Uuid, ForeignKey("collections_cases.case_id"), nullable=False),
    Column("account_id", Uuid, nullable=False),
    Column("channel", Text, nullable=False),
    Column("outcome", Text, nullable=False),
    Column("note", Text, nullable=False),
    Column("actor", Text, nullable=False),
    Column("contact_time", _TZ, nullable=False),
    Column("record_time", _TZ, nullable=False),
    CheckConstraint(
        "channel in ('phone', 'email', 'sms', 'letter', 'visit', 'other')", name="collections_contact_attempts_channel"
    ),
    CheckConstraint(
        "outcome in ('promised', 'no_answer', 'left_message', 'disputed', 'refused', 'wrong_contact',"
        " 'claims_paid', 'other')",
        name="collections_contact_attempts_outcome",
    ),
    # A case's attempts, newest first.
    Index("collections_contact_attempts_case", "case_id", "contact_time", "attempt_id"),
)
