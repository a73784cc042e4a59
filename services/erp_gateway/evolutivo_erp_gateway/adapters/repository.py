"""Loads and stores the gateway's records."""

from __future__ import annotations

import builtins
import uuid
from collections.abc import Sequence
from datetime import datetime
from decimal import Decimal
from typing import Any

from evolutivo_runtime.bulk import insert_rows
from evolutivo_runtime.locks import advisory_xact_locks
from sqlalchemy import and_, case, delete, func, or_, select, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from evolutivo_erp_gateway.adapters.orm import (
    connections,
    credit_note_allocations,
    customer_contacts,
    gl_postings,
    inbound_payments,
    payment_allocations,
    sync_jobs,
    sync_states,
)
from evolutivo_erp_gateway.domain.connections import Connection, ConnectionType, Mapping
from evolutivo_erp_gateway.domain.jobs import JobState, SyncJob
from evolutivo_erp_gateway.domain.journal import JournalEntry, Posting
from evolutivo_erp_gateway.domain.model import AllocatedCredit, EntityType, ReceivedRecord, SyncState, SyncStatus


class SyncStateRepository:
    def __init__(self, session: AsyncSession) -> None:
        self._session = session

    async def add(self, state: SyncState) -> bool:
        """Records the entity unless the gateway knows it already; False when it did."""
        t = sync_states
        result = await self._session.execute(
            insert(t)
            .values(
                entity_type=state.entity_type.value,
                entity_id=state.entity_id,
                status=state.status.value,
                erp_id=state.erp_id,
                update_time=state.update_time,
            )
            .on_conflict_do_nothing(index_elements=[t.c.entity_type, t.c.entity_id])
            .returning(t.c.entity_id)
        )
        return result.first() is not None

    async def store_payload(
        self,
        entity_type: EntityType,
        entity_id: uuid.UUID,
        account_id: uuid.UUID,
        payload: bytes,
        version: datetime,
        now: datetime,
    ) -> bool:
        """Keeps the record's latest payload (by version); False when a newer or equal one is there."""
        t = sync_states
        stmt = insert(t).values(
            entity_type=entity_type.value,
            entity_id=entity_id,
            status=SyncStatus.PENDING.value,
            erp_id="",
            update_time=now,
            account_id=account_id,
            payload=payload,
            payload_version=version,
        )
        upsert = stmt.on_conflict_do_update(
            index_elements=[t.c.entity_type, t.c.entity_id],
            set_={
                "account_id": stmt.excluded.account_id,
                "payload": stmt.excluded.payload,
                "payload_version": stmt.excluded.payload_version,
                "update_time": stmt.excluded.update_time,
            },
            where=or_(t.c.payload_version.is_(None), t.c.payload_version < stmt.excluded.payload_version),
        ).returning(t.c.entity_id)
        return (await self._session.execute(upsert)).first() is not None

    async def store_payloads(
        self, entity_type: EntityType, records: Sequence[ReceivedRecord], now: datetime
    ) -> list[ReceivedRecord]:
        """`store_payload` for many records of one type in one statement; those stored, in the
        order given. A record given twice counts once, at its latest version (the first of equal
        ones), where its first came: as storing them one after the other would leave it."""
        latest: dict[uuid.UUID, ReceivedRecord] = {}
        for record in records:
            kept = latest.get(record.entity_id)
            if kept is None or kept.version < record.version:
                latest[record.entity_id] = record
        if not latest:
            return []
        t = sync_states
        statement, params = insert_rows(
            t,
            [
                {
                    "entity_id": r.entity_id,
                    "account_id": r.account_id,
                    "payload": r.payload,
                    "payload_version": r.version,
                }
                for r in latest.values()
            ],
            same={
                "entity_type": entity_type.value,
                "status": SyncStatus.PENDING.value,
                "erp_id": "",
                "update_time": now,
            },
            on_conflict_columns=("entity_type", "entity_id"),
            on_conflict_update=("account_id", "payload", "payload_version", "update_time"),
            update_where=(
                "sync_states.payload_version IS NULL OR sync_states.payload_version < excluded.payload_version"
            ),
            returning=("entity_id",),
        )
        stored = {row.entity_id for row in await self._session.execute(statement, params)}
        return [r for r in latest.values() if r.entity_id in stored]

    async def payload(self, entity_type: EntityType, entity_id: uuid.UUID) -> bytes | None:
        t = sync_states
        return await self._session.scalar(
            select(t.c.payload).where(t.c.entity_type == entity_type.value, t.c.entity_id == entity_id)
        )

    async def payload_version(self, entity_type: EntityType, entity_id: uuid.UUID) -> datetime | None:
        """The version of the record's payload; None when the gateway has no copy of it."""
        t = sync_states
        return await self._session.scalar(
            select(t.c.payload_version).where(
                t.c.entity_type == entity_type.value, t.c.entity_id == entity_id, t.c.payload.is_not(None)
            )
        )

    async def with_payload(self) -> list[tuple[EntityType, uuid.UUID, uuid.UUID, datetime | None]]:
        t = sync_states
        rows = await self._session.execute(
            select(t.c.entity_type, t.c.entity_id, t.c.account_id, t.c.payload_version)
            .where(t.c.payload.is_not(None))
            .order_by(t.c.update_time)
        )
        return [(EntityType(r.entity_type), r.entity_id, r.account_id, r.payload_version) for r in rows]

    async def set_status(
        self, entity_type: EntityType, entity_id: uuid.UUID, status: SyncStatus, erp_id: str, now: datetime
    ) -> None:
        t = sync_states
        values: dict[str, Any] = {"status": status.value, "update_time": now}
        if erp_id:
            values["erp_id"] = erp_id
        await self._session.execute(
            update(t).where(t.c.entity_type == entity_type.value, t.c.entity_id == entity_id).values(**values)
        )

    async def get(self, entity_type: EntityType, entity_id: uuid.UUID) -> SyncState | None:
        t = sync_states
        row = (
            await self._session.execute(
                select(t).where(t.c.entity_type == entity_type.value, t.c.entity_id == entity_id)
            )
        ).first()
        return _state(row._mapping) if row else None


def _state(row: Any) -> SyncState:
    return SyncState(
        entity_type=EntityType(row["entity_type"]),
        entity_id=row["entity_id"],
        status=SyncStatus(row["status"]),
        erp_id=row["erp_id"],
        update_time=row["update_time"],
    )


class ConnectionRepository:
    def __init__(self, session: AsyncSession) -> None:
        self._session = session

    async def add(self, connection: Connection, secret: bytes | None, request_id: uuid.UUID | None) -> bool:
        """False when the request id made a connection already (nothing is written)."""
        t = connections
        stmt = insert(t).values(
            **_connection_values(connection),
            secret=secret,
            create_request_id=request_id,
            create_time=connection.create_time,
        )
        if request_id is not None:
            stmt = stmt.on_conflict_do_nothing(index_elements=[t.c.create_request_id])
        return (await self._session.execute(stmt.returning(t.c.connection_id))).first() is not None

    async def by_request_id(self, request_id: uuid.UUID) -> Connection | None:
        row = (
            await self._session.execute(select(connections).where(connections.c.create_request_id == request_id))
        ).first()
        return _connection(row._mapping) if row else None

    async def get(self, connection_id: uuid.UUID, lock: bool = False) -> Connection | None:
        query = select(connections).where(connections.c.connection_id == connection_id)
        if lock:
            query = query.with_for_update()
        row = (await self._session.execute(query)).first()
        return _connection(row._mapping) if row else None

    async def secret(self, connection_id: uuid.UUID) -> bytes | None:
        return await self._session.scalar(
            select(connections.c.secret).where(connections.c.connection_id == connection_id)
        )

    async def save(self, connection: Connection, secret: bytes | None, replace_secret: bool) -> None:
        values = _connection_values(connection)
        if replace_secret:
            values["secret"] = secret
        await self._session.execute(
            update(connections).where(connections.c.connection_id == connection.connection_id).values(**values)
        )

    async def list(self, after: tuple[datetime, uuid.UUID] | None, limit: int) -> list[Connection]:
        t = connections
        query = select(t).order_by(t.c.create_time, t.c.connection_id).limit(limit)
        if after is not None:
            query = query.where(
                or_(t.c.create_time > after[0], and_(t.c.create_time == after[0], t.c.connection_id > after[1]))
            )
        return [_connection(row._mapping) for row in await self._session.execute(query)]

    async def all(self) -> builtins.list[Connection]:
        rows = await self._session.execute(select(connections).order_by(connections.c.create_time))
        return [_connection(row._mapping) for row in rows]

    async def cursor(self, connection_id: uuid.UUID) -> tuple[str, int] | None:
        row = (
            await self._session.execute(
                select(connections.c.import_cursor_time, connections.c.import_cursor_id).where(
                    connections.c.connection_id == connection_id
                )
            )
        ).first()
        if row is None or row.import_cursor_time is None:
            return None
        return (row.import_cursor_time, int(row.import_cursor_id or 0))

    async def set_cursor(self, connection_id: uuid.UUID, cursor: tuple[str, int]) -> None:
        await self._session.execute(
            update(connections)
            .where(connections.c.connection_id == connection_id)
            .values(import_cursor_time=cursor[0], import_cursor_id=cursor[1])
        )

    async def delete(self, connection_id: uuid.UUID) -> None:
        """The connection, its jobs and its record of imported payments. A job a replica is running
        holds its row: the delete waits for that run to commit."""
        await self._session.execute(delete(sync_jobs).where(sync_jobs.c.connection_id == connection_id))
        await self._session.execute(delete(inbound_payments).where(inbound_payments.c.connection_id == connection_id))
        await self._session.execute(delete(connections).where(connections.c.connection_id == connection_id))

    async def stored_secrets(self) -> builtins.list[tuple[uuid.UUID, bytes]]:
        """Every stored secret, locked so that an update of one cannot interleave with its rewrite."""
        rows = await self._session.execute(
            select(connections.c.connection_id, connections.c.secret)
            .where(connections.c.secret.is_not(None))
            .order_by(connections.c.create_time)
            .with_for_update()
        )
        return [(row.connection_id, row.secret) for row in rows]

    async def set_secret(self, connection_id: uuid.UUID, token: bytes) -> None:
        await self._session.execute(
            update(connections).where(connections.c.connection_id == connection_id).values(secret=token)
        )

    async def connection_failed(self, connection_id: uuid.UUID, threshold: int, pause_until: datetime) -> None:
        """One more failure of the connection itself; at the threshold (and at every failed probe
        after it) the connection is paused until `pause_until`."""
        t = connections
        failures = t.c.consecutive_failures + 1
        await self._session.execute(
            update(t)
            .where(t.c.connection_id == connection_id)
            .values(
                consecutive_failures=failures,
                paused_until=case((failures >= threshold, pause_until), else_=t.c.paused_until),
            )
        )

    async def connection_answered(self, connection_id: uuid.UUID) -> None:
        t = connections
        await self._session.execute(
            update(t)
            .where(t.c.connection_id == connection_id, or_(t.c.consecutive_failures > 0, t.c.paused_until.is_not(None)))
            .values(consecutive_failures=0, paused_until=None)
        )


def _connection_values(c: Connection) -> dict[str, Any]:
    return {
        "connection_id": c.connection_id,
        "display_name": c.display_name,
        "type": c.type.value,
        "endpoint_url": c.endpoint_url,
        "database": c.database,
        "username": c.username,
        "mapping": c.mapping.to_json(),
        "enabled": c.enabled,
        "import_payments": c.import_payments,
        "collections_referrals": c.collections_referrals,
        "update_time": c.update_time,
        "version": c.version,
    }


def _connection(row: Any) -> Connection:
    return Connection(
        connection_id=row["connection_id"],
        display_name=row["display_name"],
        type=ConnectionType(row["type"]),
        endpoint_url=row["endpoint_url"],
        database=row["database"],
        username=row["username"],
        mapping=Mapping.from_json(row["mapping"]),
        enabled=row["enabled"],
        import_payments=row["import_payments"],
        has_credentials=row["secret"] is not None,
        create_time=row["create_time"],
        update_time=row["update_time"],
        version=row["version"],
        paused_until=row["paused_until"],
        collections_referrals=row["collections_referrals"],
    )


class SyncJobRepository:
    def __init__(self, session: AsyncSession) -> None:
        self._session = session

    async def upsert(
        self,
        connection_id: uuid.UUID,
        entity_type: EntityType,
        entity_id: uuid.UUID,
        account_id: uuid.UUID,
        version: datetime | None,
        now: datetime,
        rearm: bool = False,
    ) -> None:
        """A job to send the record; an existing one is re-armed for a newer version (a customer's
        update), or always with `rearm` (the caller knows the record changed: a contact), never for
        a redelivered event."""
        t = sync_jobs
        stmt = insert(t).values(
            job_id=uuid.uuid4(),
            connection_id=connection_id,
            entity_type=entity_type.value,
            entity_id=entity_id,
            account_id=account_id,
            state=JobState.PENDING.value,
            attempts=0,
            last_error="",
            next_attempt_time=now,
            erp_id="",
            payload_version=version,
            create_time=now,
            update_time=now,
        )
        stmt = stmt.on_conflict_do_update(
            index_elements=[t.c.connection_id, t.c.entity_type, t.c.entity_id],
            set_={
                "state": JobState.PENDING.value,
                "attempts": 0,
                "last_error": "",
                "next_attempt_time": now,
                "payload_version": stmt.excluded.payload_version,
                "update_time": now,
            },
            where=None
            if rearm
            else and_(t.c.payload_version.is_not(None), t.c.payload_version < stmt.excluded.payload_version),
        )
        await self._session.execute(stmt)

    async def rearm_many(
        self,
        connection_ids: Sequence[uuid.UUID],
        entity_type: EntityType,
        records: Sequence[ReceivedRecord],
        now: datetime,
    ) -> None:
        """`upsert(..., rearm=True)` for many records of one type (each once) on each connection,
        in one statement: record after record, each on the connections in the order given (the
        queue order `upsert` called that way leaves)."""
        if not records or not connection_ids:
            return
        statement, params = insert_rows(
            sync_jobs,
            [
                {
                    "job_id": uuid.uuid4(),
                    "connection_id": connection_id,
                    "entity_id": r.entity_id,
                    "account_id": r.account_id,
                    "payload_version": r.version,
                }
                for r in records
                for connection_id in connection_ids
            ],
            same={
                "entity_type": entity_type.value,
                "state": JobState.PENDING.value,
                "attempts": 0,
                "last_error": "",
                "next_attempt_time": now,
                "erp_id": "",
                "create_time": now,
                "update_time": now,
            },
            on_conflict_columns=("connection_id", "entity_type", "entity_id"),
            on_conflict_update=(
                "state",
                "attempts",
                "last_error",
                "next_attempt_time",
                "payload_version",
                "update_time",
            ),
        )
        await self._session.execute(statement, params)

    async def claim_due(self, now: datetime) -> SyncJob | None:
        """The next due job of an enabled connection, locked; replicas skip each other's."""
        t = sync_jobs
        c = connections
        row = (
            await self._session.execute(
                select(t)
                .join(c, c.c.connection_id == t.c.connection_id)
                .where(
                    t.c.state.in_([JobState.PENDING.value, JobState.RETRYING.value]),
                    t.c.next_attempt_time <= now,
                    c.c.enabled.is_(True),
                    or_(c.c.paused_until.is_(None), c.c.paused_until <= now),
                )
                .order_by(t.c.next_attempt_time, t.c.sequence)
                .limit(1)
                .with_for_update(of=t, skip_locked=True)
            )
        ).first()
        return _job(row._mapping) if row else None

    async def count_by_state(self, states: Sequence[JobState]) -> dict[JobState, int]:
        """How many jobs are in each of `states` (read through sync_jobs_due, led by the state)."""
        t = sync_jobs
        rows = await self._session.execute(
            select(t.c.state, func.count()).where(t.c.state.in_([s.value for s in states])).group_by(t.c.state)
        )
        return {JobState(state): int(count) for state, count in rows}

    async def get(self, job_id: uuid.UUID, lock: bool = False) -> SyncJob | None:
        query = select(sync_jobs).where(sync_jobs.c.job_id == job_id)
        if lock:
            query = query.with_for_update()
        row = (await self._session.execute(query)).first()
        return _job(row._mapping) if row else None

    async def find(self, connection_id: uuid.UUID, entity_type: EntityType, entity_id: uuid.UUID) -> SyncJob | None:
        t = sync_jobs
        row = (
            await self._session.execute(
                select(t).where(
                    t.c.connection_id == connection_id, t.c.entity_type == entity_type.value, t.c.entity_id == entity_id
                )
            )
        ).first()
        return _job(row._mapping) if row else None

    async def connections_of(self, entity_type: EntityType, entity_id: uuid.UUID) -> builtins.list[uuid.UUID]:
        """The connections the record has a job on."""
        t = sync_jobs
        rows = await self._session.scalars(
            select(t.c.connection_id)
            .where(t.c.entity_type == entity_type.value, t.c.entity_id == entity_id)
            .order_by(t.c.sequence)
        )
        return list(rows)

    async def sequence(self, job_id: uuid.UUID) -> int:
        return int(await self._session.scalar(select(sync_jobs.c.sequence).where(sync_jobs.c.job_id == job_id)) or 0)

    async def unfinished_before(
        self, connection_id: uuid.UUID, account_id: uuid.UUID, kinds: Sequence[EntityType], sequence: int
    ) -> SyncJob | None:
        t = sync_jobs
        row = (
            await self._session.execute(
                select(t)
                .where(
                    t.c.connection_id == connection_id,
                    t.c.account_id == account_id,
                    t.c.entity_type.in_([k.value for k in kinds]),
                    t.c.sequence < sequence,
                    t.c.state != JobState.SUCCEEDED.value,
                )
                .order_by(t.c.sequence)
                .limit(1)
            )
        ).first()
        return _job(row._mapping) if row else None

    async def account_for_erp_id(self, connection_id: uuid.UUID, erp_id: str) -> uuid.UUID | None:
        t = sync_jobs
        return await self._session.scalar(
            select(t.c.entity_id)
            .where(
                t.c.connection_id == connection_id,
                t.c.entity_type == EntityType.CUSTOMER.value,
                t.c.erp_id == erp_id,
            )
            .limit(1)
        )

    async def save(self, job: SyncJob) -> None:
        await self._session.execute(
            update(sync_jobs)
            .where(sync_jobs.c.job_id == job.job_id)
            .values(
                state=job.state.value,
                attempts=job.attempts,
                last_error=job.last_error,
                next_attempt_time=job.next_attempt_time,
                erp_id=job.erp_id,
                update_time=job.update_time,
            )
        )

    async def list(
        self,
        connection_id: uuid.UUID | None,
        state: JobState | None,
        entity_type: EntityType | None,
        entity_id: uuid.UUID | None,
        after: int,
        limit: int,
    ) -> builtins.list[tuple[int, SyncJob]]:
        t = sync_jobs
        query = select(t).where(t.c.sequence > after).order_by(t.c.sequence).limit(limit)
        if connection_id is not None:
            query = query.where(t.c.connection_id == connection_id)
        if state is not None:
            query = query.where(t.c.state == state.value)
        if entity_type is not None:
            query = query.where(t.c.entity_type == entity_type.value)
        if entity_id is not None:
            query = query.where(t.c.entity_id == entity_id)
        return [(row.sequence, _job(row._mapping)) for row in await self._session.execute(query)]

    async def of_entity(self, entity_type: EntityType, entity_id: uuid.UUID) -> builtins.list[SyncJob]:
        t = sync_jobs
        rows = await self._session.execute(
            select(t).where(t.c.entity_type == entity_type.value, t.c.entity_id == entity_id).order_by(t.c.sequence)
        )
        return [_job(row._mapping) for row in rows]


def _job(row: Any) -> SyncJob:
    return SyncJob(
        job_id=row["job_id"],
        connection_id=row["connection_id"],
        entity_type=EntityType(row["entity_type"]),
        entity_id=row["entity_id"],
        account_id=row["account_id"],
        state=JobState(row["state"]),
        attempts=row["attempts"],
        last_error=row["last_error"],
        next_attempt_time=row["next_attempt_time"],
        erp_id=row["erp_id"],
        create_time=row["create_time"],
        update_time=row["update_time"],
    )


class ContactRepository:
    def __init__(self, session: AsyncSession) -> None:
        self._session = session

    async def store(
        self, account_id: uuid.UUID, contact_id: uuid.UUID, payload: bytes | None, version: datetime
    ) -> bool:
        """Keeps the contact as of `version` (payload None: removed); False when a newer or equal
        version is there already."""
        t = customer_contacts
        stmt = insert(t).values(contact_id=contact_id, account_id=account_id, payload=payload, version=version)
        upsert = stmt.on_conflict_do_update(
            index_elements=[t.c.contact_id],
            set_={"payload": stmt.excluded.payload, "version": stmt.excluded.version},
            where=t.c.version < stmt.excluded.version,
        ).returning(t.c.contact_id)
        return (await self._session.execute(upsert)).first() is not None

    async def erase(self, account_id: uuid.UUID) -> None:
        """Forgets the data of every contact of the account (personal data erased)."""
        t = customer_contacts
        await self._session.execute(update(t).where(t.c.account_id == account_id).values(payload=None))

    async def of_account(self, account_id: uuid.UUID) -> builtins.list[bytes]:
        t = customer_contacts
        rows = await self._session.scalars(
            select(t.c.payload).where(t.c.account_id == account_id, t.c.payload.is_not(None)).order_by(t.c.contact_id)
        )
        return [bytes(p) for p in rows]


class PostingRepository:
    def __init__(self, session: AsyncSession) -> None:
        self._session = session

    async def add(
        self, source_type: str, source_id: str, currency_code: str, effective_time: datetime, postings: list[Posting]
    ) -> None:
        if not postings:
            return
        await self._session.execute(
            insert(gl_postings)
            .values(
                [
                    {
                        "source_type": source_type,
                        "source_id": source_id,
                        "currency_code": currency_code,
                        "effective_time": effective_time,
                        "role": p.role,
                        "charge_offer_code": p.charge_offer_code,
                        "amount": p.amount,
                    }
                    for p in postings
                ]
            )
            .on_conflict_do_nothing(index_elements=["source_type", "source_id", "role", "charge_offer_code"])
        )

    async def add_many(self, entries: Sequence[JournalEntry]) -> None:
        """`add` for many records' postings in one statement, in the order given."""
        rows = [
            {
                "source_type": e.source_type,
                "source_id": e.source_id,
                "currency_code": e.currency_code,
                "effective_time": e.effective_time,
                "role": p.role,
                "charge_offer_code": p.charge_offer_code,
                "amount": p.amount,
            }
            for e in entries
            for p in e.postings
        ]
        if rows:
            await self._session.execute(
                *insert_rows(
                    gl_postings, rows, on_conflict_columns=("source_type", "source_id", "role", "charge_offer_code")
                )
            )

    async def in_period(self, currency_code: str, start: datetime, end: datetime) -> list[Posting]:
        t = gl_postings
        rows = await self._session.execute(
            select(t.c.role, t.c.charge_offer_code, func.sum(t.c.amount).label("amount"))
            .where(t.c.currency_code == currency_code, t.c.effective_time >= start, t.c.effective_time < end)
            .group_by(t.c.role, t.c.charge_offer_code)
        )
        return [Posting(r.role, Decimal(r.amount), r.charge_offer_code) for r in rows]


class InboundPaymentRepository:
    def __init__(self, session: AsyncSession) -> None:
        self._session = session

    async def status(self, connection_id: uuid.UUID, erp_id: str) -> str | None:
        t = inbound_payments
        return await self._session.scalar(
            select(t.c.status).where(t.c.connection_id == connection_id, t.c.erp_id == erp_id)
        )

    async def resolve(self, connection_id: uuid.UUID, erp_id: str, status: str, payment_id: str, reason: str) -> None:
        t = inbound_payments
        await self._session.execute(
            update(t)
            .where(t.c.connection_id == connection_id, t.c.erp_id == erp_id)
            .values(status=status, payment_id=payment_id, reason=reason)
        )

    async def add(self, **values: Any) -> None:
        await self._session.execute(insert(inbound_payments).values(**values).on_conflict_do_nothing())

    async def connections_of_reference(self, reference: str) -> list[uuid.UUID]:
        t = inbound_payments
        return list(await self._session.scalars(select(t.c.connection_id).where(t.c.reference == reference)))


class AllocationRepository:
    """Billing's allocations of one kind of credit to bills (PaymentAllocated, CreditNoteAllocated),
    per owner (payment, credit note) and sequence."""

    def __init__(self, session: AsyncSession, credit: AllocatedCredit) -> None:
        self._session = session
        self._credit = credit
        self._table = _ALLOCATION_TABLES[credit.owner]
        self._owner = self._table.c[_ALLOCATION_OWNERS[credit.owner]]

    async def add(
        self,
        owner_id: uuid.UUID,
        sequence: int,
        entity_id: uuid.UUID,
        account_id: uuid.UUID,
        payload: bytes,
        now: datetime,
    ) -> bool:
        """Keeps the allocation; False when the gateway had it already (a redelivery)."""
        t = self._table
        result = await self._session.execute(
            insert(t)
            .values(
                {
                    self._owner: owner_id,
                    t.c.sequence: sequence,
                    t.c.entity_id: entity_id,
                    t.c.account_id: account_id,
                    t.c.payload: payload,
                    t.c.receive_time: now,
                }
            )
            .on_conflict_do_nothing(index_elements=[self._owner, t.c.sequence])
            .returning(t.c.entity_id)
        )
        return result.first() is not None

    async def lock(self, owner_id: uuid.UUID) -> None:
        """A transaction-scoped advisory lock on the owner (payment, credit note): its own event
        (PaymentRecorded, CreditNoteIssued) and its allocations (possibly another stream, another
        replica) take turns, so whichever commits second sees the other's rows."""
        await advisory_xact_locks(self._session, [self._credit.lock_name(owner_id)])

    async def payload(self, owner_id: uuid.UUID, sequence: int) -> bytes | None:
        t = self._table
        value = await self._session.scalar(select(t.c.payload).where(self._owner == owner_id, t.c.sequence == sequence))
        return bytes(value) if value is not None else None

    async def later_of(self, owner_id: uuid.UUID) -> list[tuple[uuid.UUID, uuid.UUID, datetime]]:
        """The owner's allocations that are records of their own (a payment's after the first, a
        credit note's all), in sequence: (entity id, account id, received)."""
        t = self._table
        rows = await self._session.execute(
            select(t.c.entity_id, t.c.account_id, t.c.receive_time)
            .where(self._owner == owner_id, t.c.sequence >= self._credit.first_record)
            .order_by(t.c.sequence)
        )
        return [(row.entity_id, row.account_id, row.receive_time) for row in rows]


_ALLOCATION_TABLES = {EntityType.PAYMENT: payment_allocations, EntityType.CREDIT_NOTE: credit_note_allocations}
_ALLOCATION_OWNERS = {EntityType.PAYMENT: "payment_id", EntityType.CREDIT_NOTE: "credit_note_id"}
