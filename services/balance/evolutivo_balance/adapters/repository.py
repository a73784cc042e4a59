"""Loads and stores balance groups, ledger entries and payments.

Row locks on balance groups, and why they cannot deadlock:

- `FOR KEY SHARE` when a transaction books entries on a group (the entries' foreign key takes the
  same lock): it keeps the group from closing meanwhile and never waits for other bookings.
- `FOR NO KEY UPDATE` when the unit of work moves balances at commit: every group the
  transaction booked on, in balance_group_id order, so two transactions always meet in the same
  order.
- `FOR UPDATE` only to close a group: it waits for the transactions booking on that group.
- `FOR NO KEY UPDATE` on one group at the start of a transaction that reads its balance to decide
  (a refund) or changes its credit policy (SetCreditLimit); it books on that group only, so it
  waits for nobody while holding it. The expiry loop takes it with SKIP LOCKED: it never waits.
"""

from __future__ import annotations

import asyncio
import enum
import json
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any

import asyncpg
from evolutivo_runtime.bulk import insert_rows
from evolutivo_runtime.db import plain_url
from sqlalchemy import Select, TextClause, func, literal, select, text, tuple_, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from evolutivo_balance.adapters.orm import balance_groups, ledger_entries, payments
from evolutivo_balance.domain.credit import CreditPolicy, CreditState, Threshold
from evolutivo_balance.domain.model import (
    BalanceGroup,
    EntryType,
    LedgerEntry,
    Payment,
    PaymentMethod,
    PaymentState,
    SourceType,
)


class Lock(enum.Enum):
    NONE = "none"
    # Booking entries on the group: compatible with other bookings, keeps the group open.
    SHARE = "share"
    # Closing the group.
    UPDATE = "update"
    # Reading the balance to decide on it, or changing the credit policy (FOR NO KEY UPDATE).
    BALANCE = "balance"


def _locked(query: Select[Any], lock: Lock) -> Select[Any]:
    if lock is Lock.SHARE:
        return query.with_for_update(read=True, key_share=True)
    if lock is Lock.UPDATE:
        return query.with_for_update()
    if lock is Lock.BALANCE:
        return query.with_for_update(key_share=True)
    return query


# The balances' moves, one statement over arrays; the groups are locked already (move).
_MOVE_BALANCES = text(
    "UPDATE balance_groups AS g SET balance = g.balance + k.delta"
    " FROM unnest(CAST(:move_groups AS uuid[]), CAST(:move_deltas AS numeric[])) AS k(balance_group_id, delta)"
    " WHERE g.balance_group_id = k.balance_group_id"
)


class BalanceGroupRepository:
    def __init__(self, session: AsyncSession) -> None:
        self._session = session

    async def add_default(self, group: BalanceGroup) -> bool:
        """Adds the account's default group unless it has one; False when it already had."""
        t = balance_groups
        result = await self._session.execute(
            insert(t)
            .values(**_group_row(group))
            .on_conflict_do_nothing(index_elements=[t.c.account_id], index_where=t.c.is_default)
            .returning(t.c.balance_group_id)
        )
        return result.first() is not None

    async def add(self, group: BalanceGroup) -> bool:
        """Adds a group unless the account has an open group of that name; False when it has."""
        t = balance_groups
        result = await self._session.execute(
            insert(t)
            .values(**_group_row(group))
            .on_conflict_do_nothing(index_elements=[t.c.account_id, t.c.name], index_where=t.c.close_time.is_(None))
            .returning(t.c.balance_group_id)
        )
        return result.first() is not None

    async def get(self, balance_group_id: uuid.UUID, lock: Lock = Lock.NONE) -> BalanceGroup | None:
        query = _locked(select(balance_groups).where(balance_groups.c.balance_group_id == balance_group_id), lock)
        row = (await self._session.execute(query)).first()
        return _group(row._mapping) if row else None

    async def default_for(self, account_id: uuid.UUID, lock: Lock = Lock.NONE) -> BalanceGroup | None:
        t = balance_groups
        query = _locked(select(t).where(t.c.account_id == account_id, t.c.is_default), lock)
        row = (await self._session.execute(query)).first()
        return _group(row._mapping) if row else None

    async def for_account(self, account_id: uuid.UUID) -> list[BalanceGroup]:
        """Every group of the account, open or closed: the default first, then by creation."""
        t = balance_groups
        rows = await self._session.execute(
            select(t)
            .where(t.c.account_id == account_id)
            .order_by(t.c.is_default.desc(), t.c.create_time, t.c.balance_group_id)
        )
        return [_group(row._mapping) for row in rows]

    async def lock_account(self, account_id: uuid.UUID) -> list[BalanceGroup]:
        """Every group of the account, locked FOR UPDATE in balance_group_id order: waits for the
        transactions booking on them, and keeps new bookings out until this one ends."""
        t = balance_groups
        rows = await self._session.execute(
            select(t).where(t.c.account_id == account_id).order_by(t.c.balance_group_id).with_for_update()
        )
        return [_group(row._mapping) for row in rows]

    async def set_currency(self, account_id: uuid.UUID, currency_code: str) -> None:
        t = balance_groups
        await self._session.execute(update(t).where(t.c.account_id == account_id).values(currency_code=currency_code))

    async def open_for_accounts(self, account_ids: Iterable[uuid.UUID]) -> dict[uuid.UUID, list[BalanceGroup]]:
        """The open groups of the accounts, locked to book on (FOR KEY SHARE), by account."""
        ids = sorted(set(account_ids))
        found: dict[uuid.UUID, list[BalanceGroup]] = {a: [] for a in ids}
        if not ids:
            return found
        t = balance_groups
        query = (
            select(t)
            .where(t.c.account_id.in_(ids), t.c.close_time.is_(None))
            .order_by(t.c.balance_group_id)
            .with_for_update(read=True, key_share=True)
        )
        for row in await self._session.execute(query):
            group = _group(row._mapping)
            found[group.account_id].append(group)
        return found

    async def close(self, group: BalanceGroup) -> None:
        await self._session.execute(
            update(balance_groups)
            .where(balance_groups.c.balance_group_id == group.balance_group_id)
            .values(close_time=group.close_time)
        )

    async def move(
        self, deltas: Mapping[uuid.UUID, Decimal], defer: Callable[[TextClause, dict[str, Any]], None]
    ) -> list[BalanceGroup]:
        """Adds each delta to its group's balance: the groups are locked (FOR NO KEY UPDATE) in
        balance_group_id order now, so concurrent transactions cannot deadlock; their UPDATE, one
        statement over arrays, goes to `defer` (the unit of work's write_at_commit: it is sent
        with the commit's own statement). Returns the groups as they will stand after the move
        (read under the lock: their credit can be assessed)."""
        ordered = sorted(g for g, d in deltas.items() if d != 0)
        if not ordered:
            return []
        t = balance_groups
        rows = await self._session.execute(
            select(t)
            .where(t.c.balance_group_id.in_(ordered))
            .order_by(t.c.balance_group_id)
            .with_for_update(key_share=True)
        )
        groups = [_group(row._mapping) for row in rows]
        defer(_MOVE_BALANCES, {"move_groups": ordered, "move_deltas": [deltas[g] for g in ordered]})
        for group in groups:
            group.balance += deltas[group.balance_group_id]
        return groups

    async def save_credit(self, group: BalanceGroup) -> None:
        """Stores the group's credit policy and state (its row is locked FOR NO KEY UPDATE)."""
        t = balance_groups
        await self._session.execute(
            update(t).where(t.c.balance_group_id == group.balance_group_id).values(**_credit_row(group))
        )

    async def claim_expired_temporary_limits(self, now: datetime, limit: int) -> list[BalanceGroup]:
        """Groups whose temporary limit expired at or before `now`, locked FOR NO KEY UPDATE in
        balance_group_id order; those another transaction holds are skipped (SKIP LOCKED), so
        replicas share the work and a busy group is claimed on a later pass."""
        t = balance_groups
        rows = await self._session.execute(
            select(t)
            .where(t.c.temporary_limit_expire_time <= now)
            .order_by(t.c.balance_group_id)
            .limit(limit)
            .with_for_update(key_share=True, skip_locked=True)
        )
        return [_group(row._mapping) for row in rows]


def _group_row(group: BalanceGroup) -> dict[str, Any]:
    return {
        "balance_group_id": group.balance_group_id,
        "account_id": group.account_id,
        "name": group.name,
        "is_default": group.is_default,
        "currency_code": group.currency_code,
        "balance": group.balance,
        "create_time": group.create_time,
        "close_time": group.close_time,
        **_credit_row(group),
    }


def _credit_row(group: BalanceGroup) -> dict[str, Any]:
    policy, state = group.credit, group.credit_state
    return {
        "credit_limit": policy.credit_limit,
        "temporary_credit_limit": policy.temporary_limit,
        "temporary_limit_expire_time": policy.temporary_limit_expire_time,
        "credit_thresholds": [t.to_json() for t in policy.thresholds],
        "credit_limit_exceeded": state.exceeded,
        "credit_thresholds_reached": sorted(state.reached),
        "credit_state_version": state.version,
        "threshold_state_version": state.threshold_version,
    }


def _group(row: Any) -> BalanceGroup:
    return BalanceGroup(
        balance_group_id=row["balance_group_id"],
        account_id=row["account_id"],
        name=row["name"],
        is_default=row["is_default"],
        currency_code=row["currency_code"],
        balance=row["balance"],
        create_time=row["create_time"],
        close_time=row["close_time"],
        credit=CreditPolicy(
            credit_limit=row["credit_limit"],
            temporary_limit=row["temporary_credit_limit"],
            temporary_limit_expire_time=row["temporary_limit_expire_time"],
            thresholds=tuple(Threshold.from_json(t) for t in row["credit_thresholds"]),
        ),
        credit_state=CreditState(
            exceeded=row["credit_limit_exceeded"],
            reached=frozenset(row["credit_thresholds_reached"]),
            version=row["credit_state_version"],
            threshold_version=row["threshold_state_version"],
        ),
    )


@dataclass(frozen=True)
class EntryFilter:
    balance_group_id: uuid.UUID | None = None
    types: tuple[EntryType, ...] = ()
    source_type: str = ""
    source_id: str = ""
    # [start_time, end_time) on the effective time.
    start_time: datetime | None = None
    end_time: datetime | None = None


# Entries per INSERT (one array per column): bounds a statement's size, not its parameters.
_ENTRIES_PER_STATEMENT = 1000


class LedgerRepository:
    def __init__(self, session: AsyncSession) -> None:
        self._session = session

    async def add(self, entries: Sequence[LedgerEntry]) -> set[uuid.UUID]:
        """Appends the entries whose source was not booked before (in source order, so two
        transactions booking the same sources wait for each other instead of deadlocking).
        Returns the ids of those appended."""
        if not entries:
            return set()
        rows = [_entry_row(e) for e in sorted(entries, key=lambda e: e.source)]
        added: set[uuid.UUID] = set()
        for start in range(0, len(rows), _ENTRIES_PER_STATEMENT):
            # One statement over arrays: a multi-row VALUES was compiled anew for every batch and
            # cost balance ~10x the CPU per entry (docs/performance.md).
            statement, params = insert_rows(
                ledger_entries,
                rows[start : start + _ENTRIES_PER_STATEMENT],
                on_conflict_constraint="ledger_entries_source",
                returning=("entry_id",),
            )
            result = await self._session.execute(statement, params)
            added.update(row.entry_id for row in result)
        return added

    async def get(self, entry_id: uuid.UUID) -> LedgerEntry | None:
        row = (await self._session.execute(select(ledger_entries).where(ledger_entries.c.entry_id == entry_id))).first()
        return _entry(row._mapping) if row else None

    async def by_source(self, type_: EntryType, source_type: SourceType, source_id: str) -> LedgerEntry | None:
        """The entry booked for a source, if any (a source is booked at most once per type)."""
        t = ledger_entries
        row = (
            await self._session.execute(
                select(t).where(
                    t.c.type == type_.value, t.c.source_type == source_type.value, t.c.source_id == source_id
                )
            )
        ).first()
        return _entry(row._mapping) if row else None

    async def has_entries(self, account_id: uuid.UUID) -> bool:
        t = ledger_entries
        found = await self._session.scalar(select(t.c.entry_id).where(t.c.account_id == account_id).limit(1))
        return found is not None

    async def balances_as_of(self, account_id: uuid.UUID, as_of: datetime) -> dict[uuid.UUID, Decimal]:
        """Each group's sum of the entries effective at or before `as_of` (groups with any)."""
        t = ledger_entries
        rows = await self._session.execute(
            select(t.c.balance_group_id, func.sum(t.c.amount))
            .where(t.c.account_id == account_id, t.c.effective_time <= as_of)
            .group_by(t.c.balance_group_id)
        )
        return {group_id: amount for group_id, amount in rows}

    async def page(
        self, account_id: uuid.UUID, where: EntryFilter, after: tuple[datetime, int] | None, limit: int
    ) -> list[tuple[int, LedgerEntry]]:
        """The account's entries newest first (effective time, then booking order), after the
        keyset `after`, with their booking position."""
        t = ledger_entries
        query: Select[Any] = (
            select(t)
            .where(t.c.account_id == account_id)
            .order_by(t.c.effective_time.desc(), t.c.seq.desc())
            .limit(limit)
        )
        if after is not None:
            query = query.where(tuple_(t.c.effective_time, t.c.seq) < tuple_(literal(after[0]), literal(after[1])))
        if where.balance_group_id is not None:
            query = query.where(t.c.balance_group_id == where.balance_group_id)
        if where.types:
            query = query.where(t.c.type.in_([ty.value for ty in where.types]))
        if where.source_type:
            query = query.where(t.c.source_type == where.source_type)
        if where.source_id:
            query = query.where(t.c.source_id == where.source_id)
        if where.start_time is not None:
            query = query.where(t.c.effective_time >= where.start_time)
        if where.end_time is not None:
            query = query.where(t.c.effective_time < where.end_time)
        return [(row.seq, _entry(row._mapping)) for row in await self._session.execute(query)]


def _entry_row(e: LedgerEntry) -> dict[str, Any]:
    return {
        "entry_id": e.entry_id,
        "balance_group_id": e.balance_group_id,
        "account_id": e.account_id,
        "type": e.type.value,
        "amount": e.amount,
        "currency_code": e.currency_code,
        "source_type": e.source_type.value,
        "source_id": e.source_id,
        "reason_code": e.reason_code,
        "reason": e.reason,
        "actor": e.actor,
        "effective_time": e.effective_time,
        "create_time": e.create_time,
    }


def _entry(row: Any) -> LedgerEntry:
    return LedgerEntry(
        entry_id=row["entry_id"],
        balance_group_id=row["balance_group_id"],
        account_id=row["account_id"],
        type=EntryType(row["type"]),
        amount=row["amount"],
        currency_code=row["currency_code"],
        source_type=SourceType(row["source_type"]),
        source_id=row["source_id"],
        reason_code=row["reason_code"],
        reason=row["reason"],
        actor=row["actor"],
        effective_time=row["effective_time"],
        create_time=row["create_time"],
    )


class PaymentRepository:
    def __init__(self, session: AsyncSession) -> None:
        self._session = session

    async def add(self, payment: Payment) -> bool:
        """Adds the payment unless its reference was recorded before (a concurrent call with the
        same reference waits for the first to end); False when it was."""
        t = payments
        result = await self._session.execute(
            insert(t)
            .values(**_payment_row(payment))
            .on_conflict_do_nothing(index_elements=[t.c.reference])
            .returning(t.c.payment_id)
        )
        return result.first() is not None

    async def get(
        self, payment_id: uuid.UUID | None = None, reference: str = "", for_update: bool = False
    ) -> Payment | None:
        """By id, or by reference."""
        t = payments
        query = select(t).where(t.c.payment_id == payment_id if payment_id is not None else t.c.reference == reference)
        if for_update:
            query = query.with_for_update()
        row = (await self._session.execute(query)).first()
        return _payment(row._mapping) if row else None

    async def save(self, payment: Payment) -> None:
        row = _payment_row(payment)
        await self._session.execute(
            update(payments)
            .where(payments.c.payment_id == payment.payment_id)
            .values(
                state=row["state"],
                reversal_entry_id=row["reversal_entry_id"],
                reversal_reason=row["reversal_reason"],
                reverse_time=row["reverse_time"],
            )
        )


def _payment_row(p: Payment) -> dict[str, Any]:
    return {
        "payment_id": p.payment_id,
        "reference": p.reference,
        "account_id": p.account_id,
        "balance_group_id": p.balance_group_id,
        "amount": p.amount,
        "currency_code": p.currency_code,
        "method": p.method.value,
        "received_time": p.received_time,
        "state": p.state.value,
        "entry_id": p.entry_id,
        "reversal_entry_id": p.reversal_entry_id,
        "reversal_reason": p.reversal_reason,
        "reverse_time": p.reverse_time,
        "create_time": p.create_time,
    }


def _payment(row: Any) -> Payment:
    return Payment(
        payment_id=row["payment_id"],
        account_id=row["account_id"],
        balance_group_id=row["balance_group_id"],
        amount=row["amount"],
        currency_code=row["currency_code"],
        method=PaymentMethod(row["method"]),
        reference=row["reference"],
        received_time=row["received_time"],
        state=PaymentState(row["state"]),
        entry_id=row["entry_id"],
        create_time=row["create_time"],
        reversal_entry_id=row["reversal_entry_id"],
        reversal_reason=row["reversal_reason"],
        reverse_time=row["reverse_time"],
    )


# GetBalance's one statement (any column order: rows are read by name).
_CURRENT_GROUPS = (
    f"SELECT {', '.join(c.name for c in balance_groups.c)} FROM balance_groups WHERE account_id = $1 "
    "ORDER BY is_default DESC, create_time, balance_group_id"
)
# A pooled connection found broken (PostgreSQL restarted, the network cut it): the read is tried
# again, on another connection, until every connection the pool held has had its chance. asyncpg
# reports a connection the server ended in the middle of a read as an InternalClientError too.
_BROKEN = (
    asyncpg.ConnectionDoesNotExistError,
    asyncpg.InterfaceError,
    asyncpg.exceptions.InternalClientError,
    ConnectionError,
)


async def _decode_json(connection: asyncpg.Connection) -> None:
    # As SQLAlchemy does on its connections: JSONB columns (the credit thresholds) as values.
    await connection.set_type_codec("jsonb", encoder=json.dumps, decoder=json.loads, schema="pg_catalog")


async def _nothing_to_reset(connection: asyncpg.Connection) -> None:
    # The reads leave no session state (no SET, LISTEN, advisory lock or transaction): asyncpg's
    # default reset on every release would cost a round trip per read for nothing.
    return None


class CurrentBalances:
    """The current balances of an account, read outside any unit of work (docs/performance.md):
    one prepared statement on a small asyncpg pool of the replica's own, in autocommit (a single
    statement reads one snapshot, as the read-only transaction did), so a read is one round trip
    and no ORM work. The units of work's pool pings every connection it hands out (BEGIN, a
    ping, ROLLBACK) and wraps the read in BEGIN ... ROLLBACK: six round trips for this one read."""

    def __init__(self, database_url: str, pool_size: int) -> None:
        self._url = plain_url(database_url)
        self._size = pool_size
        self._pool: asyncpg.Pool | None = None
        self._opening = asyncio.Lock()

    async def _connections(self) -> asyncpg.Pool:
        if self._pool is None:
            async with self._opening:
                if self._pool is None:
                    self._pool = await asyncpg.create_pool(
                        self._url, min_size=1, max_size=self._size, init=_decode_json, reset=_nothing_to_reset
                    )
        return self._pool

    async def groups_of(self, account_id: uuid.UUID) -> list[BalanceGroup]:
        """Every group of the account, open or closed: the default first, then by creation."""
        pool = await self._connections()
        for attempt in range(self._size + 1):
            try:
                rows = await pool.fetch(_CURRENT_GROUPS, account_id)
                break
            except _BROKEN:
                if attempt == self._size:
                    raise
        return [_group(row) for row in rows]

    async def close(self) -> None:
        if self._pool is not None:
            await self._pool.close()
            self._pool = None
