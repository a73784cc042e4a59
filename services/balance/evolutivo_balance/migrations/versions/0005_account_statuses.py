"""Each account's status as customer's events tell it: CreateBalanceGroup refuses a closed account.

Accounts closed before this revision are unknown to it (balance had not kept their status) and are
taken as open (docs/balance.md, "Account status").

Revision ID: 0005
Revises: 0004
Create Date: 2027-02-01
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

ACCOUNT_STATUSES = ("active", "suspended", "closed")


def upgrade() -> None:
    op.create_table(
        "account_statuses",
        sa.Column("account_id", sa.Uuid, primary_key=True),
        sa.Column("status", sa.Text, nullable=False),
        sa.Column("status_time", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint(f"status IN {ACCOUNT_STATUSES!r}", name="account_statuses_status"),
    )


def downgrade() -> None:
    op.drop_table("account_statuses")
