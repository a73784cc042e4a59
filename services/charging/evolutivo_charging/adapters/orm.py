"""The charging database's tables."""

from evolutivo_runtime.messaging.tables import messaging_tables
from sqlalchemy import Column, DateTime, MetaData, Table, Text, Uuid

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

outbox, inbox = messaging_tables(metadata)
