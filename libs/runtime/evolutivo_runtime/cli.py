"""The two commands every service has: `migrate` and `serve`."""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from collections.abc import Coroutine
from typing import Any

from evolutivo_runtime import collector
from evolutivo_runtime.migrations import upgrade_to_head
from evolutivo_runtime.server.app import ServiceDefinition, serve


def run(definition: ServiceDefinition, argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog=f"evolutivo-{definition.name}")
    parser.add_argument("command", choices=["serve", "migrate"], help="serve gRPC, or migrate the database to head")
    args = parser.parse_args(argv if argv is not None else sys.argv[1:])
    if args.command == "migrate":
        settings = definition.settings
        upgrade_to_head(
            definition.migrations_dir,
            settings.database_url,
            lock_timeout=settings.migration_lock_timeout_seconds,
            attempts=settings.migration_attempts,
        )
    else:
        _run_loop(serve(definition))


def _run_loop(main: Coroutine[Any, Any, None]) -> None:
    """Runs the service on uvloop (libuv: its transports and selector are C, which the gRPC,
    PostgreSQL and NATS traffic of a busy service spends a fifth of its time in on asyncio's;
    docs/performance.md). EVOLUTIVO_EVENT_LOOP=asyncio falls back to the standard loop."""
    if os.environ.get("EVOLUTIVO_GC_FREEZE", "1") == "1":
        collector.quiet()
    collector.watch_pauses()
    if os.environ.get("EVOLUTIVO_EVENT_LOOP", "uvloop") == "asyncio":
        asyncio.run(main)
        return
    import uvloop

    uvloop.run(main)
