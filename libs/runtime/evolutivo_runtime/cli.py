"""The two commands every service has: `migrate` and `serve`."""

from __future__ import annotations

import argparse
import asyncio
import sys

from evolutivo_runtime.migrations import upgrade_to_head
from evolutivo_runtime.server.app import ServiceDefinition, serve


def run(definition: ServiceDefinition, argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog=f"evolutivo-{definition.name}")
    parser.add_argument("command", choices=["serve", "migrate"], help="serve gRPC, or migrate the database to head")
    args = parser.parse_args(argv if argv is not None else sys.argv[1:])
    if args.command == "migrate":
        upgrade_to_head(definition.migrations_dir, definition.settings.database_url)
    else:
        asyncio.run(serve(definition))
