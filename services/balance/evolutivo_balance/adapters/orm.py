"""The balance database's tables."""

from evolutivo_runtime.idempotency import request_log_table
from evolutivo_runtime.messaging.tables import messaging_tables
from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    Column,
    DateTime,
    ForeignKey,
    Identity,
    Index,
    MetaData,
    Numeric,
    Table,
    Text,
    UniqueConstraint,
    Uuid,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB

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
    # Always the sum of the group's ledger entries: moved only by the unit of work, in the
    # transaction that appends them (service_layer/unit_of_work.py).
    Column("balance", Numeric(38, 9), nullable=False),
    Column("create_time", DateTime(timezone=True), nullable=False),
    # Since 0002: when the group closed (NULL while open).
    Column("close_time", DateTime(timezone=True)),
    # Since 0003, the credit policy (domain/credit.py CreditPolicy): NULL limits are no limit.
    Column("credit_limit", Numeric(38, 9)),
    Column("temporary_credit_limit", Numeric(38, 9)),
    Column("temporary_limit_expire_time", DateTime(timezone=True)),
    # [{"amount": "100.00"} | {"percent": "80"}, ...]
    Column("credit_thresholds", JSONB, nullable=False, server_default=text("'[]'::jsonb")),
    # Since 0003, the credit state last published (CreditState), moved with the balance.
    Column("credit_limit_exceeded", Boolean, nullable=False, server_default=text("false")),
    # Keys of the thresholds reached, e.g. ["amount:100", "percent:80"].
    Column("credit_thresholds_reached", JSONB, nullable=False, server_default=text("'[]'::jsonb")),
    Column("credit_state_version", BigInteger, nullable=False, server_default=text("0")),
    Column("threshold_state_version", BigInteger, nullable=False, server_default=text("0")),
    # One default group per account, whatever the number of deliveries or replicas.
    Index("balance_groups_one_default", "account_id", unique=True, postgresql_where=text("is_default")),
    # Since 0002: a name names one open group of an account.
    Index("balance_groups_open_name", "account_id", "name", unique=True, postgresql_where=text("close_time IS NULL")),
    # Since 0003: the expiry loop's due temporary limits.
    Index(
        "balance_groups_temporary_limit_expiry",
        "temporary_limit_expire_time",
        postgresql_where=text("temporary_limit_expire_time IS NOT NULL"),
    ),
)

ENTRY_TYPES = (
    "charge",
    "payment",
    "adjustment",
    "write_off",
    "refund",
    "payment_reversal",
    "transfer",
    # Since 0003.
    "tax",
    "credit_note",
)

# Since 0002: the append-only ledger (a trigger refuses UPDATE and DELETE).
ledger_entries = Table(
    "ledger_entries",
    metadata,
    Column("entry_id", Uuid, primary_key=True),
    # The order entries were booked in: breaks ties between equal effective times.
    Column("seq", BigInteger, Identity(always=True), nullable=False, unique=True),
    Column("balance_group_id", Uuid, ForeignKey("balance_groups.balance_group_id"), nullable=False),
    Column("account_id", Uuid, nullable=False),
    # domain.model.EntryType values.
    Column("type", Text, nullable=False),
    # Signed: positive is a debit, negative a credit.
    Column("amount", Numeric(38, 9), nullable=False),
    Column("currency_code", Text, nullable=False),
    # domain.model.SourceType values, and the source's id (charge id, payment reference, ...).
    Column("source_type", Text, nullable=False),
    Column("source_id", Text, nullable=False),
    Column("reason_code", Text, nullable=False),
    Column("reason", Text, nullable=False),
    Column("actor", Text, nullable=False),
    Column("effective_time", DateTime(timezone=True), nullable=False),
    Column("create_time", DateTime(timezone=True), nullable=False),
    # A source is booked at most once per entry type: replays and retries book nothing.
    UniqueConstraint("type", "source_type", "source_id", name="ledger_entries_source"),
    CheckConstraint(f"type IN {ENTRY_TYPES!r}", name="ledger_entries_type"),
    # Balances as of an instant.
    Index("ledger_entries_group_time", "balance_group_id", "effective_time"),
    # ListLedgerEntries: an account's entries, newest first.
    Index("ledger_entries_account_time", "account_id", "effective_time", "seq"),
)

# Since 0002: payments, one per reference.
payments = Table(
    "payments",
    metadata,
    Column("payment_id", Uuid, primary_key=True),
    # The payment's idempotency key, unique across accounts.
    Column("reference", Text, nullable=False, unique=True),
    Column("account_id", Uuid, nullable=False, index=True),
    Column("balance_group_id", Uuid, nullable=False),
    Column("amount", Numeric(38, 9), nullable=False),
    Column("currency_code", Text, nullable=False),
    # domain.model.PaymentMethod values.
    Column("method", Text, nullable=False),
    Column("received_time", DateTime(timezone=True), nullable=False),
    # recorded | reversed (domain.model.PaymentState values).
    Column("state", Text, nullable=False),
    Column("entry_id", Uuid, nullable=False),
    Column("reversal_entry_id", Uuid),
    Column("reversal_reason", Text, nullable=False),
    Column("reverse_time", DateTime(timezone=True)),
    Column("create_time", DateTime(timezone=True), nullable=False),
)

ACCOUNT_STATUSES = ("active", "suspended", "closed")

# Since 0005: each account's status as customer's events tell it (domain.model.AccountStatus
# values), as of `status_time`, the account's time of that status (an older event changes nothing;
# closed is final). CreateBalanceGroup refuses a closed account.
account_statuses = Table(
    "account_statuses",
    metadata,
    Column("account_id", Uuid, primary_key=True),
    Column("status", Text, nullable=False),
    Column("status_time", DateTime(timezone=True), nullable=False),
    CheckConstraint(f"status IN {ACCOUNT_STATUSES!r}", name="account_statuses_status"),
)

outbox, inbox = messaging_tables(metadata)
# Since 0002: AIP-155 request ids.
request_log = request_log_table(metadata)
