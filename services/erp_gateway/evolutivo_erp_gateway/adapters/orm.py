"""The ERP gateway database's tables."""

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
    Integer,
    LargeBinary,
    MetaData,
    Numeric,
    PrimaryKeyConstraint,
    Table,
    Text,
    UniqueConstraint,
    Uuid,
)
from sqlalchemy.dialects.postgresql import JSONB

metadata = MetaData()

# One row per suite entity, whatever the number of deliveries or replicas: the gateway's copy of
# the record (the latest event's payload) that jobs send, and where it stands overall.
sync_states = Table(
    "sync_states",
    metadata,
    Column("entity_type", Text, primary_key=True),
    Column("entity_id", Uuid, primary_key=True),
    Column("status", Text, nullable=False),
    Column("erp_id", Text, nullable=False),
    Column("update_time", DateTime(timezone=True), nullable=False),
    # The customer it belongs to (the account itself for customers); NULL for rows from before 0002.
    Column("account_id", Uuid),
    # The serialized protobuf record (Account, Bill, CreditNote, Payment) and its version (the
    # account's update time for customers), so that an older event never overwrites a newer one.
    Column("payload", LargeBinary),
    Column("payload_version", DateTime(timezone=True)),
)

connections = Table(
    "connections",
    metadata,
    Column("connection_id", Uuid, primary_key=True),
    Column("display_name", Text, nullable=False),
    Column("type", Text, nullable=False),
    Column("endpoint_url", Text, nullable=False),
    Column("database", Text, nullable=False),
    Column("username", Text, nullable=False),
    # Fernet token of the secret (adapters/crypto.py); never read back through the API.
    Column("secret", LargeBinary),
    Column("mapping", JSONB, nullable=False),
    Column("enabled", Boolean, nullable=False),
    Column("import_payments", Boolean, nullable=False),
    Column("create_request_id", Uuid, unique=True),
    Column("create_time", DateTime(timezone=True), nullable=False),
    Column("update_time", DateTime(timezone=True), nullable=False),
    Column("version", Integer, nullable=False),
    # The inbound poll's cursor: the ERP's last write time seen (ISO text, the ERP's clock) and id.
    Column("import_cursor_time", Text),
    Column("import_cursor_id", BigInteger),
    # Circuit breaker: failures of the connection itself (unreachable, refused login) in a row;
    # past the threshold no job of it is claimed until paused_until, then one attempt probes it.
    Column("consecutive_failures", Integer, nullable=False, server_default="0"),
    Column("paused_until", DateTime(timezone=True)),
    # Collections referrals are handed to it.
    Column("collections_referrals", Boolean, nullable=False, server_default="false"),
)

sync_jobs = Table(
    "sync_jobs",
    metadata,
    Column("job_id", Uuid, primary_key=True),
    # Claim order: jobs of one customer are created in event order.
    Column("sequence", BigInteger, Identity(always=True), nullable=False, unique=True),
    Column("connection_id", Uuid, ForeignKey("connections.connection_id"), nullable=False),
    Column("entity_type", Text, nullable=False),
    Column("entity_id", Uuid, nullable=False),
    Column("account_id", Uuid, nullable=False),
    Column("state", Text, nullable=False),
    Column("attempts", Integer, nullable=False),
    Column("last_error", Text, nullable=False),
    Column("next_attempt_time", DateTime(timezone=True), nullable=False),
    Column("erp_id", Text, nullable=False),
    # The payload version the job sends; a newer one re-arms a succeeded job (customer updates).
    Column("payload_version", DateTime(timezone=True)),
    Column("create_time", DateTime(timezone=True), nullable=False),
    Column("update_time", DateTime(timezone=True), nullable=False),
    UniqueConstraint("connection_id", "entity_type", "entity_id"),
    Index("sync_jobs_due", "state", "next_attempt_time"),
    Index("sync_jobs_account", "connection_id", "account_id"),
)

# The customer's contacts (customer's ContactChanged), sent with the customer to the ERP: email,
# phone and postal address. The newest event per contact wins; a removed or erased contact keeps
# its row (so an older event cannot bring it back) without its data.
customer_contacts = Table(
    "customer_contacts",
    metadata,
    Column("contact_id", Uuid, primary_key=True),
    Column("account_id", Uuid, nullable=False, index=True),
    # The serialized evolutivo.customer.v1.Contact; NULL once removed or erased.
    Column("payload", LargeBinary),
    Column("version", DateTime(timezone=True), nullable=False),
)

# General-ledger postings of each financial event received (domain/journal.py): the source of
# ExportJournal. A source is posted once whatever the redeliveries.
gl_postings = Table(
    "gl_postings",
    metadata,
    Column("posting_id", BigInteger, Identity(always=True), primary_key=True),
    Column("source_type", Text, nullable=False),
    Column("source_id", Text, nullable=False),
    Column("currency_code", Text, nullable=False),
    Column("effective_time", DateTime(timezone=True), nullable=False),
    Column("role", Text, nullable=False),
    Column("charge_offer_code", Text, nullable=False),
    Column("amount", Numeric(38, 9), nullable=False),
    UniqueConstraint("source_type", "source_id", "role", "charge_offer_code"),
    Index("gl_postings_period", "currency_code", "effective_time"),
)

# Payments read from an ERP: each once (the ERP's id), recorded in balance or set aside with why.
inbound_payments = Table(
    "inbound_payments",
    metadata,
    Column("connection_id", Uuid, ForeignKey("connections.connection_id"), primary_key=True),
    Column("erp_id", Text, primary_key=True),
    Column("reference", Text, nullable=False, index=True),
    Column("account_id", Uuid),
    Column("amount", Numeric(38, 9), nullable=False),
    Column("currency_code", Text, nullable=False),
    # "pending" (being recorded in balance), "recorded" (payment_id says which) or "ignored"
    # (reason says why).
    Column("status", Text, nullable=False),
    Column("payment_id", Text, nullable=False),
    Column("reason", Text, nullable=False),
    Column("create_time", DateTime(timezone=True), nullable=False),
)


def _allocations(name: str, owner: str) -> Table:
    """Billing's allocations of one kind of credit to bills, per owner (payment, credit note) and
    sequence; `entity_id` names the allocation's record (domain/model.py allocation_entity_id)."""
    return Table(
        name,
        metadata,
        Column(owner, Uuid, nullable=False),
        Column("sequence", BigInteger, nullable=False),
        Column("entity_id", Uuid, nullable=False),
        Column("account_id", Uuid, nullable=False),
        # The serialized event (evolutivo.billing.v1.PaymentAllocated / CreditNoteAllocated).
        Column("payload", LargeBinary, nullable=False),
        Column("receive_time", DateTime(timezone=True), nullable=False),
        PrimaryKeyConstraint(owner, "sequence", name=f"{name}_pkey"),
        UniqueConstraint("entity_id", name=f"{name}_entity_id_key"),
        CheckConstraint("sequence >= 1", name=f"{name}_sequence"),
    )


# Billing's allocations of each payment to bills (PaymentAllocated), in their sequence: 1 is how
# billing allocated the payment when it recorded it (the payment's job books it so in the ERP),
# 2, 3, ... each later application of its credit to a new bill (a PAYMENT_ALLOCATION job each,
# whose entity id is `entity_id`, domain/model.py allocation_entity_id).
payment_allocations = _allocations("payment_allocations", "payment_id")

# Since 0006: billing's allocations of each credit note's credit to bills (CreditNoteAllocated), in
# their sequence: 1 at issue (to its own bill), 2, 3, ... later bills; a CREDIT_NOTE_ALLOCATION job
# each (sequence 1 included: the note itself is booked whole by its own job).
credit_note_allocations = _allocations("credit_note_allocations", "credit_note_id")

outbox, inbox = messaging_tables(metadata)
request_log = request_log_table(metadata)
