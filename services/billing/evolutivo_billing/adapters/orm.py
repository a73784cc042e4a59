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
    # Since 0002: customer's account status and when it changed (NULL: as opened).
    Column("account_status", Text, nullable=False, server_default="active"),
    Column("account_status_change_time", DateTime(timezone=True)),
    # Since 0002: a profile change waiting for the next cycle (all NULL when none), and when
    # customer last changed the profile.
    Column("pending_bill_cycle_day", Integer),
    Column("pending_billing_frequency", Text),
    Column("pending_payment_terms_days", Integer),
    Column("profile_change_time", DateTime(timezone=True)),
    # ListBillUnits' order and keyset cursor.
    Index("bill_units_listing", "create_time", "bill_unit_id"),
)

outbox, inbox = messaging_tables(metadata)
