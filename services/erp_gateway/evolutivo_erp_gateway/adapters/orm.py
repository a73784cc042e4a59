"""The ERP gateway database's tables."""

from evolutivo_runtime.messaging.tables import messaging_tables
from sqlalchemy import Column, DateTime, MetaData, Table, Text, Uuid

metadata = MetaData()

# One row per suite entity, whatever the number of deliveries or replicas.
sync_states = Table(
    "sync_states",
    metadata,
    Column("entity_type", Text, primary_key=True),
    Column("entity_id", Uuid, primary_key=True),
    Column("status", Text, nullable=False),
    Column("erp_id", Text, nullable=False),
    Column("update_time", DateTime(timezone=True), nullable=False),
)

outbox, inbox = messaging_tables(metadata)
