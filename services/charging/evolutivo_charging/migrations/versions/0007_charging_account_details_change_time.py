"""Charging accounts: as of when the currency and time zone are known, so an older AccountUpdated
never overwrites a newer one.

Revision ID: 0007
Revises: 0006
Create Date: 2027-01-22
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("charging_accounts", sa.Column("details_change_time", sa.DateTime(timezone=True)))


def downgrade() -> None:
    op.drop_column("charging_accounts", "details_change_time")
