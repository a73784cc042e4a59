"""Loads and stores sync states."""

from __future__ import annotations

import uuid
from typing import Any

from sqlalchemy import select
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from evolutivo_erp_gateway.adapters.orm import sync_states
from evolutivo_erp_gateway.domain.model import EntityType, SyncState, SyncStatus


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
