from __future__ import annotations

from typing import Self

from evolutivo_runtime.uow import UnitOfWork

from evolutivo_erp_gateway.adapters.repository import SyncStateRepository


class ErpGatewayUnitOfWork(UnitOfWork):
    sync_states: SyncStateRepository

    async def __aenter__(self) -> Self:
        await super().__aenter__()
        self.sync_states = SyncStateRepository(self.session)
        return self
