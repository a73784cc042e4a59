"""The balance database's tables."""

from evolutivo_runtime.messaging.tables import messaging_tables
from sqlalchemy import Boolean, Column, DateTime, Index, MetaData, Numeric, Table, Text, Uuid, text

metadata = MetaData()

# Amounts: NUMERIC(38, 9) holds every google.type.Money value exactly.
balance_groups = Table(
    "balance_groups",
    metadata,
    Column("balance_group_id", Uuid, primary_key=True),
    Column("account_id", Uuid, nullable=False, index=True),
    Column("name", Text, nullable=False),
    Column("is_default", Boolean, nullable=False),
    Column("currency_code", Text, nullable=False),
    Column("balance", Numeric(38, 9), nullable=False),
    Column("create_time", DateTime(timezone=True), nullable=False),
    # One default group per account, whatever the number of deliveries or replicas.
    Index("balance_groups_one_default", "account_id", unique=True, postgresql_where=text("is_default")),
)

outbox, inbox = messaging_tables(metadata)
