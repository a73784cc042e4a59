"""The charging database's tables."""

from evolutivo_runtime.idempotency import request_log_table
from evolutivo_runtime.messaging.tables import messaging_tables
from sqlalchemy import Column, DateTime, Index, Integer, MetaData, Table, Text, UniqueConstraint, Uuid, text
from sqlalchemy.dialects.postgresql import JSONB

metadata = MetaData()

# Charging's projection of customer's accounts: one row per account, whatever the deliveries.
charging_accounts = Table(
    "charging_accounts",
    metadata,
    Column("account_id", Uuid, primary_key=True),
    Column("currency_code", Text, nullable=False),
    Column("time_zone", Text, nullable=False),
    Column("status", Text, nullable=False),
    Column("update_time", DateTime(timezone=True), nullable=False),
    # Since 0002: when customer changed the status (NULL: as opened). Orders status events.
    Column("status_change_time", DateTime(timezone=True)),
)

# Since 0003: the charge-offer catalog, one row per version of an offer (adapters/catalog_repository.py).
charge_offers = Table(
    "charge_offers",
    metadata,
    Column("charge_offer_id", Uuid, primary_key=True),
    Column("code", Text, nullable=False),
    Column("version", Integer, nullable=False),
    Column("name", Text, nullable=False),
    Column("description", Text, nullable=False),
    Column("currency_code", Text, nullable=False),
    Column("valid_from", DateTime(timezone=True)),
    Column("valid_to", DateTime(timezone=True)),
    # draft | active | retired (domain.catalog.OfferStatus values).
    Column("status", Text, nullable=False),
    # The charges as a JSON array of evolutivo.charging.v1.Charge in protobuf JSON form
    # (google.protobuf.json_format, proto field names): the wire contract, already versioned.
    Column("charges", JSONB, nullable=False),
    Column("create_time", DateTime(timezone=True), nullable=False),
    Column("activate_time", DateTime(timezone=True)),
    Column("retire_time", DateTime(timezone=True)),
    UniqueConstraint("code", "version", name="charge_offers_code_version"),
    # At most one activated version of a code is open-ended (activation ends the previous one).
    Index(
        "charge_offers_one_open_ended",
        "code",
        unique=True,
        postgresql_where=text("status <> 'draft' AND valid_to IS NULL"),
    ),
)

outbox, inbox = messaging_tables(metadata)
# Since 0003: AIP-155 request ids (CreateChargeOffer).
request_log = request_log_table(metadata)
