"""The customer database's tables."""

from evolutivo_runtime.messaging.tables import messaging_tables
from sqlalchemy import Column, DateTime, Integer, MetaData, Sequence, Table, Text, Uuid
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
    # AIP-155: the request that created the account, so a retry returns it instead of a twin.
    Column("create_request_id", Uuid, unique=True),
)

outbox, inbox = messaging_tables(metadata)
