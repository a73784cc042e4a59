"""The billing database's tables."""

from evolutivo_runtime.messaging.tables import messaging_tables
from sqlalchemy import (
    BigInteger,
    CheckConstraint,
    Column,
    Date,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    Table,
    Text,
    UniqueConstraint,
    Uuid,
    text,
)

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

# Since 0003: the billing periods of each bill unit (docs/billing.md).
bill_cycles = Table(
    "bill_cycles",
    metadata,
    Column("bill_cycle_id", Uuid, primary_key=True),
    Column("bill_unit_id", Uuid, ForeignKey("bill_units.bill_unit_id"), nullable=False),
    # The unit's account (never changes), for ListBillCycles.
    Column("account_id", Uuid, nullable=False),
    Column("sequence", BigInteger, nullable=False),
    Column("start_time", DateTime(timezone=True), nullable=False),
    Column("end_time", DateTime(timezone=True), nullable=False),
    Column("start_date", Date, nullable=False),
    Column("end_date", Date, nullable=False),
    Column("time_zone", Text, nullable=False),
    Column("status", Text, nullable=False),
    Column("close_time", DateTime(timezone=True)),
    # A cycle number is used once per unit, whoever (replica, rerun) opens it.
    UniqueConstraint("bill_unit_id", "sequence", name="bill_cycles_unit_sequence"),
    CheckConstraint("status in ('open', 'closed')", name="bill_cycles_status"),
    CheckConstraint("(status = 'closed') = (close_time is not null)", name="bill_cycles_close_time"),
    CheckConstraint("end_time > start_time", name="bill_cycles_window"),
    # At most one open cycle per unit.
    Index("bill_cycles_one_open", "bill_unit_id", unique=True, postgresql_where=text("status = 'open'")),
    # The closer's claim: open cycles by end.
    Index("bill_cycles_due", "end_time", postgresql_where=text("status = 'open'")),
    # ListBillCycles: an account's cycles, newest first.
    Index("bill_cycles_listing", "account_id", "sequence"),
)

outbox, inbox = messaging_tables(metadata)
