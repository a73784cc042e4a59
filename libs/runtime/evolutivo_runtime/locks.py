"""Transaction-scoped advisory locks named by text, taken in one order.

A name maps to PostgreSQL's 64-bit lock key by `hashtextextended(name, 0)`. Several names are
taken in one statement, in key order: two transactions that each take a set of them this way wait
for each other instead of deadlocking (the consumer takes a fetched batch's locks so, see
`Subscription.advisory_locks`). Taking a lock the transaction already holds returns at once, so a
handler may take its own lock again after the batch took it.
"""

from __future__ import annotations

from collections.abc import Iterable

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

_TAKE_IN_KEY_ORDER = text(
    "SELECT pg_advisory_xact_lock(k) FROM "
    "(SELECT DISTINCT hashtextextended(n, 0) AS k FROM unnest(CAST(:names AS text[])) AS n ORDER BY k) AS keys"
)


async def advisory_xact_locks(session: AsyncSession, names: Iterable[str]) -> None:
    """Takes the named locks until the transaction ends, in key order, waiting for each."""
    unique = sorted(set(names))
    if unique:
        await session.execute(_TAKE_IN_KEY_ORDER, {"names": unique})
