"""ErpGatewayService over gRPC: translates messages to handler calls and back, nothing more."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from datetime import datetime

from evolutivo.erp_gateway.v1 import erp_gateway_service_pb2 as pb
from evolutivo.erp_gateway.v1 import erp_gateway_service_pb2_grpc as pb_grpc
from evolutivo_runtime.clock import SystemClock
from evolutivo_runtime.errors import InvalidArgument
from evolutivo_runtime.ids import parse_request_id, parse_uuid
from evolutivo_runtime.pagination import decode_keyset, encode_keyset, page_size, parse_int_token
from evolutivo_runtime.server import Context

from evolutivo_erp_gateway.adapters import proto
from evolutivo_erp_gateway.adapters.factory import Adapters
from evolutivo_erp_gateway.domain.journal import check_currency_code
from evolutivo_erp_gateway.service_layer import handlers
from evolutivo_erp_gateway.service_layer.unit_of_work import ErpGatewayUnitOfWork


class ErpGatewayServicer(pb_grpc.ErpGatewayServiceServicer):
    def __init__(self, uow: Callable[[], ErpGatewayUnitOfWork], adapters: Adapters | None = None) -> None:
        self._uow = uow
        # Without adapters (GetSyncState only) secrets cannot be stored: there is no key.
        self._adapters = adapters or Adapters(None, 10.0, SystemClock().now)

    async def GetSyncState(self, request: pb.GetSyncStateRequest, context: Context) -> pb.GetSyncStateResponse:
        entity_type = proto.entity_type_from_pb(request.entity_type)
        entity_id = parse_uuid("entity_id", request.entity_id)
        state, jobs = await handlers.get_sync_state(self._uow(), entity_type, entity_id)
        return pb.GetSyncStateResponse(sync_state=proto.state_to_pb(state), jobs=[proto.job_to_pb(j) for j in jobs])

    async def CreateConnection(
        self, request: pb.CreateConnectionRequest, context: Context
    ) -> pb.CreateConnectionResponse:
        request_id = parse_request_id(request.request_id)
        uow = self._uow()
        connection = proto.new_connection_from_pb(request.connection, uow.clock.now())
        created = await handlers.create_connection(uow, self._adapters, connection, request.secret, request_id)
        return pb.CreateConnectionResponse(connection=proto.connection_to_pb(created))

    async def GetConnection(self, request: pb.GetConnectionRequest, context: Context) -> pb.GetConnectionResponse:
        connection_id = parse_uuid("connection_id", request.connection_id)
        connection = await handlers.get_connection(self._uow(), connection_id)
        return pb.GetConnectionResponse(connection=proto.connection_to_pb(connection))

    async def ListConnections(self, request: pb.ListConnectionsRequest, context: Context) -> pb.ListConnectionsResponse:
        size = page_size(request.page_size)
        keyset = decode_keyset(request.page_token, 2)
        after = None
        if keyset is not None:
            try:
                after = (datetime.fromisoformat(keyset[0]), uuid.UUID(keyset[1]))
            except ValueError:
                raise InvalidArgument("page_token", "is not a token this service issued") from None
        connections = await handlers.list_connections(self._uow(), after, size + 1)
        token = ""
        if len(connections) > size:
            connections = connections[:size]
            last = connections[-1]
            token = encode_keyset(last.create_time.isoformat(), str(last.connection_id))
        return pb.ListConnectionsResponse(
            connections=[proto.connection_to_pb(c) for c in connections], next_page_token=token
        )

    async def UpdateConnection(
        self, request: pb.UpdateConnectionRequest, context: Context
    ) -> pb.UpdateConnectionResponse:
        connection_id = parse_uuid("connection.connection_id", request.connection.connection_id)
        changes, names_secret = proto.connection_changes(request.connection, list(request.update_mask.paths))
        updated = await handlers.update_connection(
            self._uow(),
            self._adapters,
            connection_id,
            changes,
            request.secret if names_secret else None,
            request.connection.etag,
        )
        return pb.UpdateConnectionResponse(connection=proto.connection_to_pb(updated))

    async def DeleteConnection(
        self, request: pb.DeleteConnectionRequest, context: Context
    ) -> pb.DeleteConnectionResponse:
        connection_id = parse_uuid("connection_id", request.connection_id)
        await handlers.delete_connection(self._uow(), connection_id, request.etag)
        return pb.DeleteConnectionResponse()

    async def RotateConnectionSecrets(
        self, request: pb.RotateConnectionSecretsRequest, context: Context
    ) -> pb.RotateConnectionSecretsResponse:
        rotated, unreadable = await handlers.rotate_secrets(self._uow(), self._adapters)
        return pb.RotateConnectionSecretsResponse(
            rotated_count=rotated, unreadable_connection_ids=[str(c) for c in unreadable]
        )

    async def TestConnection(self, request: pb.TestConnectionRequest, context: Context) -> pb.TestConnectionResponse:
        connection_id = parse_uuid("connection_id", request.connection_id)
        problems = await handlers.test_connection(self._uow(), self._adapters, connection_id)
        return pb.TestConnectionResponse(ok=not problems, problems=[proto.problem_to_pb(p) for p in problems])

    async def ListSyncJobs(self, request: pb.ListSyncJobsRequest, context: Context) -> pb.ListSyncJobsResponse:
        connection_id = parse_uuid("connection_id", request.connection_id) if request.connection_id else None
        state = proto.job_state_from_pb(request.state, "state")
        entity_type = proto.optional_entity_type(request.entity_type, "entity_type")
        entity_id = parse_uuid("entity_id", request.entity_id) if request.entity_id else None
        size = page_size(request.page_size)
        after = parse_int_token(request.page_token)
        rows = await handlers.list_jobs(self._uow(), connection_id, state, entity_type, entity_id, after, size + 1)
        token = ""
        if len(rows) > size:
            rows = rows[:size]
            token = str(rows[-1][0])
        return pb.ListSyncJobsResponse(jobs=[proto.job_to_pb(job) for _, job in rows], next_page_token=token)

    async def RetrySyncJob(self, request: pb.RetrySyncJobRequest, context: Context) -> pb.RetrySyncJobResponse:
        job = await handlers.retry_job(self._uow(), parse_uuid("job_id", request.job_id))
        return pb.RetrySyncJobResponse(job=proto.job_to_pb(job))

    async def ExportJournal(self, request: pb.ExportJournalRequest, context: Context) -> pb.ExportJournalResponse:
        connection_id = parse_uuid("connection_id", request.connection_id)
        start = proto.time_from_pb(request.start_time, "start_time")
        end = proto.time_from_pb(request.end_time, "end_time")
        currency = check_currency_code(request.currency_code)
        request_id = parse_request_id(request.request_id)
        # The ERP finds the entry by this reference: a retry (same request id, or the same period
        # without one) posts nothing twice.
        reference = str(request_id) if request_id else f"{currency}:{start.isoformat()}:{end.isoformat()}"
        exported = await handlers.export_journal(
            self._uow(), self._adapters, connection_id, start, end, currency, request.post, reference
        )
        return proto.journal_to_pb(exported.journal, exported.erp_move_id)
