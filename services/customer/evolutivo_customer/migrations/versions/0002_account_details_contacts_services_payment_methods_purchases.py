"""Account details, billing-profile and status columns; contacts, provisioned services, payment
methods, purchases and the request log, which replaces accounts.create_request_id.

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-04
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from evolutivo_runtime.idempotency import create_request_log_table
from sqlalchemy.dialects import postgresql

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    add = op.add_column
    add("accounts", sa.Column("country_code", sa.Text, nullable=False, server_default=""))
    add("accounts", sa.Column("tax_id", sa.Text, nullable=False, server_default=""))
    add("accounts", sa.Column("date_of_birth", sa.Date))
    add("accounts", sa.Column("threshold_amount", sa.Numeric(38, 9)))
    add("accounts", sa.Column("delivery_method", sa.Text, nullable=False, server_default="email"))
    add("accounts", sa.Column("delivery_attach_pdf", sa.Boolean, nullable=False, server_default=sa.text("true")))
    add("accounts", sa.Column("collections_exempt", sa.Boolean, nullable=False, server_default=sa.text("false")))
    add("accounts", sa.Column("collections_scenario_id", sa.Text, nullable=False, server_default=""))
    add("accounts", sa.Column("status_reason", sa.Text, nullable=False, server_default=""))
    add("accounts", sa.Column("status_actor", sa.Text, nullable=False, server_default=""))
    add("accounts", sa.Column("status_actor_id", sa.Text, nullable=False, server_default=""))
    add("accounts", sa.Column("status_change_time", sa.DateTime(timezone=True)))
    add("accounts", sa.Column("update_time", sa.DateTime(timezone=True)))
    add("accounts", sa.Column("version", sa.Integer, nullable=False, server_default="1"))
    add("accounts", sa.Column("has_charges", sa.Boolean, nullable=False, server_default=sa.text("false")))
    add("accounts", sa.Column("personal_data_erased_at", sa.DateTime(timezone=True)))
    op.create_index("accounts_display_name_lower", "accounts", [sa.text("lower(display_name)")])

    create_request_log_table(op)
    # Pre-release: no creation request ids worth carrying over (0001 never left development).
    op.drop_column("accounts", "create_request_id")

    op.create_table(
        "contacts",
        sa.Column("contact_id", sa.Uuid, primary_key=True),
        sa.Column("account_id", sa.Uuid, sa.ForeignKey("accounts.account_id"), nullable=False, index=True),
        sa.Column("role", sa.Text, nullable=False),
        sa.Column("name", sa.Text, nullable=False),
        sa.Column("channel", sa.Text, nullable=False),
        sa.Column("email", sa.Text),
        sa.Column("phone", sa.Text),
        sa.Column("postal_address", postgresql.JSONB),
        sa.Column("create_time", sa.DateTime(timezone=True), nullable=False),
        sa.Column("update_time", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index("contacts_email_lower", "contacts", [sa.text("lower(email)")])

    op.create_table(
        "provisioned_services",
        sa.Column("service_id", sa.Uuid, primary_key=True),
        sa.Column("account_id", sa.Uuid, sa.ForeignKey("accounts.account_id"), nullable=False, index=True),
        sa.Column("kind", sa.Text, nullable=False),
        sa.Column("identifier", sa.Text, nullable=False),
        sa.Column("description", sa.Text, nullable=False),
        sa.Column("status", sa.Text, nullable=False),
        sa.Column("suspended_with_account", sa.Boolean, nullable=False),
        sa.Column("status_reason", sa.Text, nullable=False),
        sa.Column("status_actor", sa.Text, nullable=False),
        sa.Column("labels", postgresql.JSONB, nullable=False),
        sa.Column("create_time", sa.DateTime(timezone=True), nullable=False),
        sa.Column("update_time", sa.DateTime(timezone=True), nullable=False),
        sa.UniqueConstraint("account_id", "kind", "identifier", name="provisioned_services_identifier"),
    )

    op.create_table(
        "payment_methods",
        sa.Column("payment_method_id", sa.Uuid, primary_key=True),
        sa.Column("account_id", sa.Uuid, sa.ForeignKey("accounts.account_id"), nullable=False, index=True),
        sa.Column("type", sa.Text, nullable=False),
        sa.Column("is_default", sa.Boolean, nullable=False),
        sa.Column("details", postgresql.JSONB, nullable=False),
        sa.Column("create_time", sa.DateTime(timezone=True), nullable=False),
        sa.Column("remove_time", sa.DateTime(timezone=True)),
    )
    op.create_index(
        "payment_methods_one_default",
        "payment_methods",
        ["account_id"],
        unique=True,
        postgresql_where=sa.text("is_default AND remove_time IS NULL"),
    )

    op.create_table(
        "purchases",
        sa.Column("purchase_id", sa.Uuid, primary_key=True),
        sa.Column("account_id", sa.Uuid, sa.ForeignKey("accounts.account_id"), nullable=False, index=True),
        sa.Column("service_id", sa.Uuid, sa.ForeignKey("provisioned_services.service_id")),
        sa.Column("charge_offer_code", sa.Text, nullable=False),
        sa.Column("charge_offer_version", sa.Integer, nullable=False),
        sa.Column("quantity", sa.Numeric(38, 9), nullable=False),
        sa.Column("start_time", sa.DateTime(timezone=True), nullable=False),
        sa.Column("end_time", sa.DateTime(timezone=True)),
        sa.Column("price_overrides", postgresql.JSONB, nullable=False),
        sa.Column("create_time", sa.DateTime(timezone=True), nullable=False),
        sa.Column("cancel_time", sa.DateTime(timezone=True)),
    )


def downgrade() -> None:
    op.drop_table("purchases")
    op.drop_table("payment_methods")
    op.drop_table("provisioned_services")
    op.drop_table("contacts")
    op.add_column("accounts", sa.Column("create_request_id", sa.Uuid, unique=True))
    op.drop_table("request_log")
    op.drop_index("accounts_display_name_lower", "accounts")
    for column in (
        "personal_data_erased_at",
        "has_charges",
        "version",
        "update_time",
        "status_change_time",
        "status_actor_id",
        "status_actor",
        "status_reason",
        "collections_scenario_id",
        "collections_exempt",
        "delivery_attach_pdf",
        "delivery_method",
        "threshold_amount",
        "date_of_birth",
        "tax_id",
        "country_code",
    ):
        op.drop_column("accounts", column)
