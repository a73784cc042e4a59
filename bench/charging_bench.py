"""Charging's rating throughput and latency beside the raw PostgreSQL and NATS ceilings of the same run.

Starts the whole stack as the end-to-end tests do (embedded PostgreSQL and NATS, the five services
as processes, `deploy/local/evolutivo_stack`), makes an offer and `--accounts` accounts with a
purchase, then for `--seconds` each measures:

- charging over gRPC: `RecordUsage` (one event per call), `RecordUsageBatch` (`--batch` events per
  call) and `StreamUsage` (`--slices` slices of `--batch` events per call), each with
  `--concurrency` clients at once: rated events per second and per-call latency p50/p95/p99;
- the ceilings, on the same servers: PostgreSQL single-row INSERT commits per second, rows per
  second of batched INSERTs (executemany, `--batch` rows per transaction) and of COPY, JetStream
  publishes per second awaited one by one (sync) and with bounded in-flight acks (async).

Prints a table and writes the figures as JSON (`--json`). The default run takes about 1-2 minutes;
raise `--seconds`, `--accounts`, `--concurrency` for a longer one. Usage:

    .venv/bin/python bench/charging_bench.py [--seconds 8] [--json bench/charging_bench.json]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import platform
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import asyncpg
import grpc
import nats
from evolutivo.charging.v1 import catalog_pb2, usage_pb2
from evolutivo.charging.v1 import charging_service_pb2 as charging_pb
from evolutivo.charging.v1 import charging_service_pb2_grpc as charging_grpc
from evolutivo.customer.v1 import account_pb2, purchase_pb2
from evolutivo.customer.v1 import customer_service_pb2 as customer_pb
from evolutivo.customer.v1 import customer_service_pb2_grpc as customer_grpc
from evolutivo_runtime.db import plain_url
from evolutivo_runtime.timestamps import to_timestamp
from evolutivo_stack.embedded import create_database, scratch_dir
from evolutivo_stack.stack import Stack

# What rating involves: charging, the services it learns from (customer, billing) and balance, which
# books every charge it publishes (competing for the same CPUs, as in production). The ERP gateway
# has no part in it.
SERVICES = ("customer", "charging", "balance", "billing")


@dataclass
class Figure:
    name: str
    unit: str
    rate: float
    # Per call (gRPC) or per operation (ceilings), milliseconds.
    p50_ms: float | None = None
    p95_ms: float | None = None
    p99_ms: float | None = None
    operations: int = 0
    items: int = 0
    seconds: float = 0.0
    notes: str = ""


@dataclass
class Report:
    started: str
    machine: dict[str, str]
    settings: dict[str, int | float]
    rating: list[Figure] = field(default_factory=list)
    ceilings: list[Figure] = field(default_factory=list)


def percentile(samples: list[float], q: float) -> float:
    if not samples:
        return 0.0
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))] * 1000


async def timed_loop(
    seconds: float, concurrency: int, operation: Callable[[int], Awaitable[int]], name: str, unit: str, notes: str = ""
) -> Figure:
    """Runs `operation` (returns the items it handled) from `concurrency` workers for `seconds`."""
    latencies: list[float] = []
    items = 0
    deadline = time.perf_counter() + seconds
    began = time.perf_counter()

    async def worker(w: int) -> None:
        nonlocal items
        n = 0
        while time.perf_counter() < deadline:
            t0 = time.perf_counter()
            # Awaited first: `items += await ...` would read `items` before the await and lose the
            # other workers' counts.
            handled = await operation(w * 1_000_000 + n)
            latencies.append(time.perf_counter() - t0)
            items += handled
            n += 1

    await asyncio.gather(*(worker(w) for w in range(concurrency)))
    elapsed = time.perf_counter() - began
    return Figure(
        name,
        unit,
        items / elapsed,
        percentile(latencies, 0.50),
        percentile(latencies, 0.95),
        percentile(latencies, 0.99),
        len(latencies),
        items,
        round(elapsed, 2),
        notes,
    )


# Charging over gRPC.


@dataclass
class Fixture:
    charging: charging_grpc.ChargingServiceAsyncStub
    accounts: list[str]
    used_at: datetime
    run: str = field(default_factory=lambda: uuid.uuid4().hex[:8])

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


async def prepare(channel: grpc.aio.Channel, customer_channel: grpc.aio.Channel, accounts: int) -> Fixture:
    charging = charging_grpc.ChargingServiceStub(channel)
    customer = customer_grpc.CustomerServiceStub(customer_channel)
    code = f"bench_{uuid.uuid4().hex[:8]}"
    created = await charging.CreateChargeOffer(
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
                                catalog_pb2.Tier(up_to="1000", unit_price="0"),
                                catalog_pb2.Tier(up_to="100000", unit_price="0.0015"),
                                catalog_pb2.Tier(unit_price="0.001", flat_fee="2.50"),
                            ]
                        ),
                    )
                ],
            ),
        )
    )
    await charging.ActivateChargeOffer(
        charging_pb.ActivateChargeOfferRequest(charge_offer_id=created.charge_offer.charge_offer_id)
    )
    ids: list[str] = []
    for n in range(accounts):
        account = (
            await customer.CreateAccount(
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
        ).account
        await customer.CreatePurchase(
            customer_pb.CreatePurchaseRequest(
                account_id=account.account_id, purchase=purchase_pb2.Purchase(charge_offer_code=code)
            )
        )
        ids.append(account.account_id)
    fixture = Fixture(charging, ids, datetime.now(UTC) + timedelta(seconds=2))
    await asyncio.sleep(2.5)  # the usage's time is after every purchase's start
    # Charging learns the accounts, purchases and cycles over NATS: wait until each rates.
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
        results = (await charging.RecordUsageBatch(charging_pb.RecordUsageBatchRequest(events=probe))).results
        rated = usage_pb2.USAGE_STATUS_RATED
        pending = {e.account_id for e, r in zip(probe, results, strict=True) if r.status != rated}
        if pending:
            if time.monotonic() > deadline:
                raise RuntimeError(f"charging did not learn {len(pending)} accounts in time")
            await asyncio.sleep(0.5)
    return fixture


async def measure_rating(fixture: Fixture, seconds: float, concurrency: int, batch: int, slices: int) -> list[Figure]:
    charging = fixture.charging

    async def single(seq: int) -> int:
        (event,) = fixture.events("single", seq, 1, concurrency)
        result = (await charging.RecordUsage(charging_pb.RecordUsageRequest(event=event))).result
        assert result.status == usage_pb2.USAGE_STATUS_RATED, result
        return 1

    async def batched(seq: int) -> int:
        events = fixture.events("batch", seq, batch, concurrency)
        results = (await charging.RecordUsageBatch(charging_pb.RecordUsageBatchRequest(events=events))).results
        assert all(r.status == usage_pb2.USAGE_STATUS_RATED for r in results)
        return len(results)

    async def streamed(seq: int) -> int:
        async def requests() -> AsyncIterator[charging_pb.StreamUsageRequest]:
            for s in range(slices):
                yield charging_pb.StreamUsageRequest(events=fixture.events(f"stream{s}", seq, batch, concurrency))

        answer = await charging.StreamUsage(requests())
        assert all(r.status == usage_pb2.USAGE_STATUS_RATED for r in answer.results)
        return len(answer.results)

    return [
        await timed_loop(seconds, concurrency, single, "RecordUsage", "events/s", "1 event per call"),
        await timed_loop(seconds, concurrency, batched, "RecordUsageBatch", "events/s", f"{batch} events per call"),
        await timed_loop(
            seconds, concurrency, streamed, "StreamUsage", "events/s", f"{slices} slices x {batch} events per call"
        ),
    ]


# The raw ceilings.


async def measure_postgres(server_url: str, seconds: float, concurrency: int, batch: int) -> list[Figure]:
    url = await create_database(server_url, f"bench_{uuid.uuid4().hex[:8]}")
    pool = await asyncpg.create_pool(plain_url(url), min_size=concurrency, max_size=concurrency)
    assert pool is not None
    try:
        async with pool.acquire() as conn:
            await conn.execute(
                "CREATE TABLE bench_rows (id bigint PRIMARY KEY, account_id uuid NOT NULL, "
                "amount numeric(38, 9) NOT NULL, payload jsonb NOT NULL, created timestamptz NOT NULL)"
            )
        counter = iter(range(1, 10**12))

        def row() -> tuple[int, uuid.UUID, str, str, datetime]:
            return (next(counter), uuid.uuid4(), "0.0150", '{"tiers": []}', datetime.now(UTC))

        sql = "INSERT INTO bench_rows VALUES ($1, $2, $3::numeric, $4::jsonb, $5)"

        async def single_commit(_: int) -> int:
            async with pool.acquire() as conn:
                await conn.execute(sql, *row())  # autocommit: one commit (fsync) per row
            return 1

        async def batched(_: int) -> int:
            async with pool.acquire() as conn, conn.transaction():
                await conn.executemany(sql, [row() for _ in range(batch)])
            return batch

        async def copied(_: int) -> int:
            rows = [row() for _ in range(batch)]
            async with pool.acquire() as conn, conn.transaction():
                await conn.copy_records_to_table(
                    "bench_rows",
                    records=[(i, a, amount, payload, c) for i, a, amount, payload, c in rows],
                    columns=["id", "account_id", "amount", "payload", "created"],
                )
            return batch

        return [
            await timed_loop(seconds, concurrency, single_commit, "PostgreSQL single-row commits", "commits/s"),
            await timed_loop(
                seconds, concurrency, batched, "PostgreSQL batched INSERT", "rows/s", f"executemany, {batch}/txn"
            ),
            await timed_loop(seconds, concurrency, copied, "PostgreSQL COPY", "rows/s", f"{batch} rows per COPY"),
        ]
    finally:
        await pool.close()
        conn = await asyncpg.connect(plain_url(server_url))
        try:
            await conn.execute(f'DROP DATABASE IF EXISTS "{url.rsplit("/", 1)[-1]}" WITH (FORCE)')
        finally:
            await conn.close()


async def measure_nats(nats_url: str, seconds: float, concurrency: int, in_flight: int) -> list[Figure]:
    nc = await nats.connect(nats_url)
    js = nc.jetstream(publish_async_max_pending=in_flight)
    stream = f"BENCH_{uuid.uuid4().hex[:8].upper()}"
    subject = f"bench.{stream.lower()}"
    await js.add_stream(name=stream, subjects=[subject])
    payload = usage_pb2.UsageEvent(
        event_id="bench", account_id=str(uuid.uuid4()), event_type="api.call", quantity="3"
    ).SerializeToString()
    try:

        async def sync_publish(seq: int) -> int:
            await js.publish(subject, payload, headers={"Nats-Msg-Id": f"s{seq}"})
            return 1

        async def async_publish(seq: int) -> int:
            futures = [
                await js.publish_async(subject, payload, headers={"Nats-Msg-Id": f"a{seq}-{i}"}) for i in range(1000)
            ]
            await asyncio.gather(*futures)
            return len(futures)

        return [
            await timed_loop(seconds, concurrency, sync_publish, "JetStream publish (sync)", "msgs/s", "ack awaited"),
            await timed_loop(
                seconds, 1, async_publish, "JetStream publish (async)", "msgs/s", f"<= {in_flight} acks in flight"
            ),
        ]
    finally:
        await js.delete_stream(stream)
        await nc.close()


def table(report: Report) -> str:
    lines = [f"{'measure':<34} {'rate':>12} {'unit':<10} {'p50 ms':>8} {'p95 ms':>8} {'p99 ms':>8}  notes"]
    for title, figures in (("rating (gRPC)", report.rating), ("ceilings (same servers)", report.ceilings)):
        lines.append(f"-- {title}")
        for f in figures:
            lines.append(
                f"{f.name:<34} {f.rate:>12,.0f} {f.unit:<10} {f.p50_ms or 0:>8.1f} {f.p95_ms or 0:>8.1f} "
                f"{f.p99_ms or 0:>8.1f}  {f.notes}"
            )
    return "\n".join(lines)


async def run(args: argparse.Namespace, stack: Stack) -> Report:
    report = Report(
        started=datetime.now(UTC).isoformat(),
        machine={"python": platform.python_version(), "platform": platform.platform(), "cpus": str(_cpus())},
        settings={
            "seconds": args.seconds,
            "accounts": args.accounts,
            "concurrency": args.concurrency,
            "batch": args.batch,
            "slices": args.slices,
        },
    )
    options = [("grpc.max_send_message_length", 8 * 1024 * 1024), ("grpc.max_receive_message_length", 8 * 1024 * 1024)]
    charging_channel = grpc.aio.insecure_channel(stack.addresses["charging"], options=options)
    customer_channel = grpc.aio.insecure_channel(stack.addresses["customer"], options=options)
    try:
        fixture = await prepare(charging_channel, customer_channel, args.accounts)
        report.rating = await measure_rating(fixture, args.seconds, args.concurrency, args.batch, args.slices)
    finally:
        await charging_channel.close(None)
        await customer_channel.close(None)
    ceiling_seconds = max(args.seconds / 2, 2.0)
    report.ceilings = await measure_postgres(stack.server_url, ceiling_seconds, args.concurrency, args.batch)
    report.ceilings += await measure_nats(stack.nats_url, ceiling_seconds, args.concurrency, args.in_flight)
    return report


def _cpus() -> int:
    import os

    return os.cpu_count() or 0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=8.0, help="per rating measure (ceilings: half)")
    parser.add_argument("--accounts", type=int, default=20)
    parser.add_argument("--concurrency", type=int, default=4, help="clients at once")
    parser.add_argument("--batch", type=int, default=500, help="events per batch call / stream slice, rows per txn")
    parser.add_argument("--slices", type=int, default=4, help="slices per StreamUsage call")
    parser.add_argument("--in-flight", type=int, default=256, help="async JetStream publishes awaiting their ack")
    parser.add_argument("--json", type=Path, default=Path("bench/charging_bench.json"), help="where the figures go")
    parser.add_argument("--log-dir", type=Path, default=None, help="keep the services' logs here")
    args = parser.parse_args()
    with scratch_dir("bench") as data_dir:
        # A quiet stack: the services log warnings only.
        with Stack(
            data_dir,
            base_port=None,
            clock_mode="system",
            log_level="WARNING",
            log_dir=args.log_dir,
            services=SERVICES,
        ) as stack:
            report = asyncio.run(run(args, stack))
    print(table(report))
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(asdict(report), indent=2) + "\n")
    print(f"\nwritten: {args.json}")


if __name__ == "__main__":
    main()
