"""What rating reads, held in memory by each replica: the activated catalog, and per account its
charging account, purchases, bill cycles and credit-limit states.

Why a generation counter and LISTEN/NOTIFY (docs/charging.md, "Speed"): the events that change
these (customer's, billing's, balance's, catalog calls) are applied by whichever replica takes
them, so the others must learn of the change from charging's own database. Every transaction that
changes a cached row bumps the one-row `cache_generation` and NOTIFYs `evolutivo_charging_cache`
with the new generation and what changed (account ids, "catalog", or "*"), both at commit. Each
replica LISTENs and drops what changed. A rating transaction first reads the generation (one
tiny row, a column of its first statement: usage_repository.received): it uses the cache only
when the replica has applied every notification up to it, and otherwise reads from the database
for that call. So a replica never rates with data older than
what was committed before the call began: a lost notification, a lagging listener or a broken
LISTEN connection costs speed (database reads), never correctness, and no TTL is needed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field

import asyncpg
from evolutivo_runtime.db import plain_url
from sqlalchemy import select, text, update
from sqlalchemy.ext.asyncio import AsyncSession

from evolutivo_charging.adapters.orm import cache_generation
from evolutivo_charging.domain.catalog import ChargeOffer
from evolutivo_charging.domain.model import ChargingAccount
from evolutivo_charging.domain.usage import BillCycle, CreditState, Purchase

log = logging.getLogger(__name__)

# Loads the catalog into the cache as of a generation (service_layer/reads.py).
Loader = Callable[[int], Awaitable[None]]

CHANNEL = "evolutivo_charging_cache"
# The LISTEN sessions' application_name.
APPLICATION_NAME = "evolutivo-charging-cache"
CATALOG = "catalog"
EVERYTHING = "*"
# NOTIFY payloads must stay under 8000 bytes: more accounts than this invalidate everything.
_MAX_NAMED = 150


@dataclass(frozen=True)
class AccountView:
    """One account as rating reads it; `account` None: charging does not know it (yet)."""

    account: ChargingAccount | None
    purchases: tuple[Purchase, ...]
    cycles: tuple[BillCycle, ...]
    credit: tuple[CreditState, ...]


@dataclass(frozen=True)
class CatalogView:
    """Every activated (active or retired) version, by code, oldest first."""

    versions: dict[str, list[ChargeOffer]]
    rated_event_types: frozenset[str]

    @classmethod
    def of(cls, versions: dict[str, list[ChargeOffer]]) -> CatalogView:
        types = {c.event_type for vs in versions.values() for v in vs for c in v.charges if c.is_usage}
        return cls(versions, frozenset(types))


@dataclass
class RatingCache:
    """Per-replica cache; `generation` is the last generation whose changes it has applied (None:
    not listening, so never used)."""

    max_accounts: int = 100_000
    generation: int | None = None
    catalog: CatalogView | None = None
    _accounts: OrderedDict[uuid.UUID, AccountView] = field(default_factory=OrderedDict)
    hits: int = 0
    misses: int = 0

    def usable_at(self, db_generation: int) -> bool:
        return self.generation is not None and self.generation == db_generation

    def reset(self, generation: int | None) -> None:
        """Forgets everything; usable again from `generation` (None: not until the next reset)."""
        self.generation = generation
        self.catalog = None
        self._accounts.clear()

    def changed(self, generation: int, what: Sequence[str]) -> None:
        """A committed change (a notification). Applied in order; a gap means notifications were
        lost, and everything is dropped."""
        if self.generation is None or generation <= self.generation:
            return
        if generation != self.generation + 1 or EVERYTHING in what:
            self.reset(generation)
            return
        for item in what:
            if item == CATALOG:
                self.catalog = None
            else:
                with contextlib.suppress(ValueError):
                    self._accounts.pop(uuid.UUID(item), None)
        self.generation = generation

    def accounts(self, account_ids: Iterable[uuid.UUID]) -> tuple[dict[uuid.UUID, AccountView], set[uuid.UUID]]:
        """The cached views among `account_ids`, and the ids missing."""
        found: dict[uuid.UUID, AccountView] = {}
        missing: set[uuid.UUID] = set()
        for account_id in account_ids:
            view = self._accounts.get(account_id)
            if view is None:
                missing.add(account_id)
            else:
                self._accounts.move_to_end(account_id)
                found[account_id] = view
        self.hits += len(found)
        self.misses += len(missing)
        return found, missing

    def keep(self, views: dict[uuid.UUID, AccountView], read_at: int) -> None:
        """Stores views read from the database at generation `read_at`, unless a change was
        applied since (it could concern them)."""
        if self.generation != read_at:
            return
        for account_id, view in views.items():
            self._accounts[account_id] = view
            self._accounts.move_to_end(account_id)
        while len(self._accounts) > self.max_accounts:
            self._accounts.popitem(last=False)

    def keep_catalog(self, catalog: CatalogView, read_at: int) -> None:
        if self.generation == read_at:
            self.catalog = catalog

    def __len__(self) -> int:
        return len(self._accounts)


# Built once: read on every group of calls, and a statement built per call costs SQLAlchemy its
# cache key again every time.
_CURRENT_GENERATION = select(cache_generation.c.generation).where(cache_generation.c.id == 1)
# The same read as a column of another statement (one round trip less: usage_repository.received).
CURRENT_GENERATION_COLUMN = _CURRENT_GENERATION.scalar_subquery().label("cache_generation")


async def current_generation(session: AsyncSession) -> int:
    return int(await session.scalar(_CURRENT_GENERATION) or 0)


async def bump(session: AsyncSession, what: Iterable[str]) -> int:
    """In a transaction that changed cached rows: the next generation, and its notification
    (delivered when the transaction commits, in commit order: the row lock orders the bumps)."""
    items = sorted(set(what))
    if len(items) > _MAX_NAMED:
        items = [EVERYTHING]
    generation = int(
        (
            await session.execute(
                update(cache_generation)
                .where(cache_generation.c.id == 1)
                .values(generation=cache_generation.c.generation + 1)
                .returning(cache_generation.c.generation)
            )
        ).scalar_one()
    )
    await session.execute(
        text("SELECT pg_notify(:channel, :payload)"),
        {"channel": CHANNEL, "payload": " ".join([str(generation), *items])},
    )
    return generation


class CacheListener:
    """Keeps a replica's cache in step (Wiring.background): LISTEN, then read the generation and
    start from an empty cache at it (the catalog loaded at once); every notification drops what
    changed. A lost connection disables the cache until it is back."""

    def __init__(
        self, cache: RatingCache, database_url: str, load_catalog: Loader | None = None, retry_seconds: float = 1.0
    ) -> None:
        self.cache = cache
        self._url = plain_url(database_url)
        self._load_catalog = load_catalog
        self._retry = retry_seconds

    def _notified(self, conn: object, pid: int, channel: str, payload: str) -> None:
        generation, *what = payload.split(" ")
        self.cache.changed(int(generation), what)

    async def _connect(self) -> asyncpg.Connection:
        # Named, so an operator (or a test) can find the replicas' LISTEN sessions in pg_stat_activity.
        return await asyncpg.connect(self._url, server_settings={"application_name": APPLICATION_NAME})

    async def run(self, stop: asyncio.Event) -> None:
        stopping = asyncio.create_task(stop.wait())
        try:
            while not stop.is_set():
                await self._listen_once(stop, stopping)
                if not stop.is_set():
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(asyncio.shield(stopping), timeout=self._retry)
        finally:
            stopping.cancel()

    async def _listen_once(self, stop: asyncio.Event, stopping: asyncio.Task[bool]) -> None:
        """One LISTEN connection's life; the cache is usable only while it lasts."""
        conn: asyncpg.Connection | None = None
        lost = asyncio.Event()
        try:
            conn = await self._connect()
            conn.add_termination_listener(lambda _conn, lost=lost: lost.set())
            # LISTEN first, then read the generation: a change committed after the read is notified.
            await conn.add_listener(CHANNEL, self._notified)
            generation = int(await conn.fetchval("SELECT generation FROM cache_generation WHERE id = 1") or 0)
            self.cache.reset(generation)
            if self._load_catalog is not None:
                await self._load_catalog(generation)
            log.info("rating cache listening", extra={"generation": generation})
            losing = asyncio.create_task(lost.wait())
            try:
                # Woken by the termination callback at once (the cache goes off without delay);
                # the periodic check covers a transport closed without it.
                while not stop.is_set() and not lost.is_set() and not conn.is_closed():
                    await asyncio.wait({stopping, losing}, timeout=1.0, return_when=asyncio.FIRST_COMPLETED)
            finally:
                losing.cancel()
            if not stop.is_set():
                log.warning("rating cache LISTEN connection lost; reading from the database until it is back")
        except Exception:
            log.warning("rating cache LISTEN lost; reading from the database", exc_info=True)
        finally:
            self.cache.reset(None)
            if conn is not None and not conn.is_closed():
                with contextlib.suppress(Exception):
                    await conn.close()
