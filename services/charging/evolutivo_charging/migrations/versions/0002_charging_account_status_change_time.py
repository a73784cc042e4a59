"""Charging accounts: when customer changed the status, so an older status event never wins.

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


def upgrade() -> None:
    op.add_column("charging_accounts", sa.Column("status_change_time", sa.DateTime(timezone=True)))


def downgrade() -> None:
    op.drop_column("charging_accounts", "status_change_time")
