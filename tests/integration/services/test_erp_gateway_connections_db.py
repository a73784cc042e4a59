"""ERP connections and the GL export over the gateway's servicer, against a real, migrated
database, with a general-ledger file connection (no ERP to reach): a stale etag is ABORTED as in
every service of the suite (AIP-154), and ExportJournal refuses a currency ISO 4217 does not know;
neither changes anything."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from evolutivo.erp_gateway.v1 import connection_pb2
from evolutivo.erp_gateway.v1 import erp_gateway_service_pb2 as pb
from evolutivo_erp_gateway.adapters import events
from evolutivo_erp_gateway.adapters.crypto import SecretCipher, generate_key
from evolutivo_erp_gateway.adapters.factory import Adapters
from evolutivo_erp_gateway.adapters.orm import connections, outbox
from evolutivo_erp_gateway.entrypoints.app import MIGRATIONS
from evolutivo_erp_gateway.entrypoints.grpc_api import ErpGatewayServicer
from evolutivo_erp_gateway.service_layer.unit_of_work import ErpGatewayUnitOfWork
from evolutivo_runtime.errors import Aborted, InvalidArgument
from evolutivo_runtime.timestamps import to_timestamp
from google.protobuf.field_mask_pb2 import FieldMask
from sqlalchemy import select
from support.databases import MigratedDatabase, ServiceDb

NOW = datetime(2031, 5, 17, 9, 30, tzinfo=UTC)
NO_CONTEXT: Any = None


class ErpDb(ServiceDb):
    def uow(self) -> ErpGatewayUnitOfWork:
        return ErpGatewayUnitOfWork(self.sessions, outbox, self.clock, events.encode)

    async def stored(self) -> list[tuple[Any, ...]]:
        """What a refused call must leave as it was: every connection row, and the outbox."""
        rows = await self.rows(select(connections).order_by(connections.c.connection_id))
        return [tuple(r) for r in rows] + [(await self.count(outbox),)]


@pytest.fixture
async def db(migrated_database: MigratedDatabase) -> AsyncIterator[ErpDb]:
    async with ErpDb.open(await migrated_database("erp_gateway", MIGRATIONS), NOW) as database:
        yield database


@pytest.fixture
async def api(db: ErpDb) -> ErpGatewayServicer:
    return ErpGatewayServicer(db.uow, Adapters(SecretCipher([generate_key()]), 5.0, db.clock.now))


async def gl_export(api: ErpGatewayServicer) -> connection_pb2.Connection:
    request = pb.CreateConnectionRequest(
        connection=connection_pb2.Connection(
            display_name="GL export",
            type=connection_pb2.CONNECTION_TYPE_GL_FILE_EXPORT,
            mapping=connection_pb2.ConnectionMapping(
                accounts={"receivable": "4300", "revenue": "7000", "tax": "4770", "cash": "5720"},
                journals={"general": "GEN"},
            ),
            enabled=True,
        ),
        request_id=str(uuid.uuid4()),
    )
    return (await api.CreateConnection(request, NO_CONTEXT)).connection


async def test_a_stale_etag_is_aborted_on_update_and_delete_and_changes_nothing(
    db: ErpDb, api: ErpGatewayServicer
) -> None:
    first = await gl_export(api)
    renamed = connection_pb2.Connection(connection_id=first.connection_id, display_name="GL (2031)", etag=first.etag)
    mask = FieldMask(paths=["display_name"])
    current = await api.UpdateConnection(pb.UpdateConnectionRequest(connection=renamed, update_mask=mask), NO_CONTEXT)
    assert current.connection.etag != first.etag
    before = await db.stored()

    # `renamed` still carries the etag it was read with.
    renamed.display_name = "GL (lost update)"
    with pytest.raises(Aborted) as stale_update:
        await api.UpdateConnection(pb.UpdateConnectionRequest(connection=renamed, update_mask=mask), NO_CONTEXT)
    assert stale_update.value.reason == "ETAG_MISMATCH"
    with pytest.raises(Aborted) as stale_delete:
        await api.DeleteConnection(
            pb.DeleteConnectionRequest(connection_id=first.connection_id, etag=first.etag), NO_CONTEXT
        )
    assert stale_delete.value.reason == "ETAG_MISMATCH"
    assert await db.stored() == before

    # Read again, retry: both go through.
    renamed.etag = current.connection.etag
    again = await api.UpdateConnection(pb.UpdateConnectionRequest(connection=renamed, update_mask=mask), NO_CONTEXT)
    assert again.connection.display_name == "GL (lost update)"
    await api.DeleteConnection(
        pb.DeleteConnectionRequest(connection_id=first.connection_id, etag=again.connection.etag), NO_CONTEXT
    )
    assert await db.count(connections) == 0


def export(connection_id: str, currency_code: str) -> pb.ExportJournalRequest:
    return pb.ExportJournalRequest(
        connection_id=connection_id,
        start_time=to_timestamp(NOW - timedelta(days=1)),
        end_time=to_timestamp(NOW),
        currency_code=currency_code,
    )


@pytest.mark.parametrize("currency_code", ["ZZZ", "EURO", "eur", "", "€"])
async def test_export_journal_refuses_a_currency_iso_4217_does_not_know(
    db: ErpDb, api: ErpGatewayServicer, currency_code: str
) -> None:
    connection = await gl_export(api)
    before = await db.stored()
    with pytest.raises(InvalidArgument) as caught:
        await api.ExportJournal(export(connection.connection_id, currency_code), NO_CONTEXT)
    assert caught.value.field == "currency_code"
    assert "ISO 4217" in caught.value.rule
    assert await db.stored() == before


@pytest.mark.parametrize("currency_code", ["EUR", "JPY", "BHD"])
async def test_export_journal_takes_a_known_currency(db: ErpDb, api: ErpGatewayServicer, currency_code: str) -> None:
    connection = await gl_export(api)
    exported = await api.ExportJournal(export(connection.connection_id, currency_code), NO_CONTEXT)
    assert (list(exported.lines), exported.erp_move_id) == ([], "")
    assert exported.debit_total.currency_code == currency_code
