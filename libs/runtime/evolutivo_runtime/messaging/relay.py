"""Publishes the outbox to JetStream, in order, without losing or doubling an event.

One relay at a time per database publishes (a transaction-scoped advisory lock), so events leave
in commit order; other replicas stand by and take over when it dies. Publishes are asynchronous
with a bounded number in flight; a batch's rows are deleted in the transaction that read them, which
commits once JetStream acknowledged all of them (when a publish fails, the acknowledged rows are
deleted apart and the failed ones stay). A crash between the acks and the commit republishes with
the same Nats-Msg-Id, which JetStream drops as a duplicate inside its window and the consumers'
inbox drops after it.

A pass reads the rows after those it has published, not from the start of the table, back to a
lower seq it has not seen while a transaction that may have taken it is still in progress
(`OutboxCursor`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Sequence
from typing import Any

import asyncpg
from nats.js import JetStreamContext
from prometheus_client import Counter, Gauge
from sqlalchemy import Table, any_, bindparam, delete, func, select, text
from sqlalchemy.ext.asyncio import AsyncEngine

from evolutivo_runtime.db import plain_url
from evolutivo_runtime.messaging.outbox_cursor import OutboxCursor
from evolutivo_runtime.messaging.tables import OUTBOX_CHANNEL
from evolutivo_runtime.progress import RELAY_TASK, heartbeat

log = logging.getLogger(__name__)

# Arbitrary constant: the advisory-lock key of "the outbox relay" inside a service's database.
RELAY_LOCK_KEY = 0x0E7010B0

# Whether this relay leads, and the transactions holding a lock on the outbox (those that may still
# commit a seq the relay has not seen): asked before a pass's read when the cursor waits on them.
_LEAD_AND_WRITERS = text(
    "SELECT pg_try_advisory_xact_lock(:key) AS leading, ARRAY("
    "SELECT l.virtualtransaction FROM pg_locks AS l WHERE l.locktype = 'relation' "
    "AND l.relation = to_regclass(:outbox) AND l.mode = 'RowExclusiveLock' "
    "AND l.pid IS DISTINCT FROM pg_backend_pid()"
    ") AS writers"
)

OUTBOX_BACKLOG = Gauge("evolutivo_outbox_backlog", "Events written to the outbox and not yet published")
PUBLISHED = Counter("evolutivo_outbox_published_total", "Events the relay published to JetStream")


class _PartlyPublished(Exception):
    """Some of a batch's publishes failed (its transaction rolls back)."""


class OutboxRelay:
    def __init__(
        self,
        engine: AsyncEngine,
        database_url: str,
        outbox: Table,
        js: JetStreamContext,
        batch_size: int,
        poll_seconds: float,
        linger: float = 0.0,
        backlog_every_seconds: float = 1.0,
        sweep_seconds: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
        ack_timeout_seconds: float = 10.0,
    ) -> None:
        # The read's snapshot must be taken after the check of the writers (OutboxCursor): each
        # statement its own snapshot, whatever the database's default.
        self._engine = engine.execution_options(isolation_level="READ COMMITTED")
        self._database_url = database_url
        self._outbox = outbox
        self._js = js
        self._batch_size = batch_size
        self._poll_seconds = poll_seconds
        self._wakeup = asyncio.Event()
        self._linger = linger
        # The backlog gauge is a count(*): taken at most this often, not after every pass.
        self._backlog_every = backlog_every_seconds
        self._backlog_at = float("-inf")
        self._cursor = OutboxCursor(sweep_seconds)
        self._clock = clock
        self._sweep_every = sweep_seconds
        self._warned_of: tuple[int, float] | None = None  # the gap warned about last
        # How long a batch's publishes may wait for JetStream's acks. nats-py resolves an ack's
        # future only when the ack arrives: one lost (NATS restarted, the stream changed leader)
        # would hold the pass, its transaction and the leader lock for good.
        self._ack_timeout = ack_timeout_seconds
        # The leader lock, the read and the delete in one round trip (after a check of the writers
        # when the cursor waits on them, OutboxCursor). The lock is an uncorrelated
        # subquery, which PostgreSQL evaluates once, before the scan (a one-time filter), so a
        # relay that does not lead touches no rows at all. Built once: a statement built per pass
        # costs SQLAlchemy its cache key again every time.
        leading = select(func.pg_try_advisory_xact_lock(RELAY_LOCK_KEY)).scalar_subquery()
        batch = (
            select(outbox.c.seq)
            .where(leading, outbox.c.seq > bindparam("after"))
            .order_by(outbox.c.seq)
            .limit(batch_size)
        )
        # `seq = ANY(ARRAY(batch))`, not `seq IN (batch)`: an outbox is nearly empty whenever it is
        # analyzed, and with such statistics the planner joins the IN by walking the whole primary
        # key, deleted rows' entries included (1,029 buffers against 4 on a drained table), where
        # the array is read first and its seqs looked up.
        self._take = (
            delete(outbox)
            .where(outbox.c.seq == any_(func.array(batch.scalar_subquery())))
            .returning(outbox.c.seq, outbox.c.subject, outbox.c.payload, outbox.c.headers)
        )

    async def run(self, stop: asyncio.Event) -> None:
        listener = await self._listen()
        loop = asyncio.get_running_loop()
        last_pass = float("-inf")
        beat = heartbeat(RELAY_TASK)
        try:
            while not stop.is_set():
                beat.set_to_current_time()
                if self._linger > 0 and self._wakeup.is_set():
                    # At most one pass per linger: woken by a commit soon after the last pass, wait
                    # out the rest of it, and this pass publishes the commits meanwhile too (one
                    # transaction and one wake-up here, and larger batches downstream, for several).
                    # After a quiet spell the first commit is published at once.
                    rest = last_pass + self._linger - loop.time()
                    if rest > 0:
                        with contextlib.suppress(TimeoutError):
                            await asyncio.wait_for(stop.wait(), rest)
                # Cleared before publishing, so a commit notified while a batch is out is not lost.
                self._wakeup.clear()
                last_pass = loop.time()
                failed = False
                try:
                    while await self.publish_batch() == self._batch_size and not stop.is_set():
                        beat.set_to_current_time()  # a long drain is not a stuck relay
                        await self._count_backlog()  # and shows on the gauge as it goes
                except Exception:
                    log.exception("outbox relay failed; retrying")
                    failed = True
                # After a failed pass too: the backlog gauge is what pages when NATS refuses the
                # publishes (deploy/k8s/monitoring/alerts.yaml).
                await self._update_backlog()
                self.warn_of_a_stuck_gap()
                if failed:
                    await asyncio.sleep(self._poll_seconds)  # back off before the retry
                with contextlib.suppress(TimeoutError):
                    waiters = [asyncio.ensure_future(self._wakeup.wait()), asyncio.ensure_future(stop.wait())]
                    _, pending = await asyncio.wait(waiters, timeout=self._poll_seconds, return_when="FIRST_COMPLETED")
                    for waiter in pending:
                        waiter.cancel()
            await self.drain()  # what was committed before the stop
        finally:
            if listener is not None:
                await listener.close()

    async def drain(self) -> None:
        """Publishes everything in the outbox now."""
        found = await self.publish_batch(sweep=True)
        while found == self._batch_size:
            found = await self.publish_batch()

    async def _listen(self) -> asyncpg.Connection | None:
        """LISTEN for commits that wrote events; polling still covers a lost notification."""
        try:
            conn = await asyncpg.connect(plain_url(self._database_url))
            await conn.add_listener(OUTBOX_CHANNEL, lambda *_: self._wakeup.set())
            return conn
        except Exception:
            log.warning("outbox LISTEN unavailable; relying on polling", exc_info=True)
            return None

    async def publish_batch(self, *, sweep: bool = False) -> int:
        """Publishes up to one batch; returns how many events it found (0 if another relay leads).

        `sweep` reads the whole outbox instead of after what this relay published."""
        after = self._cursor.begin_pass(self._clock(), sweep=sweep)
        try:
            async with self._engine.begin() as conn:
                if self._cursor.checks_writers:
                    check = {"key": RELAY_LOCK_KEY, "outbox": self._outbox.fullname}
                    leading, writers = (await conn.execute(_LEAD_AND_WRITERS, check)).one()
                    if not leading:
                        return 0
                    self._cursor.writers_in_progress(writers)
                # The batch's delete commits once JetStream acknowledged every event of it (the
                # common case: one statement and its commit).
                found = (await conn.execute(self._take, {"after": after})).all()
                rows = sorted(found, key=lambda row: row.seq)  # RETURNING: no order
                if not rows:
                    self._cursor.published(after, [], full=False)
                    return 0
                results = await self._publish(rows)
                failures = [r for r in results if isinstance(r, BaseException)]
                if failures:
                    raise _PartlyPublished  # leaving the block by it rolls the delete back
        except _PartlyPublished:
            pass
        else:
            PUBLISHED.inc(len(rows))
            self._cursor.published(after, [row.seq for row in rows], full=len(rows) == self._batch_size)
            return len(rows)
        # A publish failed: the rows JetStream acknowledged are in its stream, so they go (not
        # published again on every retry); the failed ones stay for the next pass.
        acked = [row.seq for row, result in zip(rows, results, strict=True) if not isinstance(result, BaseException)]
        if acked:
            async with self._engine.begin() as conn:
                # Under the leader lock: a pass of another replica must not read these rows while
                # they are being deleted (it would find fewer than it picked, and publish them again).
                await conn.execute(select(func.pg_advisory_xact_lock(RELAY_LOCK_KEY)))
                await conn.execute(delete(self._outbox).where(self._outbox.c.seq.in_(acked)))
            self._cursor.published(after, acked, full=False, complete=False)
        PUBLISHED.inc(len(acked))
        raise RuntimeError(f"{len(failures)} of {len(rows)} publishes failed: {failures[0]!r}")

    async def _publish(self, rows: Sequence[Any]) -> list[object]:
        """Publishes the rows with their acks in flight together; returns each row's ack, or the
        error that failed it. A publish that cannot be sent fails it and the rows after it (not
        sent); an ack that has not come within the ack timeout fails its row (JetStream may have
        stored the event: the next pass publishes it again and JetStream drops the copy by its
        Nats-Msg-Id, within the stream's duplicate window)."""
        results: list[object] = []
        futures: list[asyncio.Future[Any]] = []
        for row in rows:
            try:
                # No wait_stall: with one, nats-py wraps each publish's slot in a task and a timer,
                # and the loop turn it yields sends every event in its own write (the bill run:
                # NATS 0.11 -> 0.40 ms of CPU per bill, the consumers' batches smaller). A batch
                # is within the in-flight bound, and every slot comes back at the end of its pass.
                futures.append(await self._js.publish_async(row.subject, row.payload, headers=dict(row.headers)))
            except Exception as error:
                results = [error] * (len(rows) - len(futures))
                self._cancel_orphaned_acks(futures)
                break
        if futures:
            _, late = await asyncio.wait(futures, timeout=self._ack_timeout)
            for future in late:
                future.cancel()  # gives back its in-flight slot (nats-py's done callback)
        timed_out = TimeoutError(f"no JetStream ack within {self._ack_timeout} s")
        acks = [timed_out if f.cancelled() else (f.exception() or f.result()) for f in futures]
        return acks + results

    def _cancel_orphaned_acks(self, ours: Sequence[asyncio.Future[Any]]) -> None:
        """nats-py's publish_async takes an in-flight slot and registers the ack's future before it
        sends; when the send raises (NATS's maximum payload, its buffer full while reconnecting) it
        gives neither back, and every such pass would leak a slot until publishing stalls for good.
        Cancelling the orphaned future gives both back (its done callback). The relay's JetStream
        context is its own (relay_thread.py), and a pass waits for all its acks before the next,
        so a future still pending that is not this pass's is that orphan."""
        registered: dict[str, asyncio.Future[Any]] = getattr(self._js, "_publish_async_futures", {})
        mine = {id(f) for f in ours}
        for future in list(registered.values()):
            if id(future) not in mine and not future.done():
                future.cancel()

    def warn_of_a_stuck_gap(self) -> None:
        """Once per gap: a transaction that wrote the outbox and has not ended for a sweep's time
        (idle in a transaction?) holds back every pass of this relay to its seqs."""
        oldest = self._cursor.oldest_gap()
        if oldest is None:
            return
        first, since, writers = oldest
        waited = self._clock() - since
        if waited < self._sweep_every or self._warned_of == (first, since):
            return
        self._warned_of = (first, since)
        log.warning(
            "outbox relay waiting on transactions that may still commit a lower seq",
            extra={"outbox_seq": first, "waiting_seconds": round(waited), "writers": sorted(writers)},
        )

    async def _update_backlog(self) -> None:
        """Counts the backlog after a pass (at most once per `backlog_every_seconds`)."""
        await self._count_backlog()

    async def _count_backlog(self) -> None:
        now = asyncio.get_running_loop().time()
        if now - self._backlog_at < self._backlog_every:
            return
        self._backlog_at = now
        try:
            async with self._engine.connect() as conn:
                OUTBOX_BACKLOG.set(await conn.scalar(select(func.count()).select_from(self._outbox)) or 0)
        except Exception:
            # The database is out of reach (the pass said so too): the gauge keeps its last count.
            log.warning("outbox backlog not counted", exc_info=True)
