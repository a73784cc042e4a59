"""The append-only audit log of state-changing calls (docs/security.md, "Audit").

Revision ID: 0009
Revises: 0008
Create Date: 2027-01-15
"""

from collections.abc import Sequence

from alembic import op
from evolutivo_runtime.security.audit import create_audit_log_table, drop_audit_log_table

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    create_audit_log_table(op)


def downgrade() -> None:
    drop_audit_log_table(op)
