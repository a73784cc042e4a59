"""Usage ingest end to end: RecordUsage, RecordUsageBatch and StreamUsage against charging, and the
delay until balance has booked every charge they made.

Acceptance is charging's commit of the charge (the call answers right after it; fsync on, so the
charge is durable); "applied" is balance's commit of the ledger entry and balance move for that
charge. Both instants are PostgreSQL commit timestamps (`track_commit_timestamp`, which the
harness turns on in the embedded server it starts), read after the run from the two services'
databases: no polling during the run, no clock shared between processes other than the server's.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta

import asyncpg
import grpc
from evolutivo.charging.v1 import catalog_pb2, usage_pb2
from evolutivo.charging.v1 import charging_service_pb2 as charging_pb
from evolutivo.charging.v1 import charging_service_pb2_grpc as charging_grpc
from evolutivo.customer.v1 import account_pb2, purchase_pb2
from evolutivo.customer.v1 import customer_service_pb2 as customer_pb
from evolutivo.customer.v1 import customer_service_pb2_grpc as customer_grpc
from evolutivo_runtime.timestamps import to_timestamp

from bench.common import Figure, closed_loop, open_loop, percentile

RATED = usage_pb2.USAGE_STATUS_RATED


@dataclass
class Fixture:
    """An activated offer and `accounts` accounts that bought it, known to charging and balance."""

    charging: list[charging_grpc.ChargingServiceAsyncStub]
    accounts: list[str]
    used_at: datetime
    run: str = field(default_factory=lambda: uuid.uuid4().hex[:8])

    def stub(self, worker: int) -> charging_grpc.ChargingServiceAsyncStub:
        """Workers spread over charging's replicas."""
        return self.charging[worker % len(self.charging)]

    def events(self, phase: str, seq: int, count: int, workers: int) -> list[usage_pb2.UsageEvent]:
        """New events (ids unique per run, phase and call) of the worker's own accounts: each
        worker rates a disjoint share of the accounts, as independent platforms would, so calls do
        not queue on one another's usage counters."""
        at = to_timestamp(self.used_at)
        worker = seq // 1_000_000
        share = self.accounts[worker % workers :: workers] or self.accounts
        return [
            usage_pb2.UsageEvent(
                event_id=f"bench-{self.run}-{phase}-{seq}-{i}",
                account_id=share[(seq + i) % len(share)],
                event_type="api.call",
                event_time=at,
                quantity="3",
            )
            for i in range(count)
        ]


async def prepare(
    charging_channels: Sequence[grpc.aio.Channel], customer_channel: grpc.aio.Channel, accounts: int
) -> Fixture:
    """An offer (graduated price, every tier priced, so every event makes a non-zero charge) and the
    accounts with a purchase of it, created through customer as a user would; returns once charging
    rates every account (it learns accounts, purchases and cycles over NATS)."""
    charging = [charging_grpc.ChargingServiceStub(c) for c in charging_channels]
    customer = customer_grpc.CustomerServiceStub(customer_channel)
    code = f"bench_{uuid.uuid4().hex[:8]}"
    created = await charging[0].CreateChargeOffer(
        charging_pb.CreateChargeOfferRequest(
            request_id=str(uuid.uuid4()),
            charge_offer=catalog_pb2.ChargeOffer(
                code=code,
                name="Bench",
                currency_code="EUR",
                valid_from=to_timestamp(datetime.now(UTC) - timedelta(days=1)),
                charges=[
                    catalog_pb2.Charge(
                        code="api_calls",
                        name="API calls",
                        event_type="api.call",
                        graduated=catalog_pb2.TieredPrice(
                            tiers=[
                                catalog_pb2.Tier(up_to="1000", unit_price="0.002"),
                                catalog_pb2.Tier(up_to="100000", unit_price="0.0015"),
                                catalog_pb2.Tier(unit_price="0.001", flat_fee="2.50"),
                            ]
                        ),
                    )
                ],
            ),
        )
    )
    await charging[0].ActivateChargeOffer(
        charging_pb.ActivateChargeOfferRequest(charge_offer_id=created.charge_offer.charge_offer_id)
    )

    async def account(n: int) -> str:
        made = await customer.CreateAccount(
            customer_pb.CreateAccountRequest(
                request_id=str(uuid.uuid4()),
                account=account_pb2.Account(
                    type=account_pb2.ACCOUNT_TYPE_BUSINESS,
                    display_name=f"Bench {n}",
                    currency_code="EUR",
                    time_zone="Europe/Madrid",
                ),
            )
        )
        await customer.CreatePurchase(
            customer_pb.CreatePurchaseRequest(
                account_id=made.account.account_id, purchase=purchase_pb2.Purchase(charge_offer_code=code)
            )
        )
        return str(made.account.account_id)

    ids: list[str] = []
    for start in range(0, accounts, 10):
        ids += await asyncio.gather(*(account(n) for n in range(start, min(accounts, start + 10))))
    fixture = Fixture(charging, ids, datetime.now(UTC) + timedelta(seconds=2))
    await asyncio.sleep(2.5)  # the usage's time is after every purchase's start
    deadline = time.monotonic() + 120
    pending = set(ids)
    while pending:
        probe = [
            usage_pb2.UsageEvent(
                event_id=f"bench-warm-{uuid.uuid4().hex}",
                account_id=a,
                event_type="api.call",
                event_time=to_timestamp(fixture.used_at),
                quantity="1",
            )
            for a in sorted(pending)
        ]
        results = (await charging[0].RecordUsageBatch(charging_pb.RecordUsageBatchRequest(events=probe))).results
        pending = {e.account_id for e, r in zip(probe, results, strict=True) if r.status != RATED}
        if pending:
            if time.monotonic() > deadline:
                raise RuntimeError(f"charging did not learn {len(pending)} accounts in time")
            await asyncio.sleep(0.5)
    return fixture


@dataclass
class Databases:
    charging: asyncpg.Pool
    balance: asyncpg.Pool


# Events per account rated before the figures, then every database analyzed: see `history`.
HISTORY_EVENTS_PER_ACCOUNT = 25


async def history(fixture: Fixture, db: Databases, database_urls: Sequence[str], timeout: float) -> int:
    """Rates HISTORY_EVENTS_PER_ACCOUNT events per account (in batches, not measured), waits until
    balance booked them, then ANALYZEs every service's database: the state a deployment is in after
    its first minutes, when autovacuum has analyzed the tables it writes. Measured from tables just
    created instead, the point lookups' prepared statements keep the generic plan they got while the
    tables were empty (a sequential scan, which reads the whole table as it grows) until
    autovacuum's first ANALYZE, a minute later; a 20 s run never sees that minute end
    (docs/performance.md, "Twelfth round"). Returns the events rated."""
    after = await last_charge_seq(db)
    events = fixture.events("history", 0, HISTORY_EVENTS_PER_ACCOUNT * len(fixture.accounts), 1)
    for start in range(0, len(events), 500):
        answered = await fixture.charging[0].RecordUsageBatch(
            charging_pb.RecordUsageBatchRequest(events=events[start : start + 500])
        )
        refused = [r.event_id for r in answered.results if r.status != RATED]
        if refused:
            raise RuntimeError(f"the history's events were not rated: {refused[:3]}")
    booked = await end_to_end(db, after, timeout)
    if booked.get("unbooked"):
        raise RuntimeError(f"balance did not book {booked['unbooked']:.0f} of the history's charges in time")
    for url in database_urls:
        conn = await asyncpg.connect(url)
        try:
            await conn.execute("ANALYZE")
        finally:
            await conn.close()
    return len(events)


async def last_charge_seq(db: Databases) -> int:
    return int(await db.charging.fetchval("SELECT coalesce(max(seq), 0) FROM charges"))


async def end_to_end(db: Databases, after_seq: int, timeout: float) -> dict[str, float]:
    """For the charges made after `after_seq`: waits (up to `timeout` s) until balance booked them
    all, then the end-to-end rate (charges / first acceptance to last booking) and the delays from
    acceptance to booking (p50/p99/max, ms). Charges balance did not book in time count as
    `unbooked` and leave the rate and delays at what was booked."""
    accepted = {
        r["charge_id"]: r["committed"]
        for r in await db.charging.fetch(
            "SELECT charge_id::text AS charge_id, pg_xact_commit_timestamp(xmin) AS committed "
            "FROM charges WHERE seq > $1",
            after_seq,
        )
    }
    ids = list(accepted)
    if not ids:
        return {}
    where = "FROM ledger_entries WHERE type = 'charge' AND source_type = 'charge' AND source_id = ANY($1::text[])"
    deadline = time.monotonic() + timeout
    booked = 0
    while time.monotonic() < deadline:
        booked = int(await db.balance.fetchval(f"SELECT count(*) {where}", ids))
        if booked >= len(ids):
            break
        await asyncio.sleep(0.5)  # balance books on its own time: polled, bounded by the deadline
    query = f"SELECT source_id, pg_xact_commit_timestamp(xmin) AS committed {where}"
    applied = {r["source_id"]: r["committed"] for r in await db.balance.fetch(query, ids)}
    delays = [(applied[c] - accepted[c]).total_seconds() for c in ids if c in applied]
    first = min(accepted.values())
    last = max(applied.values()) if applied else first
    span = max((last - first).total_seconds(), 1e-6)
    return {
        "e2e_rate": len(applied) / span,
        "lag_p50_ms": percentile(delays, 0.50),
        "lag_p99_ms": percentile(delays, 0.99),
        "lag_max_ms": percentile(delays, 1.0),
        "charges": float(len(ids)),
        "unbooked": float(len(ids) - booked),
    }


async def measure(
    fixture: Fixture,
    db: Databases,
    kind: str,
    seconds: float,
    concurrency: int,
    batch: int,
    slices: int,
    repeat: int,
    settle_timeout: float,
    rate: float = 0.0,
) -> Figure:
    """One run of one ingest call (`single`, `batch` or `stream`, as fast as `concurrency` clients
    go; `paced`: single calls started at a fixed `rate`, whether the earlier ones answered or not),
    then its end-to-end figures."""
    phase = f"{kind}{repeat}"

    async def single(seq: int) -> int:
        (event,) = fixture.events(phase, seq, 1, concurrency)
        result = (await fixture.stub(seq // 1_000_000).RecordUsage(charging_pb.RecordUsageRequest(event=event))).result
        assert result.status == RATED, result
        return 1

    async def batched(seq: int) -> int:
        events = fixture.events(phase, seq, batch, concurrency)
        stub = fixture.stub(seq // 1_000_000)
        results = (await stub.RecordUsageBatch(charging_pb.RecordUsageBatchRequest(events=events))).results
        assert all(r.status == RATED for r in results)
        return len(results)

    async def streamed(seq: int) -> int:
        async def requests() -> AsyncIterator[charging_pb.StreamUsageRequest]:
            for s in range(slices):
                yield charging_pb.StreamUsageRequest(events=fixture.events(f"{phase}s{s}", seq, batch, concurrency))

        answer = await fixture.stub(seq // 1_000_000).StreamUsage(requests())
        assert all(r.status == RATED for r in answer.results)
        return len(answer.results)

    async def paced(seq: int) -> None:
        await single(seq)

    before = await last_charge_seq(db)
    if kind == "paced":
        notes = "1 event per call, open loop: the latency single calls see below the most they take"
        figure = await open_loop(seconds, rate, paced, f"RecordUsage at {rate:g}/s", "events/s", notes)
    elif kind == "single":
        figure = await closed_loop(seconds, concurrency, single, "RecordUsage", "events/s", "1 event per call")
    elif kind == "batch":
        figure = await closed_loop(
            seconds, concurrency, batched, "RecordUsageBatch", "events/s", f"{batch} events per call"
        )
    else:
        figure = await closed_loop(
            seconds, concurrency, streamed, "StreamUsage", "events/s", f"{slices} slices x {batch} events per call"
        )
    return replace(figure, extra=figure.extra | await end_to_end(db, before, settle_timeout))
