"""The benchmark harness: `python -m bench` (docs/performance.md).

Starts the suite as a user runs it (`evolutivo_stack`: embedded PostgreSQL with fsync on and NATS
JetStream with file storage, the five services as separate processes), then measures, each figure
`--repeat` times (the report gives the median):

- usage ingest end to end (RecordUsageBatch, StreamUsage, RecordUsage): events/s accepted, events/s
  through to balance, and the delay from acceptance to balance booking it (p50/p99);
- balance reads (GetBalance) at a fixed rate, latency p50/p99, and beside them the gRPC floor: the
  same open loop to a server that makes one PostgreSQL read and nothing else (bench/grpc_floor.py);
- a bill run over `--bill-accounts` accounts x 10 charges (bills/s), then PDF rendering (PDFs/s);
- resident memory of every service at rest and at its peak under load;
- beside them, the raw ceilings on the same servers: PostgreSQL single-row commits/s, batched
  INSERT and COPY rows/s; JetStream publishes/s, sync and async;
- with `--replicas 1,2`, the ingest and the reads again on a second stack with two replicas of every
  service (the reads round-robin to both balance replicas).

It prints the figures and the targets of issue 10 with whether each is met and by how much, and
writes everything as JSON (`--json`).

    .venv/bin/python -m bench                 # quick: ~3-5 minutes on 2 cores
    .venv/bin/python -m bench --full          # 60 s per ingest figure, 100,000-account bill run
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import time
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import psutil  # type: ignore[import-untyped]  # no stubs pinned; the harness only
from evolutivo.balance.v1 import balance_service_pb2 as balance_pb
from evolutivo.balance.v1 import balance_service_pb2_grpc as balance_grpc
from evolutivo_runtime.db import plain_url
from evolutivo_stack.embedded import EmbeddedPostgres, scratch_dir
from evolutivo_stack.stack import Stack

from bench import billrun, ceilings, grpc_floor, ingest, row_writes, server_latency
from bench.common import Figure, median, open_loop
from bench.memory import MEASURED, SERVERS, PeakSampler, cpu_seconds, rss_mib, settled_cpu_seconds
from bench.profiling import profiled

# The bill run's late-usage delay (BILLING_LATE_USAGE_DELAY_SECONDS, its default), so the seeded
# cycles are due; the closer checks every second so the run starts at once.
LATE_USAGE_DELAY = timedelta(seconds=3600)
# The PDF figure measures how fast billing renders, not the per-caller limit on expensive reads
# (GetBillDocument draws on it: 50/s by default, which a fast machine's renders exceed), so the
# harness's caller is given room.
STACK_ENV = {
    "BILLING_LATE_USAGE_DELAY_SECONDS": str(int(LATE_USAGE_DELAY.total_seconds())),
    "BILLING_CYCLE_CHECK_SECONDS": "1",
    "BILLING_RATE_LIMIT_READ_PER_SECOND": "100000",
    "BILLING_RATE_LIMIT_READ_BURST": "100000",
}


@dataclass
class Target:
    what: str
    figure: str
    value: float | None
    target: float
    # "min": value must be at least the target; "max": below it.
    sense: str
    unit: str
    # What to read the figure against, when the run measured it (printed after the verdict).
    context: str = ""

    @property
    def met(self) -> bool:
        if self.value is None:
            return False
        return self.value >= self.target if self.sense == "min" else self.value < self.target

    @property
    def verdict(self) -> str:
        if self.value is None:
            return "NOT MEASURED"
        if self.sense == "min":
            factor = self.value / self.target
            how = (
                f"{factor:.2f}x the target"
                if self.met
                else f"{factor:.1%} of the target ({self.target / max(self.value, 1e-9):.1f}x short)"
            )
        else:
            how = (
                f"{self.target / max(self.value, 1e-9):.1f}x under the limit"
                if self.met
                else f"{self.value / self.target:.1f}x over the limit"
            )
        return f"{'MET' if self.met else 'NOT MET'}: {how}"


@dataclass
class Report:
    started: str
    machine: dict[str, Any]
    settings: dict[str, Any]
    sections: dict[str, list[Figure]] = field(default_factory=dict)
    runs: dict[str, list[Figure]] = field(default_factory=dict)
    memory_mib: dict[str, dict[str, float]] = field(default_factory=dict)
    targets: list[Target] = field(default_factory=list)
    reconciliation: dict[str, dict[str, Any]] = field(default_factory=dict)
    seconds: float = 0.0


def enable_commit_timestamps(data_dir: Path, max_connections: int) -> None:
    """The harness reads acceptance and booking instants as commit timestamps: turn them on in the
    embedded cluster (a restart setting, so before the stack starts it), with room for the
    connections of two replicas of every service."""

    async def configure(url: str) -> None:
        conn = await asyncpg.connect(plain_url(url))
        try:
            await conn.execute("ALTER SYSTEM SET track_commit_timestamp = on")
            await conn.execute(f"ALTER SYSTEM SET max_connections = {int(max_connections)}")
        finally:
            await conn.close()

    server = EmbeddedPostgres()
    url = server.start(data_dir / "postgres")
    try:
        asyncio.run(configure(url))
    finally:
        server.stop()


async def repeated(
    report: Report, key: str, repeat: int, measure: Callable[[int], Awaitable[Figure | list[Figure]]]
) -> list[Figure]:
    """Runs a measure `repeat` times; keeps every run and returns the medians (one per figure)."""
    runs: list[list[Figure]] = []
    for r in range(repeat):
        got = await measure(r)
        runs.append(got if isinstance(got, list) else [got])
    medians = [median([run[i] for run in runs]) for i in range(len(runs[0]))]
    for i, m in enumerate(medians):
        report.runs[f"{key}/{m.name}"] = [run[i] for run in runs]
    return medians


async def one_stack(args: argparse.Namespace, report: Report, stack: Stack, replicas: int) -> None:
    suffix = "" if replicas == 1 else f" ({replicas} replicas)"
    only = {p.strip() for p in args.only.split(",") if p.strip()}

    def wanted(phase: str) -> bool:
        return not only or phase in only

    report.memory_mib[f"at rest{suffix}"] = rss_mib(stack)
    pools = {
        s: await asyncpg.create_pool(plain_url(stack.database_url(s)), min_size=1, max_size=4)
        for s in ("charging", "balance", "billing")
    }
    charging_channels = [stack.channel("charging", r) for r in range(replicas)]
    balance_channels = [stack.channel("balance", r) for r in range(replicas)]
    channels = [*charging_channels, *balance_channels, stack.channel("customer"), stack.channel("billing")]
    customer_channel, billing_channel = channels[-2:]
    try:
        fixture = await ingest.prepare(charging_channels, customer_channel, args.accounts)
        db = ingest.Databases(pools["charging"], pools["balance"])
        if args.history and wanted("ingest"):
            await ingest.history(
                fixture,
                db,
                [plain_url(stack.database_url(s)) for s in stack.services],
                args.settle_timeout,
            )
        if wanted("ingest"):
            sampler = PeakSampler(stack)
            ingest_figures: list[Figure] = []
            kinds = ["batch", "stream", "single", "paced"] if replicas == 1 else ["batch", "stream"]
            if args.kinds:
                chosen = {k.strip() for k in args.kinds.split(",")}
                kinds = [k for k in kinds if k in chosen]
            async with sampler.running():
                for kind in kinds:

                    async def run_kind(r: int, kind: str = kind) -> Figure:
                        clients = args.concurrency * (args.single_concurrency_factor if kind == "single" else 1)
                        before = cpu_seconds(stack)
                        figure = await ingest.measure(
                            fixture,
                            db,
                            kind,
                            args.seconds,
                            clients,
                            args.batch,
                            args.slices,
                            r,
                            args.settle_timeout,
                            args.single_rate,
                        )
                        # CPU per event, from the start of the calls until every service went quiet
                        # (a consumer still catching up after balance booked the last charge counts).
                        used = await settled_cpu_seconds(stack)
                        for service, seconds in used.items():
                            figure.extra[f"cpu_ms_per_event_{service}"] = (
                                (seconds - before.get(service, 0.0)) * 1000 / max(figure.items, 1)
                            )
                        return figure

                    with profiled(stack, args.profile, f"ingest-{kind}-{replicas}r"):
                        ingest_figures += await repeated(
                            report, f"ingest{suffix}", args.repeat if replicas == 1 else args.replica_repeat, run_kind
                        )
            report.sections[f"Usage ingest, end to end{suffix}"] = ingest_figures
            report.memory_mib[f"peak under ingest{suffix}"] = sampler.peak
        if wanted("ingest"):
            # The books must agree after the ingest (the bill run's seeded accounts have no upstream).
            report.reconciliation[f"after ingest{suffix}"] = await reconcile(stack)
        if wanted("reads"):
            balances = [balance_grpc.BalanceServiceStub(c) for c in balance_channels]
            balance_metrics = [r.metrics_url for r in stack.replicas("balance")]

            async def read(seq: int) -> None:
                account_id = fixture.accounts[seq % len(fixture.accounts)]
                await balances[seq % len(balances)].GetBalance(balance_pb.GetBalanceRequest(account_id=account_id))

            async def run_reads(_: int) -> Figure | list[Figure]:
                notes = f"open loop at {args.reads_rate:g}/s"
                charged = ("balance", "postgres")
                before = cpu_seconds(stack, charged)
                histograms = {
                    "handling": (server_latency.HANDLING, {"grpc_method": "GetBalance"}),
                    "loop_lag": (server_latency.LOOP_LAG, {}),
                }
                readings = {
                    key: await server_latency.buckets(balance_metrics, h, **labels)
                    for key, (h, labels) in histograms.items()
                }
                figure = await open_loop(args.reads_seconds, args.reads_rate, read, "GetBalance", "reads/s", notes)
                # How much of the client's latency was balance's own handling, and how long balance's
                # loop was held meanwhile (their histograms).
                for key, (h, labels) in histograms.items():
                    reading = await server_latency.buckets(balance_metrics, h, **labels)
                    for q in (0.50, 0.99):
                        bound = server_latency.quantile_bound_ms(readings[key], reading, q)
                        if bound is not None:
                            figure.extra[f"{key}_p{round(q * 100)}_ms_at_most"] = bound
                if "handling_p99_ms_at_most" in figure.extra:
                    figure.notes += f"; inside balance p99 <= {figure.extra['handling_p99_ms_at_most']:g} ms"
                if "loop_lag_p99_ms_at_most" in figure.extra:
                    figure.notes += f", its loop's lag p99 <= {figure.extra['loop_lag_p99_ms_at_most']:g} ms"
                if "client_loop_lag_p99_ms" in figure.extra:
                    figure.notes += f"; client's loop lag p99 {figure.extra['client_loop_lag_p99_ms']:.1f} ms"
                # What a read costs balance (and PostgreSQL): CPU during the run / the calls answered.
                after = cpu_seconds(stack, charged)
                for name, seconds in after.items():
                    figure.extra[f"cpu_ms_per_read_{name}"] = (
                        (seconds - before.get(name, 0.0)) * 1000 / max(figure.items, 1)
                    )
                if replicas != 1:
                    return figure
                # Beside it, the same open loop to a server that does one PostgreSQL read and
                # nothing else: the part of the latency that is not balance's (bench/grpc_floor.py).
                return [figure, await grpc_floor.measure(stack, args.reads_seconds, args.reads_rate)]

            # With two replicas the reads go round-robin to both: what a second replica does for the tail.
            phase = "reads" if replicas == 1 else f"reads-{replicas}r"
            with profiled(stack, args.profile, phase, ("balance",)):
                report.sections[f"Balance reads{suffix}"] = await repeated(
                    report, f"reads{suffix}", args.repeat if replicas == 1 else args.replica_repeat, run_reads
                )
        if replicas != 1:
            return

        if wanted("billrun"):
            sampler = PeakSampler(stack)
            async with sampler.running():
                with profiled(stack, args.profile, "billrun"):
                    # Counted from the seed's commit: seeding is the harness's work, not the run's.
                    before: dict[str, float] = {}
                    # The rows the databases hold before the seed: the seed's own are counted out.
                    rows_before = await row_writes.settled_reading(stack)
                    bill = await billrun.bill_run(
                        pools["billing"],
                        args.bill_accounts,
                        LATE_USAGE_DELAY,
                        args.bill_timeout,
                        after_seed=lambda: before.update(cpu_seconds(stack)),
                    )
                    used = await settled_cpu_seconds(stack)
                    for service, seconds in used.items():
                        bill.extra[f"cpu_ms_per_bill_{service}"] = (
                            (seconds - before.get(service, 0.0)) * 1000 / max(bill.operations, 1)
                        )
                    # Which rows a bill costs PostgreSQL, by table (the seed's are subtracted). Only
                    # for a complete run: the work for accounts left unbilled would count against
                    # the bills that were issued.
                    if bill.operations and not bill.extra.get("missing"):
                        written = row_writes.per_operation(
                            rows_before, await row_writes.settled_reading(stack), bill.operations
                        )
                        for table, seeded in billrun.SEEDED_ROWS_PER_ACCOUNT.items():
                            written[table] = written.get(table, 0.0) - seeded * args.bill_accounts / bill.operations
                        for key, n in written.items():
                            if abs(n) >= 0.005:  # a seeded table the run did not write to is left out
                                bill.extra[f"rows_per_bill.{key}"] = n
                with profiled(stack, args.profile, "pdf", ("billing",)):
                    pdf = await billrun.pdf_rate(
                        pools["billing"], billing_channel, args.reads_seconds, 2, min(args.bill_accounts, 100_000)
                    )
            report.sections["Bill run and documents"] = [bill, pdf]
            report.memory_mib["peak under bill run"] = sampler.peak
        report.memory_mib["after load"] = rss_mib(stack)

        if wanted("ceilings"):
            ceiling_seconds = max(args.seconds / 2, 2.0)

            async def run_ceilings(_: int) -> list[Figure]:
                found = await ceilings.postgres(stack.server_url, ceiling_seconds, args.concurrency, args.batch)
                return found + await ceilings.jetstream(stack.nats_url, ceiling_seconds, args.concurrency, 256)

            report.sections["Ceilings (same servers, same run)"] = await repeated(
                report, "ceilings", args.repeat, run_ceilings
            )
    finally:
        for channel in channels:
            await channel.close(None)
        for pool in pools.values():
            await pool.close()


def targets(report: Report) -> list[Target]:
    def find(section: str, name: str) -> Figure | None:
        return next((f for f in report.sections.get(section, []) if f.name == name), None)

    def value(figure: Figure | None, attribute: str) -> float | None:
        if figure is None:
            return None
        if attribute in figure.extra:
            return figure.extra[attribute]
        got = getattr(figure, attribute, None)
        return float(got) if got is not None else None

    ingest_section = "Usage ingest, end to end"
    found: list[Target] = []
    for name in ("RecordUsageBatch", "StreamUsage"):
        f = find(ingest_section, name)
        found.append(
            Target(
                f"{name}: events/s rated and booked by balance", name, value(f, "e2e_rate"), 20_000, "min", "events/s"
            )
        )
        found.append(Target(f"{name}: p99 acceptance -> balance", name, value(f, "lag_p99_ms"), 1_000, "max", "ms"))
    single = find(ingest_section, "RecordUsage")
    found.append(Target("RecordUsage: calls/s", "RecordUsage", value(single, "rate"), 1_500, "min", "calls/s"))
    found.append(Target("RecordUsage: p99 latency", "RecordUsage", value(single, "p99_ms"), 25, "max", "ms"))
    bill = find("Bill run and documents", "Bill run (cycle closer)")
    found.append(
        Target(
            "Bill run: bills issued and numbered per second", "bill run", value(bill, "rate"), 1_700, "min", "bills/s"
        )
    )
    reads = find("Balance reads", "GetBalance")
    found.append(
        Target("Balance reads: achieved rate", "GetBalance", value(reads, "rate"), 1_000 * 0.98, "min", "reads/s")
    )
    floor = value(find("Balance reads", grpc_floor.NAME), "p99_ms")
    found.append(
        Target(
            "Balance reads: p99 latency at that rate",
            "GetBalance",
            value(reads, "p99_ms"),
            5,
            "max",
            "ms",
            "" if floor is None else f"the gRPC floor beside it (one PostgreSQL read, no service): p99 {floor:.1f} ms",
        )
    )
    return found


def _service_of(key: str) -> str:
    """The service a `cpu_ms_per_<what>_<service>` figure is of (service names hold underscores)."""
    return next((s for s in MEASURED + SERVERS if key.endswith(f"_{s}")), key.rsplit("_", 1)[-1])


def print_report(report: Report) -> str:
    out = [
        f"Evolutivo benchmark, {report.started} ({report.seconds:.0f} s), {report.machine['cpus']} CPUs, "
        f"load average {report.machine['load_average']}",
        "settings: " + ", ".join(f"{k}={v}" for k, v in report.settings.items()),
        "",
        f"{'measure':<36} {'rate':>10} {'unit':<10} {'p50 ms':>8} {'p99 ms':>8}  "
        f"{'e2e/s':>8} {'lag p50':>8} {'lag p99':>8}  notes",
    ]
    for title, figures in report.sections.items():
        out.append(f"-- {title}")
        for f in figures:
            e2e = f.extra.get("e2e_rate")
            lag50 = f.extra.get("lag_p50_ms")
            lag99 = f.extra.get("lag_p99_ms")
            notes = f.notes + (f"; median of {f.runs}" if f.runs > 1 else "")
            if f.extra.get("unbooked"):
                notes += f"; {f.extra['unbooked']:.0f} NOT BOOKED in time"
            cpu = {_service_of(k): v for k, v in f.extra.items() if k.startswith("cpu_ms_per_")}
            if cpu:
                per = {"events/s": "event", "reads/s": "read"}.get(f.unit, "bill")
                notes += f"; CPU ms per {per}: " + ", ".join(f"{k} {v:.2f}" for k, v in sorted(cpu.items()))
            rows = row_writes.by_service(
                {k[len("rows_per_bill.") :]: v for k, v in f.extra.items() if k.startswith("rows_per_bill.")}
            )
            if rows:
                notes += "; rows written per bill: " + ", ".join(f"{k} {v:.1f}" for k, v in sorted(rows.items()))
            if "projected_seconds_100k" in f.extra:
                notes += f"; 100,000 bills would take {f.extra['projected_seconds_100k']:.0f} s"
            out.append(
                f"{f.name:<36} {f.rate:>10,.0f} {f.unit:<10} {f.p50_ms or 0:>8.1f} {f.p99_ms or 0:>8.1f}  "
                f"{'' if e2e is None else f'{e2e:,.0f}':>8} {'' if lag50 is None else f'{lag50:,.0f}':>8} "
                f"{'' if lag99 is None else f'{lag99:,.0f}':>8}  {notes}"
            )
    out.append("-- Resident memory (MiB)")
    names = sorted({n for m in report.memory_mib.values() for n in m})
    states = list(report.memory_mib)
    out.append(f"{'service':<16}" + "".join(f"{s[:30]:>32}" for s in states))
    for n in names:
        cells = (report.memory_mib[s].get(n) for s in states)
        out.append(f"{n:<16}" + "".join(f"{'-' if v is None else f'{v:.0f}':>32}" for v in cells))
    out.append("")
    out.append("Targets (issue 10):")
    for t in report.targets:
        shown = "-" if t.value is None else f"{t.value:,.1f} {t.unit}"
        bound = ">=" if t.sense == "min" else "<"
        out.append(
            f"  {t.what:<52} {shown:>18}  (target {bound} {t.target:,.0f} {t.unit})  {t.verdict}"
            + (f"; {t.context}" if t.context else "")
        )
    if report.settings["seconds"] < 60:
        out.append(
            "  (quick run: each ingest figure lasts "
            f"{report.settings['seconds']:g} s, not the minute the target asks; --full for that)"
        )
    if report.settings["bill_accounts"] < 100_000:
        out.append(f"  (bill run over {report.settings['bill_accounts']:,} accounts, not 100,000; --full for that)")
    for when, result in report.reconciliation.items():
        out.append(f"Reconciliation {when}: {result}")
    return "\n".join(out)


async def reconcile(stack: Stack, timeout: float = 120.0) -> dict[str, Any]:
    """The reconciliation library (tools/reconcile) over the stack's five databases, once the
    events of the run are through (retried while differences remain, up to `timeout` s)."""
    try:
        from evolutivo_reconcile import DatabaseUrls
        from evolutivo_reconcile import reconcile as check_books
    except ImportError:
        return {"status": "not available (tools/reconcile is not installed)"}
    urls = DatabaseUrls.on_server(stack.server_url, stack.database_suffix)
    deadline = time.monotonic() + timeout
    while True:
        found = await check_books(urls)
        if found.ok or time.monotonic() > deadline:
            break
        await asyncio.sleep(3)  # events still in flight: the consumers catch up
    return {
        "differences": len(found.differences),
        "first": [str(d) for d in found.differences[:5]],
        "checked": dict(found.checked),
        "outbox_backlog": dict(found.outbox_backlog),
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.split("\n\n")[0])
    parser.add_argument("--full", action="store_true", help="the run the targets ask for (about 25-30 minutes)")
    parser.add_argument("--seconds", type=float, help="per ingest figure (quick 4, full 60)")
    parser.add_argument("--repeat", type=int, help="runs of each figure, the median is reported (quick 3, full 3)")
    parser.add_argument("--accounts", type=int, help="accounts rating usage (quick 20, full 200)")
    parser.add_argument("--concurrency", type=int, help="clients at once (quick 4, full 8)")
    parser.add_argument("--batch", type=int, default=500, help="events per batch call / stream slice")
    parser.add_argument("--slices", type=int, default=4, help="slices per StreamUsage call")
    parser.add_argument("--bill-accounts", type=int, help="accounts of the bill run (quick 2,000, full 100,000)")
    parser.add_argument("--reads-rate", type=float, default=1000.0, help="balance reads per second")
    parser.add_argument("--reads-seconds", type=float, help="per reads figure and PDF figure (quick 4, full 20)")
    parser.add_argument("--replicas", default=None, help="stacks to run the ingest on, e.g. 1,2 (quick and full 1,2)")
    parser.add_argument("--settle-timeout", type=float, default=300.0, help="wait for balance to book, s")
    parser.add_argument("--bill-timeout", type=float, default=900.0, help="wait for the bill run, s")
    parser.add_argument("--json", type=Path, default=Path("bench/results/latest.json"), help="where the report goes")
    parser.add_argument(
        "--history",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="rate 25 events per account and ANALYZE every database before the figures (steady state)",
    )
    parser.add_argument("--profile", type=Path, default=None, help="py-spy the services per phase into this folder")
    parser.add_argument("--only", default="", help="comma-separated phases to run: ingest,reads,billrun,ceilings")
    parser.add_argument("--kinds", default="", help="ingest calls to measure: batch,stream,single,paced (default all)")
    parser.add_argument(
        "--single-rate", type=float, default=500.0, help="paced: single calls started per second (open loop)"
    )
    parser.add_argument("--log-dir", type=Path, default=None, help="keep the services' logs here")
    args = parser.parse_args(argv)
    quick = not args.full
    defaults = {
        "seconds": 4.0 if quick else 60.0,
        "repeat": 3,
        "accounts": 20 if quick else 200,
        "concurrency": 4 if quick else 8,
        "bill_accounts": 2_000 if quick else 100_000,
        "reads_seconds": 4.0 if quick else 20.0,
        "replicas": "1,2",
    }
    for name, default in defaults.items():
        if getattr(args, name) is None:
            setattr(args, name, default)
    # Single calls are short: more clients keep charging busy. 1,500 calls/s within 25 ms needs at
    # least 38 calls in flight (Little's law), so the quick run has 32 clients and the full one 64.
    args.single_concurrency_factor = 8
    args.replica_repeat = 1 if quick else args.repeat
    replica_counts = [int(n) for n in str(args.replicas).split(",") if n.strip()]

    began = time.monotonic()
    report = Report(
        started=datetime.now(UTC).isoformat(timespec="seconds"),
        machine={
            "python": platform.python_version(),
            "platform": platform.platform(),
            "cpus": os.cpu_count() or 0,
            "memory_gib": round(psutil.virtual_memory().total / 2**30, 1),
            "load_average": " ".join(f"{x:.1f}" for x in os.getloadavg()),
        },
        settings={k: v for k, v in vars(args).items() if k not in ("json", "log_dir")}
        | {"mode": "quick" if quick else "full"},
    )
    for count in replica_counts:
        with scratch_dir("bench") as data_dir:
            enable_commit_timestamps(data_dir, 400)
            with Stack(
                data_dir,
                base_port=None,
                clock_mode="system",
                log_level="WARNING",
                log_dir=args.log_dir,
                replicas=dict.fromkeys(("customer", "charging", "balance", "billing", "erp_gateway"), count),
                env=STACK_ENV,
                progress=lambda m: print(f"[bench] {m}", flush=True),
            ) as stack:
                print(f"[bench] measuring with {count} replica(s) per service", flush=True)
                asyncio.run(one_stack(args, report, stack, count))
    report.targets = targets(report)
    report.machine["load_average_after"] = " ".join(f"{x:.1f}" for x in os.getloadavg())
    report.seconds = time.monotonic() - began
    text = print_report(report)
    print(text)
    args.json.parent.mkdir(parents=True, exist_ok=True)
    payload = asdict(report)
    payload["targets"] = [asdict(t) | {"met": t.met, "verdict": t.verdict} for t in report.targets]
    args.json.write_text(json.dumps(payload, indent=2, default=str) + "\n")
    print(f"\nwritten: {args.json}")


if __name__ == "__main__":
    main()
