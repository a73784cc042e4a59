"""``evolutivo-reconcile``: checks the books across the five databases, read-only.

Exit status: 0 when the books agree, 1 when there is any difference, 2 when a database cannot be
read. Where the URLs come from (first found wins, per service):

1. ``--<service>-url`` (e.g. ``--billing-url``);
2. ``<SERVICE>_DATABASE_URL`` (what the service itself reads, e.g. ``BILLING_DATABASE_URL``);
3. ``evolutivo_<service>`` on the server of ``--database-url`` / ``DATABASE_URL`` (what ``make up``
   takes for an external PostgreSQL);
4. ``evolutivo_<service>`` on the embedded PostgreSQL of a running ``make up`` (its port is read
   from ``DATA_DIR/postgres/pgdata/postmaster.pid``; ``--data-dir``, default ``EVOLUTIVO_DATA_DIR``
   or ``.data``).

The ERP gateway's checks run only when its database is found; otherwise a notice says they were
skipped.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from evolutivo_reconcile.checks import DEFAULT_USAGE_RETENTION_DAYS, SERVICES, DatabaseUrls, reconcile


def embedded_server_url(data_dir: Path) -> str | None:
    """The server URL of the embedded PostgreSQL a local stack runs in ``data_dir``, if it runs."""
    pid_file = data_dir / "postgres" / "pgdata" / "postmaster.pid"
    try:
        lines = pid_file.read_text().splitlines()
    except OSError:
        return None
    # postmaster.pid: pid, data dir, start time, port, socket dir, listen address, ...
    if len(lines) < 4 or not lines[3].strip().isdigit():
        return None
    host = lines[5].strip() if len(lines) > 5 and lines[5].strip() not in ("", "*") else "127.0.0.1"
    return f"postgresql://postgres@{host}:{lines[3].strip()}/postgres"


def resolve_urls(args: argparse.Namespace, environ: dict[str, str] | os._Environ[str]) -> DatabaseUrls:
    server = args.database_url or environ.get("DATABASE_URL") or embedded_server_url(Path(args.data_dir))
    on_server = DatabaseUrls.on_server(server, args.database_suffix) if server else DatabaseUrls()
    chosen: dict[str, str | None] = {}
    for service in SERVICES:
        explicit = getattr(args, f"{service}_url")
        chosen[service] = explicit or environ.get(f"{service.upper()}_DATABASE_URL") or on_server.get(service)
    if args.no_erp:
        chosen["erp_gateway"] = None
    return DatabaseUrls(**chosen)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="evolutivo-reconcile",
        description="Check the books across the five service databases (read-only). See docs/reconciliation.md.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=__doc__.split("\n\n", 1)[1] if __doc__ else None,
    )
    p.add_argument("--database-url", help="server-level PostgreSQL URL holding the evolutivo_<service> databases")
    p.add_argument("--database-suffix", default="", help="suffix of the database names (as the stack's)")
    p.add_argument(
        "--data-dir",
        default=os.environ.get("EVOLUTIVO_DATA_DIR", ".data"),
        help="data folder of a local stack whose embedded PostgreSQL to read (default: .data)",
    )
    for service in SERVICES:
        p.add_argument(f"--{service.replace('_', '-')}-url", dest=f"{service}_url", help=f"the {service} database")
    p.add_argument("--no-erp", action="store_true", help="skip the ERP checks even when its database is found")
    p.add_argument(
        "--usage-retention-days",
        type=int,
        default=int(os.environ.get("CHARGING_USAGE_RETENTION_DAYS", DEFAULT_USAGE_RETENTION_DAYS)),
        help="charging's idempotency horizon: usage charges older than it may have lost their event row",
    )
    p.add_argument(
        "--expect-usage-events",
        type=Path,
        help="a file with one usage event id per line that clients were told were accepted",
    )
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    urls = resolve_urls(args, os.environ)
    if not any(urls.get(s) for s in SERVICES):
        print(
            "evolutivo-reconcile: no database found: pass --database-url or --<service>-url, or run it"
            " beside a running `make up`",
            file=sys.stderr,
        )
        return 2
    expected: list[str] = []
    if args.expect_usage_events is not None:
        expected = [line.strip() for line in args.expect_usage_events.read_text().splitlines() if line.strip()]
    try:
        report = asyncio.run(
            reconcile(urls, expected_usage_event_ids=expected, usage_retention_days=args.usage_retention_days)
        )
    except Exception as exc:  # a database that cannot be read: no verdict
        print(f"evolutivo-reconcile: could not read the books: {exc!r}", file=sys.stderr)
        return 2
    print(report.dumps() if args.json else report.text())
    return 0 if report.ok else 1


if __name__ == "__main__":
    sys.exit(main())
