"""Rerating, credit limits, the replicas' cache and the idempotency horizon.

- usage_events: the event time (window of a rerating run), the cycle its units counted in and its
  place in the cycle's rating order (rerating re-counts tiers in that order), an index to expire
  rated events past the idempotency horizon;
- charges: the rerating run that made a reversing or new charge, and the charge a new one replaces;
- rerate_runs: one row per RerateUsage run;
- credit_states: balance's CreditLimitExceeded / CreditLimitRestored, per (account, group name);
- cache_generation: bumped by every transaction that changes what the replicas cache.

Revision ID: 0008
Revises: 0007
Create Date: 2027-02-01
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("usage_events", sa.Column("event_time", sa.DateTime(timezone=True)))
    op.add_column("usage_events", sa.Column("bill_cycle_id", sa.Uuid))
    op.add_column("usage_events", sa.Column("rate_seq", sa.BigInteger))
    op.execute("UPDATE usage_events SET event_time = (payload->>'event_time')::timestamptz")
    # Events rated before 0008: their cycle is their first charge's (an event rated to zero, inside
    # a free allowance, has none and stays unknown); their rating order, the order received.
    op.execute(
        "UPDATE usage_events u SET bill_cycle_id = c.bill_cycle_id, rate_seq = u.seq "
        "FROM charges c WHERE u.status = 'rated' AND c.charge_id = u.charge_ids[1]"
    )
    op.execute("UPDATE usage_events SET rate_seq = seq WHERE status = 'rated' AND rate_seq IS NULL")
    op.alter_column("usage_events", "event_time", nullable=False)
    op.execute("CREATE SEQUENCE usage_rate_seq")
    op.execute("SELECT setval('usage_rate_seq', COALESCE((SELECT max(seq) FROM usage_events), 0) + 1, false)")
    op.create_index(
        "usage_events_rated_window",
        "usage_events",
        ["account_id", "event_time"],
        postgresql_where=sa.text("status = 'rated'"),
    )
    op.create_index(
        "usage_events_rated_cycle",
        "usage_events",
        ["bill_cycle_id", "rate_seq"],
        postgresql_where=sa.text("status = 'rated'"),
    )
    op.create_index(
        "usage_events_expiry", "usage_events", ["receive_time"], postgresql_where=sa.text("status = 'rated'")
    )

    op.add_column("charges", sa.Column("rerate_run_id", sa.Uuid))
    op.add_column("charges", sa.Column("replaces_charge_id", sa.Uuid))
    op.create_index("charges_account_event", "charges", ["account_id", "event_id"])
    op.create_index(
        "charges_reverses",
        "charges",
        ["reverses_charge_id"],
        postgresql_where=sa.text("reverses_charge_id IS NOT NULL"),
    )

    op.create_table(
        "rerate_runs",
        sa.Column("rerate_run_id", sa.Uuid, primary_key=True),
        sa.Column("account_id", sa.Uuid, nullable=False),
        sa.Column("start_time", sa.DateTime(timezone=True), nullable=False),
        sa.Column("end_time", sa.DateTime(timezone=True), nullable=False),
        sa.Column("charge_offer_code", sa.Text, nullable=False),
        sa.Column("request_id", sa.Text, nullable=False, unique=True),
        sa.Column("events_rerated", sa.Integer, nullable=False),
        sa.Column("events_changed", sa.Integer, nullable=False),
        sa.Column("charges_reversed", sa.Integer, nullable=False),
        sa.Column("charges_created", sa.Integer, nullable=False),
        sa.Column("net_amount", sa.Numeric(38, 9), nullable=False),
        sa.Column("currency_code", sa.Text, nullable=False),
        sa.Column("create_time", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index("rerate_runs_account", "rerate_runs", ["account_id", "create_time"])

    op.create_table(
        "credit_states",
        sa.Column("account_id", sa.Uuid, nullable=False),
        sa.Column("balance_group_name", sa.Text, nullable=False),
        sa.Column("is_default", sa.Boolean, nullable=False),
        sa.Column("exceeded", sa.Boolean, nullable=False),
        sa.Column("credit_state_version", sa.BigInteger, nullable=False),
        sa.Column("update_time", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("account_id", "balance_group_name", name="credit_states_pkey"),
    )

    op.create_table(
        "cache_generation",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("generation", sa.BigInteger, nullable=False),
        sa.CheckConstraint("id = 1", name="cache_generation_one_row"),
    )
    op.execute("INSERT INTO cache_generation (id, generation) VALUES (1, 0)")


def downgrade() -> None:
    op.drop_table("cache_generation")
    op.drop_table("credit_states")
    op.drop_index("rerate_runs_account", "rerate_runs")
    op.drop_table("rerate_runs")
    op.drop_index("charges_reverses", "charges")
    op.drop_index("charges_account_event", "charges")
    op.drop_column("charges", "replaces_charge_id")
    op.drop_column("charges", "rerate_run_id")
    op.drop_index("usage_events_expiry", "usage_events")
    op.drop_index("usage_events_rated_cycle", "usage_events")
    op.drop_index("usage_events_rated_window", "usage_events")
    op.execute("DROP SEQUENCE usage_rate_seq")
    op.drop_column("usage_events", "rate_seq")
    op.drop_column("usage_events", "bill_cycle_id")
    op.drop_column("usage_events", "event_time")
