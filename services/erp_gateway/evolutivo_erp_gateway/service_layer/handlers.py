"""Use cases of the ERP gateway. Plain functions over a unit of work."""

from __future__ import annotations

import uuid
from datetime import datetime

from evolutivo_runtime.errors import NotFound

from evolutivo_erp_gateway.domain.model import EntityType, SyncState
from evolutivo_erp_gateway.service_layer.unit_of_work import ErpGatewayUnitOfWork


async def await_sync(uow: ErpGatewayUnitOfWork, entity_type: EntityType, entity_id: uuid.UUID, now: datetime) -> bool:
    """On a new suite record: a PENDING sync state for it, exactly once; False when it was known already.

    Runs inside the consumer's transaction (the caller commits)."""
    return await uow.sync_states.add(SyncState.pending(entity_type, entity_id, now))


async def get_sync_state(uow: ErpGatewayUnitOfWork, entity_type: EntityType, entity_id: uuid.UUID) -> SyncState:
    async with uow:
        state = await uow.sync_states.get(entity_type, entity_id)
        if state is None:
            raise NotFound("sync_state", f"{entity_type.value}/{entity_id}")
        return state
