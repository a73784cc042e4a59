"""Bill PDFs and their delivery by email, with retries and the delivery state on the bill.

Billing's copy of the customer details documents and emails need (accounts and contacts, from
customer's events); the rendered PDF of each issued bill; one delivery row per issued bill, added
by a trigger in the transaction that issues it, whatever code path issues it (docs/billing.md,
"Delivery"). Bills issued before this revision get no delivery row (RetryBillDelivery adds one).

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-04
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_TIMESTAMP = sa.DateTime(timezone=True)

# A bill is issued when it gets its number (bills_numbered_when_issued: numbered iff not DRAFT),
# by an INSERT of an issued bill or an UPDATE of a draft; either way its delivery is owed, due at
# its issue time (the service clock's, never the database's). ON CONFLICT: once per bill.
_ISSUE_TRIGGER_FUNCTION = """
CREATE FUNCTION bill_delivery_when_issued() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.bill_number IS NOT NULL AND (TG_OP = 'INSERT' OR OLD.bill_number IS NULL) THEN
        INSERT INTO bill_deliveries (bill_id, account_id, state, attempts, next_attempt_time, create_time)
        VALUES (NEW.bill_id, NEW.account_id, 'pending', 0, NEW.issue_time, NEW.issue_time)
        ON CONFLICT (bill_id) DO NOTHING;
    END IF;
    RETURN NULL;
END
$$
"""
_ISSUE_TRIGGER = """
CREATE TRIGGER bills_delivery_when_issued
AFTER INSERT OR UPDATE OF bill_number ON bills
FOR EACH ROW EXECUTE FUNCTION bill_delivery_when_issued()
"""


def upgrade() -> None:
    op.create_table(
        "account_details",
        sa.Column("account_id", sa.Uuid, primary_key=True),
        sa.Column("account_number", sa.Text, nullable=False, server_default=""),
        sa.Column("display_name", sa.Text, nullable=False, server_default=""),
        sa.Column("tax_id", sa.Text, nullable=False, server_default=""),
        sa.Column("country_code", sa.Text, nullable=False, server_default=""),
        sa.Column("locale", sa.Text, nullable=False, server_default=""),
        sa.Column("delivery_method", sa.Text, nullable=False, server_default="email"),
        sa.Column("personal_data_erased", sa.Boolean, nullable=False, server_default="false"),
        sa.Column("update_time", _TIMESTAMP, nullable=False),
        sa.CheckConstraint("delivery_method in ('email', 'postal', 'portal')", name="account_details_delivery_method"),
    )
    op.create_table(
        "account_contacts",
        sa.Column("contact_id", sa.Uuid, primary_key=True),
        sa.Column("account_id", sa.Uuid, nullable=False),
        sa.Column("role", sa.Text, nullable=False),
        sa.Column("name", sa.Text, nullable=False, server_default=""),
        sa.Column("email", sa.Text),
        sa.Column("postal_address", postgresql.JSONB),
        sa.Column("removed", sa.Boolean, nullable=False, server_default="false"),
        sa.Column("update_time", _TIMESTAMP, nullable=False),
    )
    op.create_index("account_contacts_account", "account_contacts", ["account_id"])
    op.create_table(
        "bill_documents",
        sa.Column("bill_id", sa.Uuid, sa.ForeignKey("bills.bill_id"), primary_key=True),
        sa.Column("content_type", sa.Text, nullable=False),
        sa.Column("file_name", sa.Text, nullable=False),
        sa.Column("content", sa.LargeBinary, nullable=False),
        sa.Column("sha256", sa.Text, nullable=False),
        sa.Column("render_time", _TIMESTAMP, nullable=False),
    )
    op.create_table(
        "bill_deliveries",
        sa.Column("bill_id", sa.Uuid, sa.ForeignKey("bills.bill_id"), primary_key=True),
        sa.Column("account_id", sa.Uuid, nullable=False),
        sa.Column("state", sa.Text, nullable=False),
        sa.Column("attempts", sa.Integer, nullable=False, server_default="0"),
        sa.Column("next_attempt_time", _TIMESTAMP),
        sa.Column("last_attempt_time", _TIMESTAMP),
        sa.Column("last_error", sa.Text, nullable=False, server_default=""),
        sa.Column("sent_time", _TIMESTAMP),
        sa.Column("recipients", postgresql.ARRAY(sa.Text), nullable=False, server_default="{}"),
        sa.Column("message_id", sa.Text, nullable=False, server_default=""),
        sa.Column("create_time", _TIMESTAMP, nullable=False),
        sa.CheckConstraint(
            "state in ('pending', 'sent', 'failed', 'no_recipient', 'not_by_email')", name="bill_deliveries_state"
        ),
        sa.CheckConstraint("attempts >= 0", name="bill_deliveries_attempts"),
        sa.CheckConstraint("(state = 'pending') = (next_attempt_time is not null)", name="bill_deliveries_due"),
        sa.CheckConstraint("(state = 'sent') = (sent_time is not null)", name="bill_deliveries_sent_time"),
    )
    # The delivery loop's claim: pending deliveries by due time.
    op.create_index(
        "bill_deliveries_pending",
        "bill_deliveries",
        ["next_attempt_time"],
        postgresql_where=sa.text("state = 'pending'"),
    )
    op.execute(_ISSUE_TRIGGER_FUNCTION)
    op.execute(_ISSUE_TRIGGER)


def downgrade() -> None:
    op.execute("DROP TRIGGER IF EXISTS bills_delivery_when_issued ON bills")
    op.execute("DROP FUNCTION IF EXISTS bill_delivery_when_issued()")
    op.drop_table("bill_deliveries")
    op.drop_table("bill_documents")
    op.drop_table("account_contacts")
    op.drop_table("account_details")
