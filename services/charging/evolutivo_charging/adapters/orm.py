"""The charging database's tables."""

from evolutivo_runtime.idempotency import request_log_table
from evolutivo_runtime.messaging.tables import messaging_tables
from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    Column,
    DateTime,
    Identity,
    Index,
    Integer,
    MetaData,
    Numeric,
    PrimaryKeyConstraint,
    Sequence,
    Table,
    Text,
    UniqueConstraint,
    Uuid,
    text,
)
from sqlalchemy.dialects.postgresql import ARRAY, JSONB

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
    # Since 0007: as of when the currency and time zone are known (customer's account update time;
    # NULL: unknown). Orders AccountUpdated.
    Column("details_change_time", DateTime(timezone=True)),
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

# Since 0004: charging's projection of customer's purchases (PurchaseCreated / PurchaseEnded).
purchases = Table(
    "purchases",
    metadata,
    Column("purchase_id", Uuid, primary_key=True),
    Column("account_id", Uuid, nullable=False),
    Column("service_id", Uuid),
    Column("charge_offer_code", Text, nullable=False),
    Column("charge_offer_version", Integer, nullable=False),
    Column("quantity", Numeric, nullable=False),
    Column("start_time", DateTime(timezone=True), nullable=False),
    Column("end_time", DateTime(timezone=True)),
    Column("cancel_time", DateTime(timezone=True)),
    # [{"charge_code": "...", "price": "0.0003"}]: decimals as strings.
    Column("price_overrides", JSONB, nullable=False),
    # When customer published the PurchaseEnded applied last (orders ends delivered out of order).
    Column("end_update_time", DateTime(timezone=True)),
    Column("update_time", DateTime(timezone=True), nullable=False),
    # Since 0006: when charging charged the fees due at the purchase's start (its one-time fees,
    # and the in-advance fees of the cycles open then). NULL: not yet (the fee loop's queue).
    Column("start_fees_time", DateTime(timezone=True)),
    Index("purchases_account", "account_id"),
    Index(
        "purchases_start_fees_pending",
        "start_time",
        "purchase_id",
        postgresql_where=text("start_fees_time IS NULL"),
    ),
)

# Since 0004: charging's projection of billing's cycles (BillCycleOpened / BillCycleClosed).
bill_cycles = Table(
    "bill_cycles",
    metadata,
    Column("bill_cycle_id", Uuid, primary_key=True),
    Column("account_id", Uuid, nullable=False),
    Column("bill_unit_id", Uuid),
    Column("sequence", BigInteger, nullable=False),
    Column("start_time", DateTime(timezone=True), nullable=False),
    Column("end_time", DateTime(timezone=True), nullable=False),
    # open | closed (domain.usage.BillCycleStatus values); a closed cycle never opens again.
    Column("status", Text, nullable=False),
    Column("close_time", DateTime(timezone=True)),
    Column("time_zone", Text, nullable=False),
    Column("update_time", DateTime(timezone=True), nullable=False),
    Index("bill_cycles_account", "account_id"),
)

# Since 0005: every usage event received, once per event_id; RATED ones are deleted past the
# idempotency horizon (docs/charging.md).
usage_events = Table(
    "usage_events",
    metadata,
    Column("event_id", Text, primary_key=True),
    # Orders the unrated list (keyset pages).
    Column("seq", BigInteger, Identity(always=True), nullable=False, unique=True),
    # SHA-256 (hex) of the canonical payload: the same id must come back with the same payload.
    Column("payload_sha256", Text, nullable=False),
    Column("account_id", Uuid, nullable=False),
    # The canonical payload (domain.usage.UsageEvent.payload), to rate the event again.
    Column("payload", JSONB, nullable=False),
    # rated | unrated | rejected (domain.usage.UsageStatus values).
    Column("status", Text, nullable=False),
    Column("reason", Text, nullable=False),
    # The charges its rating produced, in order.
    Column("charge_ids", ARRAY(Uuid), nullable=False),
    Column("receive_time", DateTime(timezone=True), nullable=False),
    Column("rate_time", DateTime(timezone=True), nullable=False),
    Column("attempts", Integer, nullable=False),
    # Since 0008: the event's time (rerating windows), the cycle its units counted in and its place
    # in the order the cycle's counters counted (usage_rate_seq), set when it is rated.
    Column("event_time", DateTime(timezone=True), nullable=False),
    Column("bill_cycle_id", Uuid),
    Column("rate_seq", BigInteger),
    Index("usage_events_kept", "seq", postgresql_where=text("status <> 'rated'")),
    Index("usage_events_kept_by_account", "account_id", "seq", postgresql_where=text("status <> 'rated'")),
    Index("usage_events_rated_window", "account_id", "event_time", postgresql_where=text("status = 'rated'")),
    Index("usage_events_rated_cycle", "bill_cycle_id", "rate_seq", postgresql_where=text("status = 'rated'")),
    Index("usage_events_expiry", "receive_time", postgresql_where=text("status = 'rated'")),
)

# Since 0008: the order in which usage is rated (usage_events.rate_seq).
usage_rate_seq = Sequence("usage_rate_seq", metadata=metadata)

# Since 0005: units a purchase used of a cumulative charge in a cycle (tiers count them).
usage_counters = Table(
    "usage_counters",
    metadata,
    Column("account_id", Uuid, nullable=False),
    Column("purchase_id", Uuid, nullable=False),
    Column("charge_code", Text, nullable=False),
    Column("bill_cycle_id", Uuid, nullable=False),
    Column("units", Numeric, nullable=False),
    Column("update_time", DateTime(timezone=True), nullable=False),
    PrimaryKeyConstraint("account_id", "purchase_id", "charge_code", "bill_cycle_id", name="usage_counters_pkey"),
)

# Since 0005: charges, immutable once written (a correction is a new, reversing charge).
charges = Table(
    "charges",
    metadata,
    Column("charge_id", Uuid, primary_key=True),
    # Orders an account's charges (ListCharges, oldest first).
    Column("seq", BigInteger, Identity(always=True), nullable=False, unique=True),
    Column("account_id", Uuid, nullable=False),
    # usage | recurring | one_time | reversal (domain.usage.ChargeKind values).
    Column("kind", Text, nullable=False),
    Column("event_id", Text, nullable=False),
    Column("purchase_id", Uuid, nullable=False),
    Column("charge_offer_code", Text, nullable=False),
    Column("charge_offer_version", Integer, nullable=False),
    Column("charge_code", Text, nullable=False),
    Column("balance_group", Text, nullable=False),
    Column("tax_code", Text, nullable=False),
    Column("quantity", Numeric, nullable=False),
    Column("amount", Numeric(38, 9), nullable=False),
    Column("currency_code", Text, nullable=False),
    # Exact: unconstrained NUMERIC keeps every digit.
    Column("unrounded_amount", Numeric, nullable=False),
    # [{"tier": 1, "units": "...", "unit_price": "...", "flat_fee": "...", "amount": "..."}]
    Column("tiers", JSONB, nullable=False),
    Column("event_time", DateTime(timezone=True), nullable=False),
    Column("rate_time", DateTime(timezone=True), nullable=False),
    Column("bill_cycle_id", Uuid, nullable=False),
    Column("late", Boolean, nullable=False),
    Column("reverses_charge_id", Uuid),
    # Since 0008: the rerating run that made a reversing or new charge; the charge a new one replaces.
    Column("rerate_run_id", Uuid),
    Column("replaces_charge_id", Uuid),
    Index("charges_account", "account_id", "seq"),
    Index("charges_account_event", "account_id", "event_id"),
    # What a reversal cancels: the charges that stand are those no reversal names.
    Index("charges_reverses", "reverses_charge_id", postgresql_where=text("reverses_charge_id IS NOT NULL")),
    Index("charges_account_cycle", "account_id", "bill_cycle_id", "seq"),
)

# Since 0006: every fee charged, keyed so it is charged once (docs/charging.md, "Fees"): a
# recurring fee once per (purchase, charge code, the cycle it is for); a one-time fee once per
# (purchase, charge code), its period_cycle_id the nil UUID.
fee_charges = Table(
    "fee_charges",
    metadata,
    Column("purchase_id", Uuid, nullable=False),
    Column("charge_code", Text, nullable=False),
    # The cycle whose period the fee pays for (not always the cycle it is billed in).
    Column("period_cycle_id", Uuid, nullable=False),
    # recurring | one_time (domain.usage.ChargeKind values).
    Column("kind", Text, nullable=False),
    Column("charge_id", Uuid, nullable=False, unique=True),
    Column("account_id", Uuid, nullable=False),
    Column("create_time", DateTime(timezone=True), nullable=False),
    PrimaryKeyConstraint("purchase_id", "charge_code", "period_cycle_id", "kind", name="fee_charges_pkey"),
)

# Since 0008: one row per RerateUsage run (docs/charging.md, "Rerating").
rerate_runs = Table(
    "rerate_runs",
    metadata,
    Column("rerate_run_id", Uuid, primary_key=True),
    Column("account_id", Uuid, nullable=False),
    Column("start_time", DateTime(timezone=True), nullable=False),
    Column("end_time", DateTime(timezone=True), nullable=False),
    Column("charge_offer_code", Text, nullable=False),
    Column("request_id", Text, nullable=False, unique=True),
    Column("events_rerated", Integer, nullable=False),
    Column("events_changed", Integer, nullable=False),
    Column("charges_reversed", Integer, nullable=False),
    Column("charges_created", Integer, nullable=False),
    Column("net_amount", Numeric(38, 9), nullable=False),
    Column("currency_code", Text, nullable=False),
    Column("create_time", DateTime(timezone=True), nullable=False),
    Index("rerate_runs_account", "account_id", "create_time"),
)

# Since 0008: balance's credit-limit state per (account, balance group name), the highest
# credit_state_version applied wins (docs/charging.md, "Credit limits").
credit_states = Table(
    "credit_states",
    metadata,
    Column("account_id", Uuid, nullable=False),
    Column("balance_group_name", Text, nullable=False),
    Column("is_default", Boolean, nullable=False),
    Column("exceeded", Boolean, nullable=False),
    Column("credit_state_version", BigInteger, nullable=False),
    Column("update_time", DateTime(timezone=True), nullable=False),
    PrimaryKeyConstraint("account_id", "balance_group_name", name="credit_states_pkey"),
)

# Since 0008: one row; every transaction that changes what replicas cache (accounts, purchases,
# cycles, credit states, the catalog) bumps it and NOTIFYs (adapters/cache.py).
cache_generation = Table(
    "cache_generation",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("generation", BigInteger, nullable=False),
    CheckConstraint("id = 1", name="cache_generation_one_row"),
)

outbox, inbox = messaging_tables(metadata)
# Since 0003: AIP-155 request ids (CreateChargeOffer).
request_log = request_log_table(metadata)
