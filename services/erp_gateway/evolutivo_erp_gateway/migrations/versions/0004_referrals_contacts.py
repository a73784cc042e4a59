"""Connections that take collections referrals; customers' contacts sent with the customer.

Revision ID: 0004
Revises: 0003
Create Date: 2027-02-01
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("connections", sa.Column("collections_referrals", sa.Boolean, nullable=False, server_default="false"))
    op.create_table(
        "customer_contacts",
        sa.Column("contact_id", sa.Uuid, primary_key=True),
        sa.Column("account_id", sa.Uuid, nullable=False),
        sa.Column("payload", sa.LargeBinary),
        sa.Column("version", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index("ix_customer_contacts_account_id", "customer_contacts", ["account_id"])


def downgrade() -> None:
    op.drop_index("ix_customer_contacts_account_id", "customer_contacts")
    op.drop_table("customer_contacts")
    op.drop_column("connections", "collections_referrals")
