"""The replicas' rating cache (adapters/cache.py) against a real PostgreSQL, attacked where it could
serve stale purchases: the LISTEN connection killed (pg_terminate_backend) before or after another
replica commits, a notification that never arrives, a load racing a commit, PostgreSQL restarted
(immediate shutdown, crash recovery) and a replica restarted. The rule checked every time: usage
recorded after another replica committed a purchase is rated with it (never UNRATED
NO_MATCHING_PURCHASE from a stale view), and the cache comes back in step and serves again."""

from __future__ import annotations

import asyncio
import contextlib
import random
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import pytest
from evolutivo.billing.v1 import bill_cycle_pb2
from evolutivo.billing.v1 import events_pb2 as billing_events
from evolutivo.charging.v1 import catalog_pb2 as c
from evolutivo.charging.v1 import charging_service_pb2 as pb
from evolutivo.charging.v1 import usage_pb2
from evolutivo.customer.v1 import account_pb2, purchase_pb2
from evolutivo.customer.v1 import events_pb2 as customer_events
from evolutivo_charging.adapters import cache as cache_adapter
from evolutivo_charging.adapters import events
from evolutivo_charging.adapters.cache import APPLICATION_NAME, CacheListener, RatingCache, current_generation
from evolutivo_charging.adapters.orm import outbox, request_log
from evolutivo_charging.entrypoints import consumers
from evolutivo_charging.entrypoints.app import MIGRATIONS
from evolutivo_charging.entrypoints.grpc_api import ChargingServicer
from evolutivo_charging.service_layer import reads
from evolutivo_charging.service_layer.reads import load_catalog
from evolutivo_charging.service_layer.unit_of_work import ChargingUnitOfWork
from evolutivo_runtime.db import plain_url
from evolutivo_runtime.messaging.envelope import EventMeta
from evolutivo_runtime.migrations import upgrade_to_head
from evolutivo_runtime.testing import eventually
from evolutivo_runtime.timestamps import to_timestamp
from evolutivo_stack.embedded import EmbeddedPostgres, create_database, scratch_dir
from google.protobuf.message import Message
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession
from support.databases import MigratedDatabase, ServiceDb

NOW = datetime(2031, 5, 20, 9, 30, tzinfo=UTC)
OFFER_FROM = datetime(2031, 3, 1, tzinfo=UTC)
BOUGHT = datetime(2031, 3, 15, tzinfo=UTC)
MAY_START = datetime(2031, 5, 1, tzinfo=UTC)
JUNE_START = datetime(2031, 6, 1, tzinfo=UTC)
AT = MAY_START + timedelta(days=10)
NO_CONTEXT: Any = None
RATED = usage_pb2.USAGE_STATUS_RATED
UNRATED = usage_pb2.USAGE_STATUS_UNRATED


class Db(ServiceDb):
    cache: RatingCache | None = None

    def uow(self) -> ChargingUnitOfWork:
        """The replica under test: rates through its cache."""
        return ChargingUnitOfWork(self.sessions, outbox, self.clock, events.encode, request_log, cache=self.cache)

    def other_uow(self) -> ChargingUnitOfWork:
        """Another replica: applies the events (and has no cache here)."""
        return ChargingUnitOfWork(self.sessions, outbox, self.clock, events.encode, request_log)


@pytest.fixture
async def db(migrated_database: MigratedDatabase) -> AsyncIterator[Db]:
    url = await migrated_database("charging_cache", MIGRATIONS)
    async with Db.open(url, NOW, pool_size=8) as opened:
        yield opened


class GatedListener(CacheListener):
    """The listener, whose reconnections wait while `gate` is closed (a LISTEN connection that
    stays down as long as a test needs)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.gate = asyncio.Event()
        self.gate.set()
        self.connects = 0

    async def _connect(self) -> asyncpg.Connection:
        await self.gate.wait()
        self.connects += 1
        return await super()._connect()


@contextlib.asynccontextmanager
async def listening(db: Db) -> AsyncIterator[GatedListener]:
    cache = RatingCache()
    db.cache = cache
    listener = GatedListener(cache, db.url, lambda g: load_catalog(db.uow(), g), retry_seconds=0.05)
    stop = asyncio.Event()
    task = asyncio.create_task(listener.run(stop))
    try:
        await in_step(db, cache)
        yield listener
    finally:
        listener.gate.set()
        stop.set()
        await asyncio.wait_for(task, timeout=10)
        db.cache = None


async def in_step(db: Db, cache: RatingCache) -> None:
    async def probe() -> bool | None:
        async with db.sessions() as session:
            return True if cache.usable_at(await current_generation(session)) else None

    await eventually(probe, timeout=20, what="the cache to be in step with the database")


async def kill_listeners(db: Db) -> int:
    """pg_terminate_backend on the LISTEN sessions of the database: how many were killed."""
    conn = await asyncpg.connect(plain_url(db.url))
    try:
        killed = await conn.fetch(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
            " WHERE datname = current_database() AND application_name = $1",
            APPLICATION_NAME,
        )
    finally:
        await conn.close()
    return sum(1 for row in killed if row[0])


async def apply(
    db: Db, handler: Callable[[ChargingUnitOfWork, Any, EventMeta], Awaitable[None]], event: Message
) -> None:
    """`event` applied and committed by the other replica."""
    meta = EventMeta(uuid.uuid4(), event.DESCRIPTOR.full_name, "test", NOW, 1)
    async with db.other_uow() as uow:
        await handler(uow, event, meta)
        await uow.commit()


async def new_offer(db: Db) -> None:
    servicer = ChargingServicer(db.other_uow)
    charge = c.Charge(code="calls", name="Calls", event_type="api.call", flat=c.FlatPrice(amount="0.07"))
    created = await servicer.CreateChargeOffer(
        pb.CreateChargeOfferRequest(
            charge_offer=c.ChargeOffer(
                code="api", name="API", currency_code="EUR", valid_from=to_timestamp(OFFER_FROM), charges=[charge]
            )
        ),
        NO_CONTEXT,
    )
    await servicer.ActivateChargeOffer(
        pb.ActivateChargeOfferRequest(charge_offer_id=created.charge_offer.charge_offer_id), NO_CONTEXT
    )


async def new_account(db: Db) -> uuid.UUID:
    """An account with an open cycle and no purchase yet, known through the other replica."""
    account_id = uuid.uuid4()
    account = account_pb2.Account(
        account_id=str(account_id),
        currency_code="EUR",
        time_zone="Europe/Madrid",
        status=account_pb2.ACCOUNT_STATUS_ACTIVE,
    )
    await apply(db, consumers.on_account_created, customer_events.AccountCreated(account=account))
    cycle = bill_cycle_pb2.BillCycle(
        bill_cycle_id=str(uuid.uuid4()),
        account_id=str(account_id),
        sequence=1,
        start_time=to_timestamp(MAY_START),
        end_time=to_timestamp(JUNE_START),
        status=bill_cycle_pb2.BILL_CYCLE_STATUS_OPEN,
        time_zone="Europe/Madrid",
    )
    await apply(db, consumers.on_bill_cycle_opened, billing_events.BillCycleOpened(bill_cycle=cycle))
    return account_id


def purchase_event(account_id: uuid.UUID) -> customer_events.PurchaseCreated:
    purchase = purchase_pb2.Purchase(
        purchase_id=str(uuid.uuid4()),
        account_id=str(account_id),
        charge_offer_code="api",
        charge_offer_version=1,
        quantity="1",
        start_time=to_timestamp(BOUGHT),
    )
    return customer_events.PurchaseCreated(purchase=purchase)


async def buy(db: Db, account_id: uuid.UUID) -> None:
    await apply(db, consumers.on_purchase_created, purchase_event(account_id))


def usage(account_id: uuid.UUID) -> usage_pb2.UsageEvent:
    return usage_pb2.UsageEvent(
        event_id=f"evt-{uuid.uuid4().hex}",
        account_id=str(account_id),
        event_type="api.call",
        event_time=to_timestamp(AT),
        quantity="1",
    )


async def rate(db: Db, *account_ids: uuid.UUID) -> list[usage_pb2.UsageResult]:
    """Usage of each account, recorded on the replica under test."""
    request = pb.RecordUsageBatchRequest(events=[usage(a) for a in account_ids])
    return list((await ChargingServicer(db.uow).RecordUsageBatch(request, NO_CONTEXT)).results)


def outcomes(results: Iterable[usage_pb2.UsageResult]) -> list[tuple[int, str]]:
    return [(r.status, r.reason) for r in results]


async def unbought(db: Db) -> uuid.UUID:
    """A new account without purchase, rated once by the replica under test, so the cache holds
    the view a stale cache would keep serving: no purchase."""
    account_id = await new_account(db)
    assert outcomes(await rate(db, account_id)) == [(UNRATED, "NO_MATCHING_PURCHASE")]
    return account_id


async def test_the_cache_serves_rating_and_follows_a_purchase_another_replica_learns(db: Db) -> None:
    await new_offer(db)
    async with listening(db) as listener:
        cache = listener.cache
        account_id = await unbought(db)
        await in_step(db, cache)
        hits = cache.hits
        assert outcomes(await rate(db, account_id)) == [(UNRATED, "NO_MATCHING_PURCHASE")]
        assert cache.hits == hits + 1, "the second call is served from the cache"

        await buy(db, account_id)
        # At once, whether the notification has arrived or not.
        assert outcomes(await rate(db, account_id)) == [(RATED, "")]
        await in_step(db, cache)
        assert outcomes(await rate(db, account_id)) == [(RATED, "")]
        hits = cache.hits
        assert outcomes(await rate(db, account_id)) == [(RATED, "")]
        assert cache.hits == hits + 1


async def test_a_killed_listen_connection_turns_the_cache_off_and_back_on_in_step(db: Db) -> None:
    await new_offer(db)
    async with listening(db) as listener:
        cache = listener.cache
        account_id = await unbought(db)
        await in_step(db, cache)
        assert account_id in cache._accounts

        # The LISTEN connection dies and stays down: the purchase is committed meanwhile, its
        # notification lost for this replica.
        listener.gate.clear()
        assert await kill_listeners(db) == 1
        await eventually(lambda: asyncio.sleep(0, True if cache.generation is None else None), timeout=10)
        await buy(db, account_id)
        hits = cache.hits
        assert outcomes(await rate(db, account_id)) == [(RATED, "")]
        assert cache.hits == hits, "off: read from the database"

        listener.gate.set()
        await in_step(db, cache)
        assert account_id not in cache._accounts, "reconnected: started again from an empty cache"
        assert outcomes(await rate(db, account_id)) == [(RATED, "")]
        hits = cache.hits
        assert outcomes(await rate(db, account_id)) == [(RATED, "")]
        assert cache.hits == hits + 1, "serving from the cache again"


async def test_a_purchase_committed_just_after_the_listen_connection_dies_is_rated(db: Db) -> None:
    """The kill, the commit and the rating in a row, before the listener may have noticed."""
    await new_offer(db)
    async with listening(db) as listener:
        cache = listener.cache
        for _ in range(5):
            account_id = await unbought(db)
            await in_step(db, cache)
            assert await kill_listeners(db) == 1
            await buy(db, account_id)
            assert outcomes(await rate(db, account_id)) == [(RATED, "")]
        await in_step(db, cache)
        assert listener.connects == 6


async def test_a_notification_that_never_arrives_costs_speed_not_correctness(
    db: Db, monkeypatch: pytest.MonkeyPatch
) -> None:
    await new_offer(db)
    async with listening(db) as listener:
        cache = listener.cache
        account_id = await unbought(db)
        other = await unbought(db)
        await in_step(db, cache)
        before = cache.generation

        async def bump_unnotified(session: AsyncSession, what: Iterable[str]) -> int:
            # The generation moves, the NOTIFY is lost.
            moved = text("UPDATE cache_generation SET generation = generation + 1 RETURNING generation")
            return int(await session.scalar(moved))

        with monkeypatch.context() as patch:
            patch.setattr(cache_adapter, "bump", bump_unnotified)
            await buy(db, account_id)
        assert cache.generation == before, "no notification came"
        hits = cache.hits
        assert outcomes(await rate(db, account_id, other)) == [(RATED, ""), (UNRATED, "NO_MATCHING_PURCHASE")]
        assert cache.hits == hits, "behind the database: not used"

        # The next notification shows the gap: everything is dropped and the cache serves again.
        await buy(db, other)
        await in_step(db, cache)
        assert account_id not in cache._accounts
        assert outcomes(await rate(db, account_id, other)) == [(RATED, ""), (RATED, "")]
        hits = cache.hits
        assert outcomes(await rate(db, account_id, other)) == [(RATED, ""), (RATED, "")]
        assert cache.hits == hits + 2


@pytest.mark.parametrize("notified_first", [False, True], ids=["kept-then-notified", "notified-then-kept"])
async def test_a_view_loaded_before_a_concurrent_commit_is_not_served_after_it(
    db: Db, monkeypatch: pytest.MonkeyPatch, notified_first: bool
) -> None:
    """The race between reading the generation, loading the account and keeping it: the view
    loaded just before another replica's commit is either not kept or dropped by the commit's
    notification."""
    await new_offer(db)
    async with listening(db) as listener:
        cache = listener.cache
        account_id = await new_account(db)
        await in_step(db, cache)
        load = reads.load_accounts

        async def load_then_commit(uow: ChargingUnitOfWork, ids: Iterable[uuid.UUID]) -> Any:
            loaded = await load(uow, ids)
            await buy(db, account_id)  # after the load, before the keep
            if notified_first:
                await in_step(db, cache)
            return loaded

        with monkeypatch.context() as patch:
            patch.setattr(reads, "load_accounts", load_then_commit)
            # The call began before the commit: it may go without the purchase.
            assert outcomes(await rate(db, account_id)) == [(UNRATED, "NO_MATCHING_PURCHASE")]
        assert outcomes(await rate(db, account_id)) == [(RATED, "")]
        await in_step(db, cache)
        view = cache._accounts.get(account_id)
        assert view is None or len(view.purchases) == 1
        assert outcomes(await rate(db, account_id)) == [(RATED, "")]


async def test_usage_after_a_commit_is_rated_whatever_the_listener_and_other_calls_do(db: Db) -> None:
    """Rounds of: an account the cache knows without purchase, another replica's purchase
    (the LISTEN connection killed before or after it, or not), usage at once: always rated. Other
    calls rate the same accounts all along, so loads and keeps race the commits."""
    rng = random.Random(20311)
    await new_offer(db)
    async with listening(db) as listener:
        cache = listener.cache
        accounts: list[uuid.UUID] = []
        stop = asyncio.Event()
        failures: list[BaseException] = []

        async def others() -> None:
            while not stop.is_set():
                try:
                    await rate(db, *rng.sample(accounts, min(3, len(accounts))))
                except Exception as exc:  # collected: the test fails with it below
                    failures.append(exc)
                await asyncio.sleep(0)

        for _ in range(3):
            accounts.append(await unbought(db))
        noise = [asyncio.create_task(others()) for _ in range(3)]
        try:
            for round_ in range(24):
                account_id = await unbought(db)
                accounts.append(account_id)
                kill = rng.choice(["none", "before", "after"])
                if kill == "before":
                    await kill_listeners(db)
                await buy(db, account_id)
                if kill == "after":
                    await kill_listeners(db)
                got = outcomes(await rate(db, account_id))
                assert got == [(RATED, "")], f"round {round_} (kill {kill}): {got}"
        finally:
            stop.set()
            await asyncio.gather(*noise)
        assert not failures, failures
        await in_step(db, cache)
        assert cache.hits > 0, "the cache served some of it"
        for account_id in accounts[3:]:
            view = cache._accounts.get(account_id)
            assert view is None or len(view.purchases) == 1


async def test_a_restarted_replica_starts_empty_at_the_database_generation(db: Db) -> None:
    await new_offer(db)
    account_id = await new_account(db)
    await buy(db, account_id)
    async with db.sessions() as session:
        generation = await current_generation(session)
    assert generation > 0
    async with listening(db) as listener:
        cache = listener.cache
        assert cache.generation == generation and len(cache) == 0
        assert cache.catalog is not None and "api" in cache.catalog.versions
        assert outcomes(await rate(db, account_id)) == [(RATED, "")]


# A PostgreSQL of its own, restarted like the fault suite does (immediate shutdown).


@pytest.fixture
def own_postgres() -> Iterator[tuple[EmbeddedPostgres, Any]]:
    with scratch_dir("cache-pg") as data_dir:
        server = EmbeddedPostgres()
        server.start(data_dir)
        try:
            yield server, data_dir
        finally:
            server.stop(immediate=True)


async def test_postgresql_restarted_cuts_the_cache_off_and_it_comes_back_in_step(
    own_postgres: tuple[EmbeddedPostgres, Any],
) -> None:
    server, data_dir = own_postgres
    url = await create_database(server.url, f"charging_cache_{uuid.uuid4().hex[:8]}")
    await asyncio.to_thread(upgrade_to_head, MIGRATIONS, url)
    async with Db.open(url, NOW, pool_size=8) as db:
        await new_offer(db)
        async with listening(db) as listener:
            cache = listener.cache
            stale = await unbought(db)
            await in_step(db, cache)
            assert stale in cache._accounts
            port = server.port
            await asyncio.to_thread(server.stop, immediate=True)
            await eventually(lambda: asyncio.sleep(0, True if cache.generation is None else None), timeout=10)
            await asyncio.to_thread(server.start, data_dir, port)

            # First thing after the restart, maybe before the listener is back.
            bought = purchase_event(stale)
            await retried(lambda: apply(db, consumers.on_purchase_created, bought))
            assert outcomes(await retried(lambda: rate(db, stale))) == [(RATED, "")]
            await in_step(db, cache)
            assert stale not in cache._accounts or len(cache._accounts[stale].purchases) == 1
            fresh = await unbought(db)
            await in_step(db, cache)
            await buy(db, fresh)
            assert outcomes(await rate(db, fresh, stale)) == [(RATED, ""), (RATED, "")]
            await in_step(db, cache)
            hits = cache.hits
            assert outcomes(await rate(db, fresh, stale)) == [(RATED, ""), (RATED, "")]
            assert cache.hits == hits + 2


async def retried(call: Callable[[], Awaitable[Any]]) -> Any:
    """`call` once the pool's connections cut by the restart are replaced (the first use of a
    dead pooled connection fails; the pool then reconnects)."""
    for _ in range(10):
        with contextlib.suppress(Exception):
            return await call()
        await asyncio.sleep(0.2)
    return await call()
