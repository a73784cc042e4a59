"""The bill run: N accounts with 10 unbilled charges each, billed by billing's cycle closer.

Seeding goes straight into billing's own tables (bill_units, bill_cycles, bill_items), in ONE
transaction of set-based SQL (INSERT ... SELECT over generate_series), as billing's ChargesCreated
consumer would have left them: one bill unit per account (EUR, Europe/Madrid, monthly), its first
cycle open and already due (its window computed with billing's own calendar, ended more than the
late-usage delay ago), and 10 unbilled items on two charge codes (two bill lines). No customer,
charging or balance record stands behind these accounts: the run measures billing alone, the way
it runs (the closer of the running billing service), with the rest of the suite consuming the
events it publishes (BillIssued, BillCycleClosed, BillCycleOpened).

The run starts when the seeding commits and ends at the commit of the last of the N bills, both
PostgreSQL commit timestamps. The closer polls every BILLING_CYCLE_CHECK_SECONDS (the harness sets 1 s),
which the figure includes.

PDF rendering is measured separately afterwards: GetBillDocument on bills of the run not rendered
before (each call renders one PDF and keeps it), from `concurrency` clients.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import asyncpg
import grpc
from evolutivo.billing.v1 import billing_service_pb2_grpc as billing_grpc
from evolutivo.billing.v1 import document_pb2
from evolutivo_billing.domain import calendar

from bench.common import Figure, closed_loop

TIME_ZONE = "Europe/Madrid"
CHARGES_PER_ACCOUNT = 10
# The rows SEED writes per account, by "service.table" (bench/row_writes.py counts them out).
SEEDED_ROWS_PER_ACCOUNT = {"billing.bill_units": 1, "billing.bill_cycles": 1, "billing.bill_items": CHARGES_PER_ACCOUNT}


def due_window(now: datetime, late_usage_delay: timedelta) -> tuple[int, calendar.Cycle]:
    """A bill-cycle day and a first cycle under it that is due now (ended more than the delay ago)
    while the cycle after it is not, so each seeded unit gets exactly one bill."""
    created = now - timedelta(days=20)
    for day in range(1, 29):
        first = calendar.first_cycle(created, day, calendar.Frequency.MONTHLY, TIME_ZONE)
        following = calendar.next_cycle(first, day, calendar.Frequency.MONTHLY, TIME_ZONE)
        if first.end <= now - late_usage_delay - timedelta(hours=1) and following.end > now + timedelta(hours=1):
            return day, first
    raise RuntimeError("no billing day gives a due first cycle")  # 28 days always hold one


SEED = """
WITH units AS (
    INSERT INTO bill_units (bill_unit_id, account_id, currency_code, time_zone, bill_cycle_day,
                            billing_frequency, payment_terms_days, create_time)
    SELECT gen_random_uuid(), gen_random_uuid(), 'EUR', $1, $2, 'monthly', 30, $3
    FROM generate_series(1, $4)
    RETURNING bill_unit_id, account_id
), cycles AS (
    INSERT INTO bill_cycles (bill_cycle_id, bill_unit_id, account_id, sequence, start_time, end_time,
                             start_date, end_date, time_zone, status)
    SELECT gen_random_uuid(), bill_unit_id, account_id, 1, $5, $6, $7, $8, $1, 'open' FROM units
    RETURNING bill_cycle_id, bill_unit_id, account_id
)
INSERT INTO bill_items (charge_id, account_id, bill_unit_id, bill_cycle_id, rated_bill_cycle_id, kind,
                        event_id, charge_offer_code, charge_offer_version, charge_code, tax_code, quantity,
                        amount, currency_code, event_time, late, period_start_date, period_end_date,
                        receive_time, unrounded_amount)
SELECT gen_random_uuid(), c.account_id, c.bill_unit_id, c.bill_cycle_id, c.bill_cycle_id, 'usage',
       'bench-' || c.bill_cycle_id || '-' || i, 'bench_offer', 1,
       CASE WHEN i % 2 = 0 THEN 'api_calls' ELSE 'storage' END, 'standard', 3,
       0.01 * i, 'EUR', $5 + interval '1 hour' * i, false, $7, $8, $3, 0.01 * i
FROM cycles AS c, generate_series(1, $9) AS i
"""


@dataclass
class Seeded:
    marker: datetime  # the units' create_time: tells the seeded units from any other
    committed: datetime
    seconds: float
    cycles_end: datetime  # the end of the seeded units' due cycle


async def seed(billing_db: asyncpg.Pool, accounts: int, late_usage_delay: timedelta) -> Seeded:
    now = datetime.now(UTC)
    day, window = due_window(now, late_usage_delay)
    # A unique instant (microseconds drawn at random) marks this run's units.
    marker = now.replace(microsecond=uuid.uuid4().int % 1_000_000) - timedelta(days=20)
    began = time.perf_counter()
    async with billing_db.acquire() as conn, conn.transaction():
        await conn.execute(
            SEED,
            TIME_ZONE,
            day,
            marker,
            accounts,
            window.start,
            window.end,
            window.start_date,
            window.end_date,
            CHARGES_PER_ACCOUNT,
        )
        # A month of activity leaves these tables with statistics; a seed just made would leave the
        # planner believing them nearly empty (a sort of every due cycle at each claim, until
        # autovacuum's ANALYZE). ANALYZE in the seed's transaction counts its rows and commits with it.
        await conn.execute("ANALYZE bill_units, bill_cycles, bill_items")
        xid = await conn.fetchval("SELECT txid_current()")
    committed = await billing_db.fetchval("SELECT pg_xact_commit_timestamp($1::text::xid)", str(xid % 2**32))
    return Seeded(marker, committed, time.perf_counter() - began, window.end)


BILLED = """
SELECT count(*) AS bills, max(pg_xact_commit_timestamp(b.xmin)) AS last
FROM bills AS b JOIN bill_units AS u USING (bill_unit_id)
WHERE u.create_time = $1 AND b.trigger = 'cycle' AND b.bill_number IS NOT NULL AND b.status = 'issued'
"""


# Polled while the run goes on: the seeded cycles still open, through the closer's own partial index.
# BILLED is counted once they are closed, and the figure's end is the last bill's commit time, so the
# poll's period only delays the report: every 2 s, since until a vacuum the index keeps the closed
# cycles' entries and a poll walks them (47 ms and ~24,000 buffers a poll late in a 100,000-account run).
DUE_LEFT_POLL_SECONDS = 2.0
DUE_LEFT = "SELECT count(*) FROM bill_cycles WHERE status = 'open' AND end_time <= $1"


async def bill_run(
    billing_db: asyncpg.Pool,
    accounts: int,
    late_usage_delay: timedelta,
    timeout: float,
    after_seed: Callable[[], object] | None = None,
) -> Figure:
    """The bill run over `accounts` seeded accounts; `after_seed` is called once the seed has
    committed (where the caller starts counting the run's CPU: the seed is the harness's work)."""
    seeded = await seed(billing_db, accounts, late_usage_delay)
    if after_seed is not None:
        after_seed()
    deadline = time.monotonic() + timeout
    while True:
        if not await billing_db.fetchval(DUE_LEFT, seeded.cycles_end) or time.monotonic() > deadline:
            break
        await asyncio.sleep(DUE_LEFT_POLL_SECONDS)
    row = await billing_db.fetchrow(BILLED, seeded.marker)
    bills = int(row["bills"])
    span = (row["last"] - seeded.committed).total_seconds() if row["last"] else timeout
    return Figure(
        "Bill run (cycle closer)",
        "bills/s",
        bills / max(span, 1e-6),
        operations=bills,
        items=bills * CHARGES_PER_ACCOUNT,
        seconds=round(span, 2),
        notes=f"{accounts} accounts x {CHARGES_PER_ACCOUNT} charges; seeded in {seeded.seconds:.1f} s",
        extra={
            "bills": float(bills),
            "missing": float(accounts - bills),
            "projected_seconds_100k": 100_000 / (bills / span) if bills and span > 0 else float("inf"),
        },
    )


async def pdf_rate(
    billing_db: asyncpg.Pool, channel: grpc.aio.Channel, seconds: float, concurrency: int, limit: int
) -> Figure:
    """GetBillDocument on issued bills without a kept document, one render each."""
    rows = await billing_db.fetch(
        "SELECT b.bill_id::text AS bill_id FROM bills AS b WHERE b.bill_number IS NOT NULL "
        "AND NOT EXISTS (SELECT 1 FROM bill_documents AS d WHERE d.bill_id = b.bill_id) LIMIT $1",
        limit,
    )
    bill_ids = iter([r["bill_id"] for r in rows])
    billing = billing_grpc.BillingServiceStub(channel)

    async def render(_: int) -> int:
        bill_id = next(bill_ids, None)
        if bill_id is None:
            await asyncio.sleep(0.01)  # every bill rendered: the loop ends with its time
            return 0
        answer = await billing.GetBillDocument(document_pb2.GetBillDocumentRequest(bill_id=bill_id))
        assert answer.document.content[:4] == b"%PDF"
        return 1

    return await closed_loop(
        seconds,
        concurrency,
        render,
        "Bill PDF render (GetBillDocument)",
        "PDFs/s",
        "render + keep, new bill each; read rate limit lifted",
    )
