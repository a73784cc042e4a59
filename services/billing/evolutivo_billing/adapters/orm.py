"""The billing database's tables."""

from evolutivo_runtime.messaging.tables import messaging_tables
from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    Column,
    Date,
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
    text,
)
from sqlalchemy.dialects.postgresql import ARRAY, JSONB

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
    # Since 0006: the profile's threshold (NULL: none), and when the unbilled amount reached it
    # (set until the threshold bill is issued).
    Column("threshold_amount", Numeric(38, 9)),
    Column("threshold_reached_time", DateTime(timezone=True)),
    CheckConstraint("threshold_amount is null or threshold_amount > 0", name="bill_units_threshold"),
    Index(
        "bill_units_threshold_due",
        "threshold_reached_time",
        postgresql_where=text("threshold_reached_time is not null"),
    ),
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
    # Since 0016: of an open cycle, the items up to this `bill_items.seq` are on bills issued while
    # it went on (bill now, threshold); those above it are unbilled. A closed cycle is billed in
    # full (its bill is issued in the transaction that closes it).
    Column("billed_through_seq", BigInteger, nullable=False, server_default="0"),
    # A cycle number is used once per unit, whoever (replica, rerun) opens it.
    UniqueConstraint("bill_unit_id", "sequence", name="bill_cycles_unit_sequence"),
    CheckConstraint("status in ('open', 'closed')", name="bill_cycles_status"),
    CheckConstraint("(status = 'closed') = (close_time is not null)", name="bill_cycles_close_time"),
    CheckConstraint("end_time > start_time", name="bill_cycles_window"),
    # At most one open cycle per unit.
    Index("bill_cycles_one_open", "bill_unit_id", unique=True, postgresql_where=text("status = 'open'")),
    # The closer's claim: open cycles by end, in the claim's order (cycles end at the same instants).
    Index("bill_cycles_due", "end_time", "bill_cycle_id", postgresql_where=text("status = 'open'")),
    # ListBillCycles: an account's cycles, newest first.
    Index("bill_cycles_listing", "account_id", "sequence"),
)

_BILL_STATUSES = "'draft', 'issued', 'partially_paid', 'paid', 'overdue', 'void', 'written_off'"

# Since 0004: bills (docs/billing.md, "Bills").
bills = Table(
    "bills",
    metadata,
    Column("bill_id", Uuid, primary_key=True),
    Column("bill_unit_id", Uuid, ForeignKey("bill_units.bill_unit_id"), nullable=False),
    Column("account_id", Uuid, nullable=False),
    # The cycle it bills (NULL for bills of other triggers, later).
    Column("bill_cycle_id", Uuid, ForeignKey("bill_cycles.bill_cycle_id")),
    Column("status", Text, nullable=False),
    Column("bill_number", Text, unique=True),
    Column("number_series", Text),
    Column("number_sequence", BigInteger),
    Column("currency_code", Text, nullable=False),
    Column("period_start_date", Date, nullable=False),
    Column("period_end_date", Date, nullable=False),
    Column("issue_date", Date, nullable=False),
    Column("due_date", Date, nullable=False),
    Column("subtotal", Numeric(38, 9), nullable=False),
    Column("tax_total", Numeric(38, 9), nullable=False),
    Column("total", Numeric(38, 9), nullable=False),
    Column("create_time", DateTime(timezone=True), nullable=False),
    Column("issue_time", DateTime(timezone=True)),
    Column("suppressed", Boolean, nullable=False, server_default="false"),
    # Since 0005: what payments allocated to it have paid, and when it first went overdue.
    Column("paid_amount", Numeric(38, 9), nullable=False, server_default="0"),
    Column("overdue_time", DateTime(timezone=True)),
    # Since 0006: what made it (cycle, on_demand, threshold), BillNow's request id, the statement
    # (docs/billing.md, "What a bill says") and what credit notes took off it.
    Column("trigger", Text, nullable=False, server_default="cycle"),
    Column("request_id", Uuid),
    Column("previous_balance", Numeric(38, 9), nullable=False, server_default="0"),
    Column("payments_received", Numeric(38, 9), nullable=False, server_default="0"),
    Column("credits", Numeric(38, 9), nullable=False, server_default="0"),
    Column("credit_applied", Numeric(38, 9), nullable=False, server_default="0"),
    Column("amount_due", Numeric(38, 9), nullable=False, server_default="0"),
    Column("credited_amount", Numeric(38, 9), nullable=False, server_default="0"),
    # A cycle is billed once by its close, whoever (replica, rerun) bills it; bill-now and
    # threshold bills of the cycle come on top.
    Index(
        "bills_one_per_cycle", "bill_unit_id", "bill_cycle_id", unique=True, postgresql_where=text("trigger = 'cycle'")
    ),
    Index("bills_request", "bill_unit_id", "request_id", unique=True, postgresql_where=text("request_id is not null")),
    CheckConstraint("trigger in ('cycle', 'on_demand', 'threshold')", name="bills_trigger"),
    CheckConstraint("amount_due = previous_balance + total - credit_applied", name="bills_amount_due_adds_up"),
    UniqueConstraint("number_series", "number_sequence", name="bills_series_sequence"),
    CheckConstraint(f"status in ({_BILL_STATUSES})", name="bills_status"),
    # A draft has no number; every other status has one.
    CheckConstraint(
        "(status = 'draft') = (bill_number is null)"
        " and (bill_number is null) = (number_series is null)"
        " and (bill_number is null) = (number_sequence is null)",
        name="bills_numbered_when_issued",
    ),
    CheckConstraint("(status = 'draft') = (issue_time is null)", name="bills_issue_time"),
    CheckConstraint("not suppressed or (status = 'draft' and total = 0)", name="bills_suppressed_zero"),
    CheckConstraint("total = subtotal + tax_total", name="bills_total_adds_up"),
    CheckConstraint(
        "paid_amount >= 0 and credited_amount >= 0"
        " and (paid_amount + credited_amount = 0 or paid_amount + credited_amount <= total)",
        name="bills_paid_amount",
    ),
    # Payments and the overdue marker: a unit's open bills.
    Index(
        "bills_open",
        "bill_unit_id",
        "due_date",
        postgresql_where=text("status in ('issued', 'partially_paid', 'overdue')"),
    ),
    # ListBills: an account's bills, newest first.
    Index("bills_listing", "account_id", "issue_date", "create_time", "bill_id"),
    # Since 0012: a bill's statement, when the unit's last bill was issued.
    Index("bills_unit_issue", "bill_unit_id", "issue_time"),
)

bill_lines = Table(
    "bill_lines",
    metadata,
    Column("bill_id", Uuid, ForeignKey("bills.bill_id"), nullable=False),
    Column("line_number", Integer, nullable=False),
    Column("period_start_date", Date, nullable=False),
    Column("period_end_date", Date, nullable=False),
    Column("charge_offer_code", Text, nullable=False),
    Column("charge_code", Text, nullable=False),
    Column("tax_code", Text, nullable=False),
    Column("quantity", Numeric, nullable=False),
    Column("amount", Numeric(38, 9), nullable=False),
    Column("charge_count", Integer, nullable=False),
    # Since 0006: the unit price all its charges share (NULL otherwise), or their tier bands.
    Column("unit_price", Numeric),
    Column("tiers", JSONB),
    # Since 0016: the charges it sums (bill_items), sorted; before 0016 the items named their bill
    # and line. No foreign key can check an array's elements: the reconciliation does.
    Column("charge_ids", ARRAY(Uuid), nullable=False),
    PrimaryKeyConstraint("bill_id", "line_number", name="bill_lines_pkey"),
    CheckConstraint("cardinality(charge_ids) = charge_count", name="bill_lines_charge_count"),
)

bill_taxes = Table(
    "bill_taxes",
    metadata,
    Column("bill_id", Uuid, ForeignKey("bills.bill_id"), nullable=False),
    Column("tax_code", Text, nullable=False),
    Column("rate", Numeric, nullable=False),
    Column("taxable_amount", Numeric(38, 9), nullable=False),
    Column("tax_amount", Numeric(38, 9), nullable=False),
    PrimaryKeyConstraint("bill_id", "tax_code", name="bill_taxes_pkey"),
)

# Since 0004: the charges billing received (ChargesCreated). Since 0016 an item is written once:
# billing it writes the bill's lines (their charge ids) and, for a bill issued while its cycle goes
# on, the cycle's `billed_through_seq`, never the item (docs/billing.md, "Items and bills").
bill_items = Table(
    "bill_items",
    metadata,
    # One item per charge, whatever the redeliveries.
    Column("charge_id", Uuid, primary_key=True),
    Column("account_id", Uuid, nullable=False),
    Column("bill_unit_id", Uuid, ForeignKey("bill_units.bill_unit_id"), nullable=False),
    # The cycle it is billed in.
    Column("bill_cycle_id", Uuid, ForeignKey("bill_cycles.bill_cycle_id"), nullable=False),
    # The cycle charging rated it into (NULL when the charge named none).
    Column("rated_bill_cycle_id", Uuid),
    Column("kind", Text, nullable=False),
    Column("event_id", Text, nullable=False),
    Column("charge_offer_code", Text, nullable=False),
    Column("charge_offer_version", Integer, nullable=False),
    Column("charge_code", Text, nullable=False),
    Column("tax_code", Text, nullable=False),
    Column("quantity", Numeric, nullable=False),
    Column("amount", Numeric(38, 9), nullable=False),
    Column("currency_code", Text, nullable=False),
    Column("event_time", DateTime(timezone=True), nullable=False),
    Column("late", Boolean, nullable=False),
    # The local dates of the period its event time falls in.
    Column("period_start_date", Date, nullable=False),
    Column("period_end_date", Date, nullable=False),
    Column("receive_time", DateTime(timezone=True), nullable=False),
    # Before 0016, the bill and line it is on (NULL while unbilled). Neither read nor written
    # since: kept for replicas of the release before while they drain (their bills fail: their
    # lines lack charge_ids, deploy/README.md "Upgrades"), dropped in a later release.
    Column("bill_id", Uuid),
    Column("bill_line_number", Integer),
    # Since 0006: the charge's exact amount before rounding and its tier bands, as charging priced it.
    Column("unrounded_amount", Numeric),
    Column("tiers", JSONB),
    # Since 0016: the order billing received its items in (one sequence for all), taken while its
    # cycle is share-locked, so a bill holding the cycle locked sees every item below any it sees.
    # The sequence must hand out values in order across sessions: CACHE 1 (the default; a session
    # caching a block could insert below a mark already moved past it).
    Column("seq", BigInteger, Identity(), nullable=False),
    # A cycle's items above its billed_through_seq, one range: the bill run, bill now, thresholds
    # and ListUnbilledItems (whose pages sort that range by event time: one index entry less per
    # item received, docs/billing.md "Items and bills").
    Index("bill_items_unbilled", "bill_cycle_id", "seq"),
)

# Since 0004: the last number of each bill number series, taken with UPDATE ... RETURNING in the
# issuing transaction (a rolled-back issue leaves no gap).
bill_number_series = Table(
    "bill_number_series",
    metadata,
    Column("series_key", Text, primary_key=True),
    Column("last_number", BigInteger, nullable=False),
    CheckConstraint("last_number >= 0", name="bill_number_series_last_number"),
)

# Since 0005: the payments billing received from balance (PaymentRecorded), with what no open bill
# took (the account's credit, applied to its next bills), and what each paid on which bill.
payments = Table(
    "payments",
    metadata,
    Column("payment_id", Uuid, primary_key=True),
    Column("account_id", Uuid, nullable=False),
    Column("currency_code", Text, nullable=False),
    Column("amount", Numeric(38, 9), nullable=False),
    Column("unallocated", Numeric(38, 9), nullable=False),
    Column("reversed", Boolean, nullable=False),
    Column("received_time", DateTime(timezone=True), nullable=False),
    Column("record_time", DateTime(timezone=True), nullable=False),
    # Since 0011: the sequence of the last PaymentAllocated published for the payment (0: none yet).
    Column("allocation_sequence", Integer, nullable=False, server_default="0"),
    CheckConstraint("unallocated >= 0 and unallocated <= amount", name="payments_unallocated"),
    CheckConstraint("allocation_sequence >= 0", name="payments_allocation_sequence"),
    CheckConstraint("not reversed or unallocated = 0", name="payments_reversed_no_credit"),
    Index("payments_credit", "account_id", "received_time", "payment_id", postgresql_where=text("unallocated > 0")),
    # Since 0012: a bill's statement, the payments recorded since the unit's last bill.
    Index("payments_account_record", "account_id", "record_time"),
)

payment_allocations = Table(
    "payment_allocations",
    metadata,
    Column("payment_id", Uuid, ForeignKey("payments.payment_id"), nullable=False),
    Column("bill_id", Uuid, ForeignKey("bills.bill_id"), nullable=False),
    Column("amount", Numeric(38, 9), nullable=False),
    Column("create_time", DateTime(timezone=True), nullable=False),
    # A payment pays a bill once: a redelivery allocates nothing twice.
    PrimaryKeyConstraint("payment_id", "bill_id", name="payment_allocations_pkey"),
    CheckConstraint("amount > 0", name="payment_allocations_amount"),
    Index("payment_allocations_bill", "bill_id"),
)

# Since 0006: credit notes (docs/billing.md, "Credit notes"), their lines, what each took off
# which bill, and their own gapless number series.
credit_notes = Table(
    "credit_notes",
    metadata,
    Column("credit_note_id", Uuid, primary_key=True),
    Column("bill_id", Uuid, ForeignKey("bills.bill_id"), nullable=False),
    Column("bill_unit_id", Uuid, ForeignKey("bill_units.bill_unit_id"), nullable=False),
    Column("account_id", Uuid, nullable=False),
    Column("request_id", Uuid, nullable=False),
    Column("credit_note_number", Text, nullable=False, unique=True),
    Column("number_series", Text, nullable=False),
    Column("number_sequence", BigInteger, nullable=False),
    Column("currency_code", Text, nullable=False),
    Column("reason", Text, nullable=False),
    Column("actor", Text, nullable=False),
    Column("subtotal", Numeric(38, 9), nullable=False),
    Column("tax_total", Numeric(38, 9), nullable=False),
    Column("total", Numeric(38, 9), nullable=False),
    Column("issue_date", Date, nullable=False),
    Column("issue_time", DateTime(timezone=True), nullable=False),
    Column("voids_bill", Boolean, nullable=False),
    # What no bill took yet: the account's credit, applied to its next bills.
    Column("unallocated", Numeric(38, 9), nullable=False),
    # Since 0013: the sequence of the last CreditNoteAllocated published for the note (1 at issue;
    # the default, so notes inserted without it, before 0013 or by older replicas, count as announced).
    Column("allocation_sequence", Integer, nullable=False, server_default="1"),
    UniqueConstraint("number_series", "number_sequence", name="credit_notes_series_sequence"),
    UniqueConstraint("bill_unit_id", "request_id", name="credit_notes_request"),
    CheckConstraint("total = subtotal + tax_total", name="credit_notes_total_adds_up"),
    CheckConstraint("total > 0", name="credit_notes_total"),
    CheckConstraint("unallocated >= 0 and unallocated <= total", name="credit_notes_unallocated"),
    CheckConstraint("allocation_sequence >= 0", name="credit_notes_allocation_sequence"),
    Index("credit_notes_listing", "account_id", "issue_time", "credit_note_id"),
    Index("credit_notes_bill", "bill_id"),
    Index(
        "credit_notes_credit", "account_id", "issue_time", "credit_note_id", postgresql_where=text("unallocated > 0")
    ),
)

credit_note_lines = Table(
    "credit_note_lines",
    metadata,
    Column("credit_note_id", Uuid, ForeignKey("credit_notes.credit_note_id"), nullable=False),
    Column("line_number", Integer, nullable=False),
    Column("bill_line_number", Integer, nullable=False),
    Column("charge_offer_code", Text, nullable=False),
    Column("charge_code", Text, nullable=False),
    Column("tax_code", Text, nullable=False),
    Column("amount", Numeric(38, 9), nullable=False),
    PrimaryKeyConstraint("credit_note_id", "line_number", name="credit_note_lines_pkey"),
    UniqueConstraint("credit_note_id", "bill_line_number", name="credit_note_lines_bill_line"),
)

credit_note_allocations = Table(
    "credit_note_allocations",
    metadata,
    Column("credit_note_id", Uuid, ForeignKey("credit_notes.credit_note_id"), nullable=False),
    Column("bill_id", Uuid, ForeignKey("bills.bill_id"), nullable=False),
    Column("amount", Numeric(38, 9), nullable=False),
    Column("create_time", DateTime(timezone=True), nullable=False),
    PrimaryKeyConstraint("credit_note_id", "bill_id", name="credit_note_allocations_pkey"),
    CheckConstraint("amount > 0", name="credit_note_allocations_amount"),
    Index("credit_note_allocations_bill", "bill_id"),
)

credit_note_number_series = Table(
    "credit_note_number_series",
    metadata,
    Column("series_key", Text, primary_key=True),
    Column("last_number", BigInteger, nullable=False),
    CheckConstraint("last_number >= 0", name="credit_note_number_series_last_number"),
)

# Since 0007: what billing keeps of customer's accounts and contacts for documents and delivery
# (docs/billing.md, "Documents"); ordered by customer's update times.
account_details = Table(
    "account_details",
    metadata,
    Column("account_id", Uuid, primary_key=True),
    Column("account_number", Text, nullable=False, server_default=""),
    Column("display_name", Text, nullable=False, server_default=""),
    Column("tax_id", Text, nullable=False, server_default=""),
    Column("country_code", Text, nullable=False, server_default=""),
    Column("locale", Text, nullable=False, server_default=""),
    Column("delivery_method", Text, nullable=False, server_default="email"),
    Column("personal_data_erased", Boolean, nullable=False, server_default="false"),
    Column("update_time", DateTime(timezone=True), nullable=False),
    CheckConstraint("delivery_method in ('email', 'postal', 'portal')", name="account_details_delivery_method"),
)

account_contacts = Table(
    "account_contacts",
    metadata,
    Column("contact_id", Uuid, primary_key=True),
    Column("account_id", Uuid, nullable=False),
    Column("role", Text, nullable=False),
    Column("name", Text, nullable=False, server_default=""),
    Column("email", Text),
    Column("postal_address", JSONB),
    # Removed by customer: kept, so an older change arriving later does not bring it back.
    Column("removed", Boolean, nullable=False, server_default="false"),
    Column("update_time", DateTime(timezone=True), nullable=False),
    Index("account_contacts_account", "account_id"),
)

# Since 0007: each issued bill's PDF, kept as first rendered.
bill_documents = Table(
    "bill_documents",
    metadata,
    Column("bill_id", Uuid, ForeignKey("bills.bill_id"), primary_key=True),
    Column("content_type", Text, nullable=False),
    Column("file_name", Text, nullable=False),
    Column("content", LargeBinary, nullable=False),
    Column("sha256", Text, nullable=False),
    Column("render_time", DateTime(timezone=True), nullable=False),
)

# Since 0007: the email delivery of each issued bill, added by the trigger
# bills_delivery_when_issued in the issuing transaction (docs/billing.md, "Delivery").
bill_deliveries = Table(
    "bill_deliveries",
    metadata,
    Column("bill_id", Uuid, ForeignKey("bills.bill_id"), primary_key=True),
    Column("account_id", Uuid, nullable=False),
    Column("state", Text, nullable=False),
    Column("attempts", Integer, nullable=False, server_default="0"),
    Column("next_attempt_time", DateTime(timezone=True)),
    Column("last_attempt_time", DateTime(timezone=True)),
    Column("last_error", Text, nullable=False, server_default=""),
    Column("sent_time", DateTime(timezone=True)),
    Column("recipients", ARRAY(Text), nullable=False, server_default="{}"),
    Column("message_id", Text, nullable=False, server_default=""),
    Column("create_time", DateTime(timezone=True), nullable=False),
    CheckConstraint(
        "state in ('pending', 'sent', 'failed', 'no_recipient', 'not_by_email')", name="bill_deliveries_state"
    ),
    CheckConstraint("attempts >= 0", name="bill_deliveries_attempts"),
    CheckConstraint("(state = 'pending') = (next_attempt_time is not null)", name="bill_deliveries_due"),
    CheckConstraint("(state = 'sent') = (sent_time is not null)", name="bill_deliveries_sent_time"),
    # The delivery loop's claim: pending deliveries by due time.
    Index("bill_deliveries_pending", "next_attempt_time", postgresql_where=text("state = 'pending'")),
)

outbox, inbox = messaging_tables(metadata)
