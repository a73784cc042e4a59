"""The ERP gateway against a real, migrated database: a PENDING sync state per new customer,
applied through the runtime's consumer exactly once, and GetSyncState."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import grpc
import pytest
from evolutivo.customer.v1 import account_pb2
from evolutivo.erp_gateway.v1 import erp_gateway_service_pb2 as pb
from evolutivo.erp_gateway.v1 import erp_gateway_service_pb2_grpc as pb_grpc
from evolutivo.erp_gateway.v1 import sync_state_pb2
from evolutivo_erp_gateway.adapters import events
from evolutivo_erp_gateway.adapters.orm import inbox, metadata, outbox, sync_states
from evolutivo_erp_gateway.domain.model import EntityType, SyncStatus
from evolutivo_erp_gateway.entrypoints.app import MIGRATIONS
from evolutivo_erp_gateway.entrypoints.consumers import subscriptions
from evolutivo_erp_gateway.entrypoints.grpc_api import ErpGatewayServicer
from evolutivo_erp_gateway.service_layer import handlers
from evolutivo_erp_gateway.service_layer.unit_of_work import ErpGatewayUnitOfWork
from evolutivo_runtime.errors import InvalidArgument, NotFound
from evolutivo_runtime.messaging.streams import stream_name
from evolutivo_runtime.server.interceptors import ServiceInterceptor
from support.customer_messages import business_account, created_message
from support.databases import MigratedDatabase, ServiceDb
from support.jetstream import FakeMsg, consumer_for, process
from support.rpc import serving

NOW = datetime(2031, 5, 17, 9, 30, tzinfo=UTC)
# The servicers never read their gRPC context.
NO_CONTEXT: Any = None
CUSTOMER = sync_state_pb2.ENTITY_TYPE_CUSTOMER


class ErpDb(ServiceDb):
    def uow(self) -> ErpGatewayUnitOfWork:
        return ErpGatewayUnitOfWork(self.sessions, outbox, self.clock, events.encode)


@pytest.fixture
async def db(migrated_database: MigratedDatabase) -> AsyncIterator[ErpDb]:
    async with ErpDb.open(await migrated_database("erp_gateway", MIGRATIONS), NOW) as database:
        yield database


def account_created(account_id: uuid.UUID | str | None = None) -> FakeMsg:
    account = business_account(account_id, account_pb2.BillingProfile(bill_cycle_day=1, payment_terms_days=30))
    return created_message(account, NOW)


async def deliver(db: ErpDb, *msgs: FakeMsg) -> None:
    """One fetched batch, applied as the service's consumer applies it."""
    await process(consumer_for(subscriptions(), stream_name("customer"), db.uow, inbox), *msgs)


async def get(db: ErpDb, entity_type: int, entity_id: str) -> pb.GetSyncStateResponse:
    return await ErpGatewayServicer(db.uow).GetSyncState(
        pb.GetSyncStateRequest(entity_type=entity_type, entity_id=entity_id),  # type: ignore[arg-type]
        NO_CONTEXT,
    )


async def test_migrations_create_exactly_the_tables_the_code_uses(db: ErpDb) -> None:
    assert await db.schema_diff(metadata) == []


async def test_a_new_customer_waits_pending_for_an_erp(db: ErpDb) -> None:
    account_id = uuid.uuid4()
    msg = account_created(account_id)
    await deliver(db, msg)
    assert msg.acked
    state = (await get(db, CUSTOMER, str(account_id))).sync_state
    assert state.entity_type == CUSTOMER
    assert state.entity_id == str(account_id)
    assert state.status == sync_state_pb2.SYNC_STATUS_PENDING
    assert state.erp_id == ""
    assert state.update_time.ToDatetime(tzinfo=UTC) == NOW
    assert await db.count(outbox) == 0  # the gateway publishes nothing yet


async def test_the_handler_applied_twice_keeps_one_state(db: ErpDb) -> None:
    account_id = uuid.uuid4()
    first = account_created(account_id)
    await deliver(db, first)
    db.clock.advance(timedelta(hours=1))
    redelivered = first.again()
    await deliver(db, redelivered, account_created(account_id))
    assert await db.count(sync_states) == 1
    async with db.uow() as uow:
        state = await uow.sync_states.get(EntityType.CUSTOMER, account_id)
    assert state is not None
    assert (state.status, state.update_time) == (SyncStatus.PENDING, NOW)
    assert await db.count(inbox) == 2


async def test_concurrent_handlers_for_one_entity_make_one_state(db: ErpDb) -> None:
    entity_id = uuid.uuid4()

    async def apply() -> bool:
        async with db.uow() as uow:
            added = await handlers.await_sync(uow, EntityType.CUSTOMER, entity_id, uow.clock.now())
            await uow.commit()
            return added

    assert sorted(await asyncio.gather(*(apply() for _ in range(8)))) == [False] * 7 + [True]
    assert await db.count(sync_states) == 1


async def test_one_id_under_two_entity_types_is_two_records(db: ErpDb) -> None:
    entity_id = uuid.uuid4()
    async with db.uow() as uow:
        assert await handlers.await_sync(uow, EntityType.CUSTOMER, entity_id, NOW)
        assert await handlers.await_sync(uow, EntityType.INVOICE, entity_id, NOW)
        await uow.commit()
    assert (await get(db, sync_state_pb2.ENTITY_TYPE_INVOICE, str(entity_id))).sync_state.entity_type == (
        sync_state_pb2.ENTITY_TYPE_INVOICE
    )
    assert await db.count(sync_states) == 2


async def test_a_broken_event_is_retried_and_does_not_block_the_batch(db: ErpDb) -> None:
    good, broken = account_created(), account_created("not-a-uuid")
    await deliver(db, broken, good)
    assert good.acked and broken.naked and not broken.acked
    assert await db.count(sync_states) == 1


async def test_an_unknown_entity_is_not_found(db: ErpDb) -> None:
    account_id = uuid.uuid4()
    await deliver(db, account_created(account_id))
    with pytest.raises(NotFound) as missing:
        await get(db, sync_state_pb2.ENTITY_TYPE_PAYMENT, str(account_id))
    assert missing.value.reason == "SYNC_STATE_NOT_FOUND"
    with pytest.raises(NotFound):
        await get(db, CUSTOMER, str(uuid.uuid4()))


@pytest.mark.parametrize(
    ("entity_type", "entity_id", "field_name"),
    [
        (sync_state_pb2.ENTITY_TYPE_UNSPECIFIED, str(uuid.uuid4()), "entity_type"),
        (77, str(uuid.uuid4()), "entity_type"),
        # The entity type is checked first: both wrong names entity_type.
        (sync_state_pb2.ENTITY_TYPE_UNSPECIFIED, "nope", "entity_type"),
        (CUSTOMER, "nope", "entity_id"),
        (CUSTOMER, "", "entity_id"),
    ],
)
async def test_bad_input_names_the_field(db: ErpDb, entity_type: int, entity_id: str, field_name: str) -> None:
    with pytest.raises(InvalidArgument) as refused:
        await get(db, entity_type, entity_id)
    assert refused.value.field == field_name


async def test_grpc_status_codes(db: ErpDb) -> None:
    async with serving(
        pb_grpc.add_ErpGatewayServiceServicer_to_server,
        ErpGatewayServicer(db.uow),
        ServiceInterceptor("erp_gateway.evolutivo.io"),
    ) as channel:
        stub = pb_grpc.ErpGatewayServiceStub(channel)
        with pytest.raises(grpc.aio.AioRpcError) as unspecified:
            await stub.GetSyncState(pb.GetSyncStateRequest(entity_id=str(uuid.uuid4())))
        assert unspecified.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert (unspecified.value.details() or "").startswith("entity_type:")
        with pytest.raises(grpc.aio.AioRpcError) as bad_id:
            await stub.GetSyncState(pb.GetSyncStateRequest(entity_type=CUSTOMER, entity_id="x"))
        assert bad_id.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert (bad_id.value.details() or "").startswith("entity_id:")
        with pytest.raises(grpc.aio.AioRpcError) as missing:
            await stub.GetSyncState(pb.GetSyncStateRequest(entity_type=CUSTOMER, entity_id=str(uuid.uuid4())))
        assert missing.value.code() == grpc.StatusCode.NOT_FOUND
