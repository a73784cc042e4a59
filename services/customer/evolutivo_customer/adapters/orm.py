"""The customer database's tables."""

from evolutivo_runtime.idempotency import request_log_table
from evolutivo_runtime.messaging.tables import messaging_tables
from sqlalchemy import (
    Boolean,
    Column,
    Date,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    Numeric,
    Sequence,
    Table,
    Text,
    UniqueConstraint,
    Uuid,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB

metadata = MetaData()

account_number_seq = Sequence("account_number_seq", metadata=metadata)

accounts = Table(
    "accounts",
    metadata,
    Column("account_id", Uuid, primary_key=True),
    Column("account_number", Text, nullable=False, unique=True),
    Column("type", Text, nullable=False),
    Column("display_name", Text, nullable=False),
    Column("currency_code", Text, nullable=False),
    Column("time_zone", Text, nullable=False),
    Column("locale", Text, nullable=False),
    Column("status", Text, nullable=False),
    Column("bill_cycle_day", Integer, nullable=False),
    Column("billing_frequency", Text, nullable=False),
    Column("payment_terms_days", Integer, nullable=False),
    Column("labels", JSONB, nullable=False),
    Column("create_time", DateTime(timezone=True), nullable=False),
    # Since 0002.
    Column("country_code", Text, nullable=False, server_default=""),
    Column("tax_id", Text, nullable=False, server_default=""),
    Column("date_of_birth", Date),
    # NULL: no threshold bills. NUMERIC(38, 9) holds every google.type.Money exactly.
    Column("threshold_amount", Numeric(38, 9)),
    Column("delivery_method", Text, nullable=False, server_default="email"),
    Column("delivery_attach_pdf", Boolean, nullable=False, server_default=text("true")),
    Column("collections_exempt", Boolean, nullable=False, server_default=text("false")),
    Column("collections_scenario_id", Text, nullable=False, server_default=""),
    Column("status_reason", Text, nullable=False, server_default=""),
    Column("status_actor", Text, nullable=False, server_default=""),
    Column("status_actor_id", Text, nullable=False, server_default=""),
    Column("status_change_time", DateTime(timezone=True)),
    Column("update_time", DateTime(timezone=True)),
    # Optimistic concurrency: the etag is derived from it.
    Column("version", Integer, nullable=False, server_default="1"),
    # Set once charging reports the account's first charge: the currency is then fixed.
    Column("has_charges", Boolean, nullable=False, server_default=text("false")),
    Column("personal_data_erased_at", DateTime(timezone=True)),
    Index("accounts_display_name_lower", text("lower(display_name)")),
)

contacts = Table(
    "contacts",
    metadata,
    Column("contact_id", Uuid, primary_key=True),
    Column("account_id", Uuid, ForeignKey("accounts.account_id"), nullable=False, index=True),
    Column("role", Text, nullable=False),
    Column("name", Text, nullable=False),
    # "email", "phone" or "postal".
    Column("channel", Text, nullable=False),
    Column("email", Text),
    Column("phone", Text),
    # google.type.PostalAddress as JSON (protobuf JSON mapping).
    Column("postal_address", JSONB),
    Column("create_time", DateTime(timezone=True), nullable=False),
    Column("update_time", DateTime(timezone=True), nullable=False),
    Index("contacts_email_lower", text("lower(email)")),
)

provisioned_services = Table(
    "provisioned_services",
    metadata,
    Column("service_id", Uuid, primary_key=True),
    Column("account_id", Uuid, ForeignKey("accounts.account_id"), nullable=False, index=True),
    Column("kind", Text, nullable=False),
    Column("identifier", Text, nullable=False),
    Column("description", Text, nullable=False),
    Column("status", Text, nullable=False),
    Column("suspended_with_account", Boolean, nullable=False),
    Column("status_reason", Text, nullable=False),
    Column("status_actor", Text, nullable=False),
    Column("labels", JSONB, nullable=False),
    Column("create_time", DateTime(timezone=True), nullable=False),
    Column("update_time", DateTime(timezone=True), nullable=False),
    UniqueConstraint("account_id", "kind", "identifier", name="provisioned_services_identifier"),
)

payment_methods = Table(
    "payment_methods",
    metadata,
    Column("payment_method_id", Uuid, primary_key=True),
    Column("account_id", Uuid, ForeignKey("accounts.account_id"), nullable=False, index=True),
    # "card", "sepa_direct_debit", "bank_transfer" or "pay_on_invoice".
    Column("type", Text, nullable=False),
    Column("is_default", Boolean, nullable=False),
    # Type-specific details (provider token, IBAN, mandate...): a JSON document as a Fernet token
    # (payment_methods_repository.py, migration 0004).
    Column("details", LargeBinary, nullable=False),
    Column("create_time", DateTime(timezone=True), nullable=False),
    # Removed methods are kept (payments reference them) but no longer listed.
    Column("remove_time", DateTime(timezone=True)),
    Index(
        "payment_methods_one_default",
        "account_id",
        unique=True,
        postgresql_where=text("is_default AND remove_time IS NULL"),
    ),
)

purchases = Table(
    "purchases",
    metadata,
    Column("purchase_id", Uuid, primary_key=True),
    Column("account_id", Uuid, ForeignKey("accounts.account_id"), nullable=False, index=True),
    Column("service_id", Uuid, ForeignKey("provisioned_services.service_id")),
    Column("charge_offer_code", Text, nullable=False),
    Column("charge_offer_version", Integer, nullable=False),
    Column("quantity", Numeric(38, 9), nullable=False),
    Column("start_time", DateTime(timezone=True), nullable=False),
    Column("end_time", DateTime(timezone=True)),
    # [{"charge_code": ..., "price": "<decimal>"}] in the account's currency.
    Column("price_overrides", JSONB, nullable=False),
    Column("create_time", DateTime(timezone=True), nullable=False),
    Column("cancel_time", DateTime(timezone=True)),
)

request_log = request_log_table(metadata)
outbox, inbox = messaging_tables(metadata)
