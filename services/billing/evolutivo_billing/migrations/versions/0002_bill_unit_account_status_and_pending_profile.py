"""Bill units: the account's status and a pending billing profile, learnt from customer's events.

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-11
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_TIMESTAMP = sa.DateTime(timezone=True)


def upgrade() -> None:
    # Existing units belong to accounts whose status changes billing has not seen: active as opened.
    op.add_column("bill_units", sa.Column("account_status", sa.Text, nullable=False, server_default="active"))
    op.add_column("bill_units", sa.Column("account_status_change_time", _TIMESTAMP))
    op.add_column("bill_units", sa.Column("pending_bill_cycle_day", sa.Integer))
    op.add_column("bill_units", sa.Column("pending_billing_frequency", sa.Text))
    op.add_column("bill_units", sa.Column("pending_payment_terms_days", sa.Integer))
    op.add_column("bill_units", sa.Column("profile_change_time", _TIMESTAMP))


def downgrade() -> None:
    for column in (
        "profile_change_time",
        "pending_payment_terms_days",
        "pending_billing_frequency",
        "pending_bill_cycle_day",
        "account_status_change_time",
        "account_status",
    ):
        op.drop_column("bill_units", column)
