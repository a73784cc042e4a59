"""The billing database's tables."""

from evolutivo_runtime.messaging.tables import messaging_tables
from sqlalchemy import Column, DateTime, Index, Integer, MetaData, Table, Text, Uuid

metadata = MetaData()

bill_units = Table(
    "bill_units",
    metadata,
    Column("bill_unit_id", Uuid, primary_key=True),
    # One bill unit per account, whatever the number of deliveries or replicas.
    Column("account_id", Uuid, nullable=False, unique=True),
    Column("currency_code", Text, nullable=False),
    Column("time_zone", Text, nullable=False),
    Column("bill_cycle_day", Integer, nullable=False),
    Column("billing_frequency", Text, nullable=False),
    Column("payment_terms_days", Integer, nullable=False),
    Column("create_time", DateTime(timezone=True), nullable=False),
    # ListBillUnits' order and keyset cursor.
    Index("bill_units_listing", "create_time", "bill_unit_id"),
)

outbox, inbox = messaging_tables(metadata)
