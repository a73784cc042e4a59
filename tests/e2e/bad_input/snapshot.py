"""Every table of every service's database as (row count, digest of its rows): what a refused call
must leave exactly as it found it.

No table is left out: a refusal writes nothing at all, so not an outbox row (no event), not an
inbox row, not a request-log claim and not an audit record (docs/security.md: failed calls leave
none). The suite takes its snapshots once the stack is quiet (no event in flight, no scheduled work
due), so anything that changes between two snapshots around one call was written by that call.
"""

from __future__ import annotations

from collections.abc import Iterable

import asyncpg


class Snapshots:
    """One open connection per service database and the one query that digests all its tables."""

    def __init__(self, connections: dict[str, asyncpg.Connection]) -> None:
        self._connections = connections
        self._queries: dict[str, str] = {}

    @classmethod
    async def open(cls, urls: dict[str, str]) -> Snapshots:
        return cls({service: await asyncpg.connect(url) for service, url in urls.items()})

    async def close(self) -> None:
        for conn in self._connections.values():
            await conn.close()

    async def _query(self, service: str) -> str:
        if service not in self._queries:
            tables = [
                row["table_name"]
                for row in await self._connections[service].fetch(
                    "SELECT table_name FROM information_schema.tables"
                    " WHERE table_schema = 'public' AND table_type = 'BASE TABLE' ORDER BY 1"
                )
            ]
            # One round trip per database: the row count and the md5 of the rows in a fixed order.
            self._queries[service] = " UNION ALL ".join(
                f"SELECT '{name}' AS name, count(*) AS rows,"
                f" md5(coalesce(string_agg(t::text, E'\\n' ORDER BY t::text), '')) AS digest FROM \"{name}\" t"
                for name in tables
            )
        return self._queries[service]

    async def take(self) -> dict[str, tuple[int, str]]:
        """ "<service>.<table>" -> (rows, digest)."""
        taken: dict[str, tuple[int, str]] = {}
        for service, conn in self._connections.items():
            for row in await conn.fetch(await self._query(service)):
                taken[f"{service}.{row['name']}"] = (row["rows"], row["digest"])
        return taken


def changed(
    before: dict[str, tuple[int, str]], after: dict[str, tuple[int, str]], allowed: Iterable[str] = ()
) -> dict[str, str]:
    """The tables that differ (outside `allowed`), each with its row counts before -> after."""
    skip = set(allowed)
    return {
        table: f"{before.get(table, (0, ''))[0]} -> {after.get(table, (0, ''))[0]} rows"
        for table in sorted(set(before) | set(after))
        if table not in skip and before.get(table) != after.get(table)
    }
