"""Loads and stores what rating reads and writes: the purchase and cycle projections, usage
events, usage counters and charges.

Locks, in an order that keeps concurrent calls from deadlocking. Rating a call's events: the
accounts' advisory locks shared (AccountLocks, taken by the statement that reads the events
received before), the usage counters by key, then the new events inserted in event_id order by
the commit's statement (a transaction waits there only for another inserting the same id, which
holds every lock it needs already). Rating kept events again (ResubmitUsage): the events locked
FOR UPDATE in event_id order, then the accounts' locks shared, then the counters (a new event's
insert never waits for a stored event's row lock, and a rerating run locks no events, so the
orders cannot wait on each other). A rerating run: its
account's lock exclusive, then the counters. Fees: a bill cycle (its upsert; a consumer batch's cycles in one upsert,
in cycle id order), then purchases (their upsert, or FOR UPDATE SKIP LOCKED, which never waits),
then fee keys (inserted in key order).
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from decimal import Decimal
from typing import Any

from evolutivo_runtime.bulk import insert_rows
from evolutivo_runtime.uow import Write
from sqlalchemy import Select, TextClause, and_, delete, func, literal_column, or_, select, text, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from evolutivo_charging.adapters.cache import CURRENT_GENERATION_COLUMN
from evolutivo_charging.adapters.orm import (
    bill_cycles,
    charges,
    credit_states,
    fee_charges,
    purchases,
    rerate_runs,
    usage_counters,
    usage_events,
)
from evolutivo_charging.domain.fees import Fee, FeeKey
from evolutivo_charging.domain.pricing import TierLine
from evolutivo_charging.domain.rating import CounterKey, currency_exponent
from evolutivo_charging.domain.usage import (
    BillCycle,
    BillCycleStatus,
    ChargeKind,
    CreditState,
    Purchase,
    RatedCharge,
    UsageEvent,
    UsageStatus,
)


def _str(value: Decimal) -> str:
    return format(value, "f")


class PurchaseRepository:
    def __init__(self, session: AsyncSession) -> None:
        self._session = session

    async def learn(self, purchase: Purchase, now: datetime) -> bool:
        """On PurchaseCreated: records the purchase unless charging knows it already (a
        PurchaseEnded applied first carries it, with its end); False when it did."""
        t = purchases
        result = await self._session.execute(
            insert(t)
            .values(**_purchase_row(purchase), update_time=now)
            .on_conflict_do_nothing(index_elements=[t.c.purchase_id])
            .returning(t.c.purchase_id)
        )
        return result.first() is not None

    async def end(self, purchase: Purchase, ended_at: datetime, now: datetime) -> bool:
        """On PurchaseEnded published at `ended_at`: its end (or cancellation) replaces what an
        older PurchaseEnded said; an older one than applied changes nothing. A cancellation
        stays. False when nothing changed."""
        t = purchases
        row = _purchase_row(purchase)
        statement = insert(t).values(**row, end_update_time=ended_at, update_time=now)
        new = statement.excluded
        upsert = statement.on_conflict_do_update(
            index_elements=[t.c.purchase_id],
            set_={
                "end_time": new.end_time,
                "cancel_time": func.coalesce(t.c.cancel_time, new.cancel_time),
                "end_update_time": new.end_update_time,
                "update_time": new.update_time,
            },
            where=or_(t.c.end_update_time.is_(None), t.c.end_update_time <= new.end_update_time),
        ).returning(t.c.purchase_id)
        return (await self._session.execute(upsert)).first() is not None

    async def get(self, purchase_id: uuid.UUID) -> Purchase | None:
        row = (await self._session.execute(select(purchases).where(purchases.c.purchase_id == purchase_id))).first()
        return _purchase(row._mapping) if row else None

    async def for_accounts(self, account_ids: Iterable[uuid.UUID]) -> dict[uuid.UUID, list[Purchase]]:
        """Every purchase of the accounts, by account."""
        ids = sorted(set(account_ids))
        found: dict[uuid.UUID, list[Purchase]] = {a: [] for a in ids}
        if not ids:
            return found
        rows = await self._session.execute(select(purchases).where(purchases.c.account_id.in_(ids)))
        for row in rows:
            purchase = _purchase(row._mapping)
            found[purchase.account_id].append(purchase)
        return found

    async def claim_started(self, now: datetime, limit: int, skip: Iterable[uuid.UUID] = ()) -> list[Purchase]:
        """Up to `limit` purchases that have started by `now` and whose start's fees charging has
        not charged yet, earliest start first, each locked until the transaction ends; rows another
        transaction holds are skipped (FOR UPDATE SKIP LOCKED), and so are those in `skip`."""
        t = purchases
        query = (
            select(t)
            .where(t.c.start_fees_time.is_(None), t.c.start_time <= now)
            .order_by(t.c.start_time, t.c.purchase_id)
            .limit(limit)
            .with_for_update(skip_locked=True)
        )
        excluded = sorted(set(skip))
        if excluded:
            query = query.where(t.c.purchase_id.not_in(excluded))
        return [_purchase(row._mapping) for row in await self._session.execute(query)]

    async def start_fees_pending(self, account_id: uuid.UUID, now: datetime) -> set[uuid.UUID]:
        """The account's purchases that have started by `now` and whose start's fees are not
        charged yet."""
        t = purchases
        rows = await self._session.execute(
            select(t.c.purchase_id).where(
                t.c.account_id == account_id, t.c.start_fees_time.is_(None), t.c.start_time <= now
            )
        )
        return {row.purchase_id for row in rows}

    async def start_fees_pending_of(self, account_ids: Iterable[uuid.UUID], now: datetime) -> set[uuid.UUID]:
        """`start_fees_pending` of several accounts at once: their purchases that have started by
        `now` and whose start's fees are not charged yet."""
        ids = sorted(set(account_ids))
        if not ids:
            return set()
        t = purchases
        rows = await self._session.execute(
            select(t.c.purchase_id).where(t.c.account_id.in_(ids), t.c.start_fees_time.is_(None), t.c.start_time <= now)
        )
        return {row.purchase_id for row in rows}

    async def settle_start_fees(self, purchase_ids: Iterable[uuid.UUID], now: datetime) -> None:
        """Records that the fees due at these purchases' starts are charged (or that there are none)."""
        ids = sorted(set(purchase_ids))
        if ids:
            t = purchases
            await self._session.execute(
                update(t).where(t.c.purchase_id.in_(ids), t.c.start_fees_time.is_(None)).values(start_fees_time=now)
            )


def _purchase_row(p: Purchase) -> dict[str, Any]:
    return {
        "purchase_id": p.purchase_id,
        "account_id": p.account_id,
        "service_id": p.service_id,
        "charge_offer_code": p.charge_offer_code,
        "charge_offer_version": p.charge_offer_version,
        "quantity": p.quantity,
        "start_time": p.start_time,
        "end_time": p.end_time,
        "cancel_time": p.cancel_time,
        "price_overrides": [{"charge_code": code, "price": _str(price)} for code, price in p.price_overrides],
    }


def _purchase(row: Any) -> Purchase:
    return Purchase(
        purchase_id=row["purchase_id"],
        account_id=row["account_id"],
        service_id=row["service_id"],
        charge_offer_code=row["charge_offer_code"],
        charge_offer_version=row["charge_offer_version"],
        quantity=row["quantity"],
        start_time=row["start_time"],
        end_time=row["end_time"],
        cancel_time=row["cancel_time"],
        price_overrides=tuple((o["charge_code"], Decimal(o["price"])) for o in row["price_overrides"]),
    )


class BillCycleRepository:
    def __init__(self, session: AsyncSession) -> None:
        self._session = session

    async def upsert(self, cycle: BillCycle, now: datetime) -> None:
        """Records a cycle, or what changed of one charging knows: it closes, never reopens."""
        t = bill_cycles
        statement = insert(t).values(
            bill_cycle_id=cycle.bill_cycle_id,
            account_id=cycle.account_id,
            bill_unit_id=cycle.bill_unit_id,
            sequence=cycle.sequence,
            start_time=cycle.start_time,
            end_time=cycle.end_time,
            status=cycle.status.value,
            close_time=cycle.close_time,
            time_zone=cycle.time_zone,
            update_time=now,
        )
        closed = BillCycleStatus.CLOSED.value
        statement = statement.on_conflict_do_update(
            index_elements=[t.c.bill_cycle_id],
            set_={
                "status": closed,
                "close_time": func.coalesce(t.c.close_time, statement.excluded.close_time),
                "update_time": statement.excluded.update_time,
            },
            # Only a cycle that closes changes.
            where=and_(t.c.status != closed, statement.excluded.status == closed),
        )
        await self._session.execute(statement)

    async def upsert_many(self, cycles: Sequence[BillCycle], now: datetime) -> dict[uuid.UUID, bool]:
        """Records the cycles as `upsert` would, one after another in this order, in one statement
        (rows in cycle id order, so two transactions lock them in one order). Returns the cycles it
        changed: True for those it inserted, False for those it closed (they were open). Those it
        leaves out were known already and stay as they were (open, or closed already); like every
        cycle of the statement, they stay locked until the transaction ends."""
        merged: dict[uuid.UUID, BillCycle] = {}
        for cycle in cycles:
            known = merged.get(cycle.bill_cycle_id)
            if known is None:
                merged[cycle.bill_cycle_id] = cycle
            elif cycle.status is BillCycleStatus.CLOSED and known.status is not BillCycleStatus.CLOSED:
                # What the second upsert does to the row the first one left: it closes. (Exact as
                # long as an opened cycle carries no close time, as billing's never does.)
                close_time = known.close_time if known.close_time is not None else cycle.close_time
                merged[cycle.bill_cycle_id] = replace(known, status=BillCycleStatus.CLOSED, close_time=close_time)
        if not merged:
            return {}
        rows = [merged[key] for key in sorted(merged)]
        result = await self._session.execute(
            _UPSERT_CYCLES,
            {
                "bill_cycle_id": [c.bill_cycle_id for c in rows],
                "account_id": [c.account_id for c in rows],
                "bill_unit_id": [c.bill_unit_id for c in rows],
                "sequence": [c.sequence for c in rows],
                "start_time": [c.start_time for c in rows],
                "end_time": [c.end_time for c in rows],
                "status": [c.status.value for c in rows],
                "close_time": [c.close_time for c in rows],
                "time_zone": [c.time_zone for c in rows],
                "now": now,
            },
        )
        return {row.bill_cycle_id: bool(row.inserted) for row in result}

    async def get(self, bill_cycle_id: uuid.UUID) -> BillCycle | None:
        row = (
            await self._session.execute(select(bill_cycles).where(bill_cycles.c.bill_cycle_id == bill_cycle_id))
        ).first()
        return _cycle(row._mapping) if row else None

    async def for_accounts(self, account_ids: Iterable[uuid.UUID]) -> dict[uuid.UUID, list[BillCycle]]:
        ids = sorted(set(account_ids))
        found: dict[uuid.UUID, list[BillCycle]] = {a: [] for a in ids}
        if not ids:
            return found
        rows = await self._session.execute(select(bill_cycles).where(bill_cycles.c.account_id.in_(ids)))
        for row in rows:
            cycle = _cycle(row._mapping)
            found[cycle.account_id].append(cycle)
        return found


# `BillCycleRepository.upsert` over arrays, one statement text whatever the number of rows (a
# multi-row VALUES would be compiled and planned again for every count). `xmax = 0`: the row was
# inserted, not updated. A known cycle is only ever closed, never reopened.
_CLOSED = BillCycleStatus.CLOSED.value
_UPSERT_CYCLES = text(
    f"""
    INSERT INTO bill_cycles AS t
        (bill_cycle_id, account_id, bill_unit_id, sequence, start_time, end_time, status, close_time,
         time_zone, update_time)
    SELECT bill_cycle_id, account_id, bill_unit_id, sequence, start_time, end_time, status, close_time,
           time_zone, CAST(:now AS timestamptz)
    FROM unnest(
        CAST(:bill_cycle_id AS uuid[]), CAST(:account_id AS uuid[]), CAST(:bill_unit_id AS uuid[]),
        CAST(:sequence AS bigint[]), CAST(:start_time AS timestamptz[]), CAST(:end_time AS timestamptz[]),
        CAST(:status AS text[]), CAST(:close_time AS timestamptz[]), CAST(:time_zone AS text[])
    ) WITH ORDINALITY AS r(bill_cycle_id, account_id, bill_unit_id, sequence, start_time, end_time, status,
                           close_time, time_zone, ordinal)
    ORDER BY ordinal
    ON CONFLICT (bill_cycle_id) DO UPDATE
        SET status = '{_CLOSED}',
            close_time = coalesce(t.close_time, excluded.close_time),
            update_time = excluded.update_time
        WHERE t.status <> '{_CLOSED}' AND excluded.status = '{_CLOSED}'
    RETURNING t.bill_cycle_id, (t.xmax = 0) AS inserted
    """
)


def _cycle(row: Any) -> BillCycle:
    return BillCycle(
        bill_cycle_id=row["bill_cycle_id"],
        account_id=row["account_id"],
        start_time=row["start_time"],
        end_time=row["end_time"],
        status=BillCycleStatus(row["status"]),
        bill_unit_id=row["bill_unit_id"],
        sequence=row["sequence"],
        close_time=row["close_time"],
        time_zone=row["time_zone"],
    )


@dataclass(frozen=True)
class StoredUsage:
    """A usage event as charging keeps it, with the outcome of its latest rating."""

    event: UsageEvent
    fingerprint: str
    status: UsageStatus
    reason: str
    charge_ids: tuple[uuid.UUID, ...]
    receive_time: datetime
    seq: int


@dataclass(frozen=True)
class Outcome:
    event_id: str
    status: UsageStatus
    reason: str
    charge_ids: tuple[uuid.UUID, ...]
    # RATED: the cycle whose counters counted its units.
    bill_cycle_id: uuid.UUID | None = None


# The outcomes of rating, in one statement. Each event takes the next usage_rate_seq in the order
# given: the CTE is evaluated once (MATERIALIZED), its volatile nextval after its ORDER BY. The
# `= ANY` repeats the join on the primary key so the plan finds the rows by the index whatever the
# table's statistics say: joined only to the CTE, a table grown since its last ANALYZE was read
# whole (a hash join over a sequential scan, 1.8 ms for a group of two events at 1,600 rows).
_RECORD_OUTCOMES = text(
    """
    WITH v AS MATERIALIZED (
        SELECT a.event_id, a.status, a.reason, a.charge_ids, a.bill_cycle_id, nextval('usage_rate_seq') AS rate_seq
        FROM unnest(CAST(:event_ids AS text[]), CAST(:statuses AS text[]), CAST(:reasons AS text[]),
                    CAST(:charge_ids AS text[]), CAST(:cycles AS uuid[]))
             WITH ORDINALITY AS a(event_id, status, reason, charge_ids, bill_cycle_id, ordinal)
        ORDER BY a.ordinal
    )
    UPDATE usage_events AS u
    SET status = v.status, reason = v.reason, bill_cycle_id = v.bill_cycle_id,
        rate_seq = v.rate_seq, rate_time = :now, attempts = u.attempts + 1,
        charge_ids = CAST(string_to_array(v.charge_ids, ',') AS uuid[])
    FROM v
    WHERE u.event_id = v.event_id AND u.event_id = ANY(CAST(:event_ids AS text[]))
    """
)


# New events, rated, in one statement (UsageRepository.insert_statement): rate_seq taken in the
# order given (the CTE's ORDER BY, as in _RECORD_OUTCOMES), the rows inserted in event_id order.
_INSERT_NEW = text(
    """
    WITH v AS MATERIALIZED (
        SELECT a.event_id, a.payload_sha256, a.account_id, a.payload, a.event_time, a.status, a.reason,
               a.charge_ids, a.bill_cycle_id, nextval('usage_rate_seq') AS rate_seq
        FROM unnest(CAST(:new_event_ids AS text[]), CAST(:new_fingerprints AS text[]),
                    CAST(:new_account_ids AS uuid[]), CAST(:new_payloads AS text[]),
                    CAST(:new_event_times AS timestamptz[]), CAST(:new_statuses AS text[]),
                    CAST(:new_reasons AS text[]), CAST(:new_charge_ids AS text[]), CAST(:new_cycles AS uuid[]))
             WITH ORDINALITY AS a(event_id, payload_sha256, account_id, payload, event_time, status, reason,
                                  charge_ids, bill_cycle_id, ordinal)
        ORDER BY a.ordinal
    )
    INSERT INTO usage_events (event_id, payload_sha256, account_id, payload, status, reason, charge_ids,
                              receive_time, rate_time, attempts, event_time, bill_cycle_id, rate_seq)
    SELECT v.event_id, v.payload_sha256, v.account_id, CAST(v.payload AS jsonb), v.status, v.reason,
           CAST(string_to_array(v.charge_ids, ',') AS uuid[]), CAST(:now AS timestamptz),
           CAST(:now AS timestamptz), 1, v.event_time, v.bill_cycle_id, v.rate_seq
    FROM v
    ORDER BY v.event_id
    """
)


class UsageRaced(Exception):
    """A usage event this transaction rated as new was stored by another one meanwhile (the same
    event sent twice at once): the transaction is rolled back and the call runs again, to find it
    stored (service_layer.usage.record_usage)."""


def raced(error: IntegrityError) -> bool:
    """Whether the commit failed on a usage event's id another transaction stored first."""
    # SQLAlchemy's asyncpg adapter keeps asyncpg's own error, which names the constraint, as the cause.
    return getattr(getattr(error.orig, "__cause__", None), "constraint_name", None) == "usage_events_pkey"


class UsageRepository:
    def __init__(self, session: AsyncSession) -> None:
        self._session = session

    async def received(self, events: Sequence[UsageEvent]) -> tuple[dict[str, StoredUsage], int]:
        """Takes the events' accounts' share locks (AccountLocks) and returns those of the events
        charging has received before, with the rating cache's generation (adapters/cache.py:
        whether the replica's cache may serve this transaction), in one statement. The others are
        new: `insert_statement` writes them at the commit, rated (docs/charging.md,
        "Idempotency")."""
        ids = sorted({e.event_id for e in events})
        result = await self._session.execute(
            _RECEIVED, {"event_ids": ids, **AccountLocks.sharing(e.account_id for e in events)[1]}
        )
        rows = result.all()
        # One row at least (the generation), with the events' columns NULL when none was received.
        generation = int(rows[0].cache_generation or 0)
        return {row.event_id: _stored(row._mapping) for row in rows if row.event_id is not None}, generation

    async def get_many(self, event_ids: Iterable[str], for_update: bool = False) -> dict[str, StoredUsage]:
        """The stored events among `event_ids`; with `for_update`, locked in event_id order."""
        ids = sorted(set(event_ids))
        if not ids:
            return {}
        t = usage_events
        query = select(t).where(t.c.event_id.in_(ids)).order_by(t.c.event_id)
        if for_update:
            query = query.with_for_update()
        return {row.event_id: _stored(row._mapping) for row in await self._session.execute(query)}

    @staticmethod
    def insert_statement(rated: Sequence[tuple[UsageEvent, Outcome]], now: datetime) -> Write | None:
        """New events with the outcome of their rating, in one INSERT over arrays, each taking the
        next `usage_rate_seq` in the order given (as `record_statement`). They go in in event_id
        order, so two transactions inserting the same ids wait for each other instead of
        deadlocking; an id another transaction stored meanwhile fails the commit (UsageRaced)."""
        if not rated:
            return None
        return _INSERT_NEW, {
            "now": now,
            "new_event_ids": [e.event_id for e, _ in rated],
            "new_fingerprints": [e.fingerprint() for e, _ in rated],
            "new_account_ids": [e.account_id for e, _ in rated],
            "new_payloads": [e.payload_text() for e, _ in rated],
            "new_event_times": [e.event_time for e, _ in rated],
            "new_statuses": [o.status.value for _, o in rated],
            "new_reasons": [o.reason for _, o in rated],
            # Comma-joined, as in record_statement.
            "new_charge_ids": [",".join(str(c) for c in o.charge_ids) for _, o in rated],
            "new_cycles": [o.bill_cycle_id for _, o in rated],
        }

    async def record(self, outcomes: Sequence[Outcome], now: datetime) -> None:
        write = self.record_statement(outcomes, now)
        if write is not None:
            await self._session.execute(*write)

    @staticmethod
    def record_statement(outcomes: Sequence[Outcome], now: datetime) -> Write | None:
        """The outcome of rating kept events this transaction holds locked, in one UPDATE over arrays. Each takes
        the next `usage_rate_seq` in the order given, the order they were priced in: the order
        their cycle's counters counted them (the caller holds the counters' locks), which
        rerating replays."""
        if not outcomes:
            return None
        return _RECORD_OUTCOMES, {
            "now": now,
            "event_ids": [o.event_id for o in outcomes],
            "statuses": [o.status.value for o in outcomes],
            "reasons": [o.reason for o in outcomes],
            # Comma-joined (arrays of arrays must be rectangular); "" is the empty array.
            "charge_ids": [",".join(str(c) for c in o.charge_ids) for o in outcomes],
            "cycles": [o.bill_cycle_id for o in outcomes],
        }

    async def rated_cycles_in_window(
        self, account_id: uuid.UUID, start: datetime, end: datetime
    ) -> dict[str, uuid.UUID | None]:
        """The account's RATED events with an event time in [start, end): event id -> the cycle
        their units counted in (None for one rated to zero before migration 0008)."""
        t = usage_events
        rows = await self._session.execute(
            select(t.c.event_id, t.c.bill_cycle_id).where(
                t.c.account_id == account_id,
                t.c.status == UsageStatus.RATED.value,
                t.c.event_time >= start,
                t.c.event_time < end,
            )
        )
        return {row.event_id: row.bill_cycle_id for row in rows}

    async def rated_in_cycle(self, bill_cycle_id: uuid.UUID) -> list[StoredUsage]:
        """The RATED events whose units count in the cycle, in rating order."""
        t = usage_events
        rows = await self._session.execute(
            select(t)
            .where(t.c.bill_cycle_id == bill_cycle_id, t.c.status == UsageStatus.RATED.value)
            .order_by(t.c.rate_seq, t.c.seq)
        )
        return [_stored(row._mapping) for row in rows]

    async def expire(self, received_before: datetime, limit: int) -> int:
        """Deletes up to `limit` RATED events received before `received_before` (past the
        idempotency horizon), oldest first; rows another transaction holds are skipped (SKIP
        LOCKED), so replicas share the work. Returns how many it deleted."""
        t = usage_events
        doomed = (
            select(t.c.event_id)
            .where(t.c.status == UsageStatus.RATED.value, t.c.receive_time < received_before)
            .order_by(t.c.receive_time)
            .limit(limit)
            .with_for_update(skip_locked=True)
            .scalar_subquery()
        )
        result = await self._session.execute(delete(t).where(t.c.event_id.in_(doomed)).returning(t.c.event_id))
        return len(result.all())

    async def kept(self, account_id: uuid.UUID | None, after_seq: int, limit: int) -> list[StoredUsage]:
        """Unrated and rejected events in the order received, after `after_seq`."""
        t = usage_events
        query: Select[Any] = (
            select(t).where(t.c.status != UsageStatus.RATED.value, t.c.seq > after_seq).order_by(t.c.seq).limit(limit)
        )
        if account_id is not None:
            query = query.where(t.c.account_id == account_id)
        return [_stored(row._mapping) for row in await self._session.execute(query)]


def _stored(row: Any) -> StoredUsage:
    return StoredUsage(
        event=UsageEvent.from_payload(row["event_id"], row["payload"]),
        fingerprint=row["payload_sha256"],
        status=UsageStatus(row["status"]),
        reason=row["reason"],
        charge_ids=tuple(row["charge_ids"]),
        receive_time=row["receive_time"],
        seq=row["seq"],
    )


# Counters by key, one statement over arrays of the keys' columns (_key_arrays); locked in key order.
_KEY_MATCH = (
    "c.account_id = k.account_id AND c.purchase_id = k.purchase_id AND c.charge_code = k.charge_code"
    " AND c.bill_cycle_id = k.bill_cycle_id"
)
# A new counter is inserted at zero, an existing one "updated" to its own units: either way the row
# is locked until the transaction ends and returned as it stands (ON CONFLICT DO UPDATE sees the
# latest committed version, as SELECT ... FOR UPDATE would), in one round trip. The keys go in in
# key order, so concurrent transactions lock them in the same order.
_LOCK_COUNTERS = text(
    "INSERT INTO usage_counters AS c (account_id, purchase_id, charge_code, bill_cycle_id, units, update_time)"
    " SELECT k.account_id, k.purchase_id, k.charge_code, k.bill_cycle_id, 0, :now"
    " FROM unnest(CAST(:account_ids AS uuid[]), CAST(:purchase_ids AS uuid[]), CAST(:charge_codes AS text[]),"
    " CAST(:bill_cycle_ids AS uuid[])) WITH ORDINALITY"
    " AS k(account_id, purchase_id, charge_code, bill_cycle_id, ordinal) ORDER BY k.ordinal"
    " ON CONFLICT ON CONSTRAINT usage_counters_pkey DO UPDATE SET units = c.units"
    " RETURNING c.account_id, c.purchase_id, c.charge_code, c.bill_cycle_id, c.units"
)
_SAVE_COUNTERS = text(
    "UPDATE usage_counters AS c SET units = k.units, update_time = :now"
    " FROM unnest(CAST(:account_ids AS uuid[]), CAST(:purchase_ids AS uuid[]), CAST(:charge_codes AS text[]),"
    " CAST(:bill_cycle_ids AS uuid[]), CAST(:units AS numeric[]))"
    " AS k(account_id, purchase_id, charge_code, bill_cycle_id, units)"
    # As the outcomes' update: the primary key's first column, so the index serves whatever the
    # statistics say.
    f" WHERE {_KEY_MATCH} AND c.account_id = ANY(CAST(:account_ids AS uuid[]))"
)


def _key_arrays(keys: Sequence[CounterKey]) -> dict[str, list[Any]]:
    return {
        "account_ids": [k[0] for k in keys],
        "purchase_ids": [k[1] for k in keys],
        "charge_codes": [k[2] for k in keys],
        "bill_cycle_ids": [k[3] for k in keys],
    }


class CounterRepository:
    def __init__(self, session: AsyncSession) -> None:
        self._session = session
        self._save_deferred = False

    async def lock(self, keys: Sequence[CounterKey], now: datetime) -> dict[CounterKey, Decimal]:
        """The units used so far under each key (zero for a new one), each counter locked in key
        order until the transaction ends. One statement over arrays whatever the number of keys
        (evolutivo_runtime.bulk)."""
        if self._save_deferred:
            # The deferred save is not written yet: these units would miss it, and a second save
            # of the same rows in the commit's statement would not both apply.
            raise RuntimeError("usage counters locked again after their save was deferred to the commit")
        ordered = sorted(set(keys))
        if not ordered:
            return {}
        rows = await self._session.execute(_LOCK_COUNTERS, {**_key_arrays(ordered), "now": now})
        return {(r.account_id, r.purchase_id, r.charge_code, r.bill_cycle_id): r.units for r in rows}

    async def save(self, counters: dict[CounterKey, Decimal], now: datetime) -> None:
        write = self.save_statement(counters, now)
        if write is not None:
            await self._session.execute(*write)

    def save_at_commit(
        self, counters: dict[CounterKey, Decimal], now: datetime, defer: Callable[[TextClause, dict[str, Any]], None]
    ) -> None:
        """The save handed to `defer` (the unit of work's write_at_commit). The counters cannot be
        locked again in this transaction afterwards."""
        write = self.save_statement(counters, now)
        if write is not None:
            self._save_deferred = True
            defer(*write)

    @staticmethod
    def save_statement(counters: dict[CounterKey, Decimal], now: datetime) -> Write | None:
        """The counters' new units, one UPDATE over arrays (None: nothing to save)."""
        if not counters:
            return None
        ordered = sorted(counters)
        return _SAVE_COUNTERS, {**_key_arrays(ordered), "units": [counters[k] for k in ordered], "now": now}

    async def of_cycle(self, account_id: uuid.UUID, bill_cycle_id: uuid.UUID) -> dict[CounterKey, Decimal]:
        """Every counter of the account in the cycle."""
        t = usage_counters
        rows = await self._session.execute(
            select(t).where(t.c.account_id == account_id, t.c.bill_cycle_id == bill_cycle_id)
        )
        return {(r.account_id, r.purchase_id, r.charge_code, r.bill_cycle_id): r.units for r in rows}

    async def units(self, key: CounterKey) -> Decimal:
        t = usage_counters
        a, p, c, b = key
        found = await self._session.scalar(
            select(t.c.units).where(
                t.c.account_id == a, t.c.purchase_id == p, t.c.charge_code == c, t.c.bill_cycle_id == b
            )
        )
        return found if found is not None else Decimal(0)


class ChargeRepository:
    def __init__(self, session: AsyncSession) -> None:
        self._session = session

    async def add_all(self, rated: Sequence[RatedCharge]) -> None:
        write = self.add_statement(rated)
        if write is not None:
            await self._session.execute(*write)

    @staticmethod
    def add_statement(rated: Sequence[RatedCharge]) -> Write | None:
        """The charges' insert, one statement over arrays (evolutivo_runtime.bulk)."""
        return insert_rows(charges, [_charge_row(c) for c in rated]) if rated else None

    async def get_many(self, charge_ids: Iterable[uuid.UUID]) -> dict[uuid.UUID, RatedCharge]:
        ids = list(set(charge_ids))
        if not ids:
            return {}
        rows = await self._session.execute(select(charges).where(charges.c.charge_id.in_(ids)))
        return {row.charge_id: _charge(row._mapping) for row in rows}

    async def standing(self, account_id: uuid.UUID, event_ids: Iterable[str]) -> dict[str, list[RatedCharge]]:
        """The charges standing for each usage event: its charges (usage, or made by rerating) that
        no reversal cancels, in the order made."""
        ids = sorted(set(event_ids))
        found: dict[str, list[RatedCharge]] = {e: [] for e in ids}
        if not ids:
            return found
        t = charges
        reversing = charges.alias("reversing")
        rows = await self._session.execute(
            select(t)
            .where(
                t.c.account_id == account_id,
                t.c.event_id.in_(ids),
                t.c.kind != ChargeKind.REVERSAL.value,
                ~select(reversing.c.charge_id)
                .where(reversing.c.account_id == account_id, reversing.c.reverses_charge_id == t.c.charge_id)
                .exists(),
            )
            .order_by(t.c.seq)
        )
        for row in rows:
            found[row.event_id].append(_charge(row._mapping))
        return found

    async def list(
        self, account_id: uuid.UUID, bill_cycle_id: uuid.UUID | None, after_seq: int, limit: int
    ) -> list[tuple[int, RatedCharge]]:
        """An account's charges, oldest first, after `after_seq`, with their position."""
        t = charges
        query: Select[Any] = (
            select(t).where(t.c.account_id == account_id, t.c.seq > after_seq).order_by(t.c.seq).limit(limit)
        )
        if bill_cycle_id is not None:
            query = query.where(t.c.bill_cycle_id == bill_cycle_id)
        return [(row.seq, _charge(row._mapping)) for row in await self._session.execute(query)]


def _charge_row(c: RatedCharge) -> dict[str, Any]:
    return {
        "charge_id": c.charge_id,
        "account_id": c.account_id,
        "kind": c.kind.value,
        "event_id": c.event_id,
        "purchase_id": c.purchase_id,
        "charge_offer_code": c.charge_offer_code,
        "charge_offer_version": c.charge_offer_version,
        "charge_code": c.charge_code,
        "balance_group": c.balance_group,
        "tax_code": c.tax_code,
        "quantity": c.quantity,
        "amount": c.amount,
        "currency_code": c.currency_code,
        "unrounded_amount": c.unrounded_amount,
        "tiers": [
            {
                "tier": line.tier,
                "units": _str(line.units),
                "unit_price": _str(line.unit_price),
                "flat_fee": _str(line.flat_fee),
                "amount": _str(line.amount),
            }
            for line in c.tiers
        ],
        "event_time": c.event_time,
        "rate_time": c.rate_time,
        "bill_cycle_id": c.bill_cycle_id,
        "late": c.late,
        "reverses_charge_id": c.reverses_charge_id,
        "rerate_run_id": c.rerate_run_id,
        "replaces_charge_id": c.replaces_charge_id,
    }


def _minor_unit(amount: Decimal, currency_code: str) -> Decimal:
    exponent = currency_exponent(currency_code)
    return amount if exponent is None else amount.quantize(Decimal(1).scaleb(-exponent))


def _charge(row: Any) -> RatedCharge:
    return RatedCharge(
        charge_id=row["charge_id"],
        account_id=row["account_id"],
        kind=ChargeKind(row["kind"]),
        event_id=row["event_id"],
        purchase_id=row["purchase_id"],
        charge_offer_code=row["charge_offer_code"],
        charge_offer_version=row["charge_offer_version"],
        charge_code=row["charge_code"],
        balance_group=row["balance_group"],
        tax_code=row["tax_code"],
        quantity=row["quantity"],
        # NUMERIC(38, 9) pads to 9 decimals: back to the minor unit, as rated.
        amount=_minor_unit(row["amount"], row["currency_code"]),
        currency_code=row["currency_code"],
        unrounded_amount=row["unrounded_amount"],
        tiers=tuple(
            TierLine(
                tier=int(line["tier"]),
                units=Decimal(line["units"]),
                unit_price=Decimal(line["unit_price"]),
                flat_fee=Decimal(line["flat_fee"]),
                amount=Decimal(line["amount"]),
            )
            for line in row["tiers"]
        ),
        event_time=row["event_time"],
        rate_time=row["rate_time"],
        bill_cycle_id=row["bill_cycle_id"],
        late=row["late"],
        reverses_charge_id=row["reverses_charge_id"],
        rerate_run_id=row["rerate_run_id"],
        replaces_charge_id=row["replaces_charge_id"],
    )


class FeeRepository:
    """The keys of the fees charged (fee_charges): a fee is charged once per key."""

    def __init__(self, session: AsyncSession) -> None:
        self._session = session

    async def claim(self, fees: Sequence[Fee], now: datetime) -> set[FeeKey]:
        """Inserts the fees' keys, in key order; returns those this call inserted. A key charged
        before is left alone; one a concurrent transaction is inserting waits for it to end, and
        is this call's only if that transaction rolled back."""
        if not fees:
            return set()
        t = fee_charges
        rows = [
            {
                "purchase_id": f.key[0],
                "charge_code": f.key[1],
                "period_cycle_id": f.key[2],
                "kind": f.key[3],
                "charge_id": f.charge.charge_id,
                "account_id": f.charge.account_id,
                "create_time": now,
            }
            for f in sorted({f.key: f for f in fees}.values(), key=lambda f: f.key)
        ]
        result = await self._session.execute(
            insert(t)
            .values(rows)
            .on_conflict_do_nothing(index_elements=[t.c.purchase_id, t.c.charge_code, t.c.period_cycle_id, t.c.kind])
            .returning(t.c.purchase_id, t.c.charge_code, t.c.period_cycle_id, t.c.kind)
        )
        return {(r.purchase_id, r.charge_code, r.period_cycle_id, r.kind) for r in result}


_ACCOUNT_LOCK = "evolutivo_charging.account:"


# The accounts' share locks, in account order (ordered in a subquery: the select list is
# evaluated before an outer ORDER BY).
_SHARE_ACCOUNTS = (
    "SELECT pg_advisory_xact_lock_shared(hashtextextended(:lock_prefix || k, 0)) "
    "FROM (SELECT unnest(CAST(:lock_ids AS text[])) AS k ORDER BY 1) AS keys"
)
_SHARING = f"(SELECT count(*) FROM ({_SHARE_ACCOUNTS}) AS locked) >= 0"

# UsageRepository.received: the lock condition is a one-time filter, evaluated before the scan;
# the events left-joined to one row, which carries the cache's generation whether or not any was
# received before.
# (Built of constructs SQLAlchemy caches the compiled form of: a VALUES would be compiled again on
# every call, ~0.45 ms of CPU.)
_RECEIVED = (
    select(CURRENT_GENERATION_COLUMN, usage_events)
    .select_from(
        select(literal_column("1").label("n"))
        .subquery("one")
        .outerjoin(usage_events, text("usage_events.event_id = ANY(CAST(:event_ids AS text[]))"))
    )
    .where(text(_SHARING))
)


class AccountLocks:
    """Transaction-scoped advisory locks per account: rating takes them shared (ratings never wait
    for each other), a rerating run exclusive, so a run sees no usage being rated into the
    counters it rebuilds. Taken in account order, before any counter lock (see the module's
    docstring for the order)."""

    def __init__(self, session: AsyncSession) -> None:
        self._session = session

    async def share(self, account_ids: Iterable[uuid.UUID]) -> None:
        condition, params = self.sharing(account_ids)
        if params["lock_ids"]:
            await self._session.execute(text(f"SELECT {condition}"), params)

    @staticmethod
    def sharing(account_ids: Iterable[uuid.UUID]) -> tuple[str, dict[str, Any]]:
        """A condition (always true) that takes the accounts' share locks where a statement
        evaluates it: in a WHERE, as a one-time filter before the statement's first row."""
        ids = sorted({str(a) for a in account_ids})
        return _SHARING, {"lock_prefix": _ACCOUNT_LOCK, "lock_ids": ids}

    async def exclusive(self, account_id: uuid.UUID) -> None:
        await self._session.execute(
            select(func.pg_advisory_xact_lock(func.hashtextextended(_ACCOUNT_LOCK + str(account_id), 0)))
        )


@dataclass(frozen=True)
class RerateRunRow:
    rerate_run_id: uuid.UUID
    account_id: uuid.UUID
    start_time: datetime
    end_time: datetime
    charge_offer_code: str
    request_id: str
    events_rerated: int
    events_changed: int
    charges_reversed: int
    charges_created: int
    net_amount: Decimal
    currency_code: str
    create_time: datetime


class RerateRunRepository:
    def __init__(self, session: AsyncSession) -> None:
        self._session = session

    async def add(self, run: RerateRunRow) -> None:
        await self._session.execute(rerate_runs.insert().values(**run.__dict__))


class CreditStateRepository:
    """Balance's credit-limit state per (account, group name); a lower version never overwrites."""

    def __init__(self, session: AsyncSession) -> None:
        self._session = session

    async def apply(self, state: CreditState, now: datetime) -> bool:
        """Records the state unless one with a version as high is recorded; False then."""
        t = credit_states
        statement = insert(t).values(
            account_id=state.account_id,
            balance_group_name=state.balance_group_name,
            is_default=state.is_default,
            exceeded=state.exceeded,
            credit_state_version=state.credit_state_version,
            update_time=now,
        )
        new = statement.excluded
        upsert = statement.on_conflict_do_update(
            index_elements=[t.c.account_id, t.c.balance_group_name],
            set_={
                "is_default": new.is_default,
                "exceeded": new.exceeded,
                "credit_state_version": new.credit_state_version,
                "update_time": new.update_time,
            },
            where=t.c.credit_state_version < new.credit_state_version,
        ).returning(t.c.account_id)
        return (await self._session.execute(upsert)).first() is not None

    async def for_accounts(self, account_ids: Iterable[uuid.UUID]) -> dict[uuid.UUID, list[CreditState]]:
        ids = sorted(set(account_ids))
        found: dict[uuid.UUID, list[CreditState]] = {a: [] for a in ids}
        if not ids:
            return found
        t = credit_states
        rows = await self._session.execute(select(t).where(t.c.account_id.in_(ids)))
        for row in rows:
            found[row.account_id].append(
                CreditState(
                    account_id=row.account_id,
                    balance_group_name=row.balance_group_name,
                    is_default=row.is_default,
                    exceeded=row.exceeded,
                    credit_state_version=row.credit_state_version,
                )
            )
        return found
