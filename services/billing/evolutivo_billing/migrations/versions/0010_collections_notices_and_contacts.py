"""Collections notices and contact attempts (docs/collections.md, "Notices", "Collectors"): the
payment reminders and dunning letters cases' actions make, each with its email delivery; the
letters' PDFs; collectors' calls and their outcomes.

Revision ID: 0010
Revises: 0009
Create Date: 2027-02-01
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0010"
down_revision: str | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_TZ = sa.DateTime(timezone=True)
_MONEY = sa.Numeric(38, 9)


def upgrade() -> None:
    op.create_table(
        "collections_notices",
        sa.Column("notice_id", sa.Uuid, primary_key=True),
        sa.Column("case_id", sa.Uuid, sa.ForeignKey("collections_cases.case_id"), nullable=False),
        sa.Column("action_sequence", sa.Integer, nullable=False),
        sa.Column("account_id", sa.Uuid, nullable=False),
        sa.Column("kind", sa.Text, nullable=False),
        sa.Column("template", sa.Text, nullable=False),
        sa.Column("currency_code", sa.Text, nullable=False),
        sa.Column("time_zone", sa.Text, nullable=False),
        sa.Column("overdue_amount", _MONEY, nullable=False),
        sa.Column("days_past_due", sa.Integer, nullable=False),
        sa.Column("bills", postgresql.JSONB, nullable=False),
        sa.Column("late_fees", _MONEY, nullable=False),
        sa.Column("create_time", _TZ, nullable=False),
        sa.Column("state", sa.Text, nullable=False),
        sa.Column("attempts", sa.Integer, nullable=False),
        sa.Column("next_attempt_time", _TZ),
        sa.Column("last_attempt_time", _TZ),
        sa.Column("last_error", sa.Text, nullable=False),
        sa.Column("sent_time", _TZ),
        sa.Column("recipients", postgresql.ARRAY(sa.Text), nullable=False),
        sa.Column("message_id", sa.Text, nullable=False),
        sa.UniqueConstraint("case_id", "action_sequence", name="collections_notices_action"),
        sa.CheckConstraint("kind in ('reminder_email', 'dunning_letter')", name="collections_notices_kind"),
        sa.CheckConstraint(
            "state in ('pending', 'sent', 'failed', 'no_recipient', 'cancelled')", name="collections_notices_state"
        ),
        sa.CheckConstraint("attempts >= 0", name="collections_notices_attempts"),
        sa.CheckConstraint("(state = 'pending') = (next_attempt_time is not null)", name="collections_notices_due"),
        sa.CheckConstraint("(state = 'sent') = (sent_time is not null)", name="collections_notices_sent_time"),
    )
    op.create_index(
        "collections_notices_pending",
        "collections_notices",
        ["next_attempt_time"],
        postgresql_where=sa.text("state = 'pending'"),
    )
    op.create_table(
        "collections_notice_documents",
        sa.Column("notice_id", sa.Uuid, sa.ForeignKey("collections_notices.notice_id"), primary_key=True),
        sa.Column("content_type", sa.Text, nullable=False),
        sa.Column("file_name", sa.Text, nullable=False),
        sa.Column("content", sa.LargeBinary, nullable=False),
        sa.Column("sha256", sa.Text, nullable=False),
        sa.Column("render_time", _TZ, nullable=False),
    )
    op.create_table(
        "collections_contact_attempts",
        sa.Column("attempt_id", sa.Uuid, primary_key=True),
        sa.Column("case_id", sa.Uuid, sa.ForeignKey("collections_cases.case_id"), nullable=False),
        sa.Column("account_id", sa.Uuid, nullable=False),
        sa.Column("channel", sa.Text, nullable=False),
        sa.Column("outcome", sa.Text, nullable=False),
        sa.Column("note", sa.Text, nullable=False),
        sa.Column("actor", sa.Text, nullable=False),
        sa.Column("contact_time", _TZ, nullable=False),
        sa.Column("record_time", _TZ, nullable=False),
        sa.CheckConstraint(
            "channel in ('phone', 'email', 'sms', 'letter', 'visit', 'other')",
            name="collections_contact_attempts_channel",
        ),
        sa.CheckConstraint(
            "outcome in ('promised', 'no_answer', 'left_message', 'disputed', 'refused', 'wrong_contact',"
            " 'claims_paid', 'other')",
            name="collections_contact_attempts_outcome",
        ),
    )
    op.create_index(
        "collections_contact_attempts_case",
        "collections_contact_attempts",
        ["case_id", "contact_time", "attempt_id"],
    )


def downgrade() -> None:
    op.drop_table("collections_contact_attempts")
    op.drop_table("collections_notice_documents")
    op.drop_table("collections_notices")
