"""ErpGatewayService: connections, sync state and jobs, the GL journal export."""

from __future__ import annotations

from datetime import timedelta

from evolutivo.erp_gateway.v1 import connection_pb2 as c
from evolutivo.erp_gateway.v1 import erp_gateway_service_pb2 as pb
from evolutivo.erp_gateway.v1 import sync_state_pb2
from evolutivo_runtime.timestamps import to_timestamp
from google.protobuf.field_mask_pb2 import FieldMask

from bad_input import ABORTED, FAILED, INVALID, NOT_FOUND, OK, Case, case
from bad_input.values import CONTROL, NOT_A_TOKEN, NOT_UUID, SCRIPT, SQL, UNKNOWN, long
from bad_input.world import World

S = "/evolutivo.erp_gateway.v1.ErpGatewayService/"
CUSTOMER = sync_state_pb2.ENTITY_TYPE_CUSTOMER


def connection(**fields: object) -> c.Connection:
    values: dict[str, object] = {
        "display_name": "Tryton",
        "type": c.CONNECTION_TYPE_TRYTON,
        "endpoint_url": "http://127.0.0.1:1/tryton/",
        "username": "admin",
    }
    values.update(fields)
    return c.Connection(**values)  # type: ignore[arg-type]


def create(conn: c.Connection) -> pb.CreateConnectionRequest:
    return pb.CreateConnectionRequest(connection=conn, secret="s3cret")


def update(w: World, path: str, **fields: object) -> pb.UpdateConnectionRequest:
    return pb.UpdateConnectionRequest(
        connection=c.Connection(connection_id=w.connection_id, **fields),  # type: ignore[arg-type]
        update_mask=FieldMask(paths=[path]),
    )


def export(w: World, **fields: object) -> pb.ExportJournalRequest:
    values: dict[str, object] = {
        "connection_id": w.connection_id,
        "start_time": to_timestamp(w.now - timedelta(days=1)),
        "end_time": to_timestamp(w.now + timedelta(hours=1)),
        "currency_code": "EUR",
    }
    values.update(fields)
    return pb.ExportJournalRequest(**values)  # type: ignore[arg-type]


CASES: list[Case] = [
    # --- GetSyncState
    case(
        S + "GetSyncState",
        "entity type unspecified",
        lambda w: pb.GetSyncStateRequest(entity_id=w.account_id),
        INVALID,
        "entity_type",
    ),
    case(
        S + "GetSyncState",
        "entity type out of the enum",
        lambda w: pb.GetSyncStateRequest(entity_type=99, entity_id=w.account_id),
        INVALID,
        "entity_type",
    ),
    case(
        S + "GetSyncState",
        "entity id missing",
        lambda w: pb.GetSyncStateRequest(entity_type=CUSTOMER),
        INVALID,
        "entity_id",
    ),
    case(
        S + "GetSyncState",
        "entity id SQL-looking",
        lambda w: pb.GetSyncStateRequest(entity_type=CUSTOMER, entity_id=SQL),
        INVALID,
        "entity_id",
    ),
    case(
        S + "GetSyncState",
        "unknown entity",
        lambda w: pb.GetSyncStateRequest(entity_type=CUSTOMER, entity_id=UNKNOWN),
        NOT_FOUND,
    ),
    # --- CreateConnection
    case(S + "CreateConnection", "connection missing", lambda w: pb.CreateConnectionRequest(), INVALID, "connection"),
    case(S + "CreateConnection", "type unspecified", lambda w: create(connection(type=0)), INVALID, "connection.type"),
    case(
        S + "CreateConnection",
        "name missing",
        lambda w: create(connection(display_name="")),
        INVALID,
        "connection.display_name",
    ),
    case(
        S + "CreateConnection",
        "name over-long",
        lambda w: create(connection(display_name=long(201))),
        INVALID,
        "connection.display_name",
    ),
    case(
        S + "CreateConnection",
        "name with control characters",
        lambda w: create(connection(display_name=CONTROL)),
        INVALID,
        "connection.display_name",
    ),
    case(
        S + "CreateConnection",
        "URL not http",
        lambda w: create(connection(endpoint_url="file:///etc/passwd")),
        INVALID,
        "connection.endpoint_url",
    ),
    case(
        S + "CreateConnection",
        "URL script-looking",
        lambda w: create(connection(endpoint_url=f"javascript:{SCRIPT}")),
        INVALID,
        "connection.endpoint_url",
    ),
    case(
        S + "CreateConnection",
        "Tryton URL without its database",
        lambda w: create(connection(endpoint_url="http://127.0.0.1:1/")),
        INVALID,
        "connection.endpoint_url",
    ),
    case(
        S + "CreateConnection",
        "Tryton without a user",
        lambda w: create(connection(username="")),
        INVALID,
        "connection.username",
    ),
    case(
        S + "CreateConnection",
        "Odoo without a database",
        lambda w: create(connection(type=c.CONNECTION_TYPE_ODOO, endpoint_url="https://odoo.example.com")),
        INVALID,
        "connection.database",
    ),
    case(
        S + "CreateConnection",
        "webhook importing payments",
        lambda w: create(
            connection(type=c.CONNECTION_TYPE_WEBHOOK, endpoint_url="https://hooks.example.com/x", import_payments=True)
        ),
        INVALID,
        "connection.import_payments",
    ),
    case(
        S + "CreateConnection",
        "mapping role unknown",
        lambda w: create(connection(mapping=c.ConnectionMapping(accounts={"bogus": "4300"}))),
        INVALID,
        "connection.mapping.accounts",
    ),
    case(
        S + "CreateConnection",
        "mapping value empty",
        lambda w: create(connection(mapping=c.ConnectionMapping(taxes={"standard": ""}))),
        INVALID,
        "connection.mapping.taxes",
    ),
    case(
        S + "CreateConnection",
        "request id not a UUID",
        lambda w: pb.CreateConnectionRequest(connection=connection(), request_id=SQL),
        INVALID,
        "request_id",
    ),
    # --- GetConnection / ListConnections / UpdateConnection / TestConnection
    case(
        S + "GetConnection",
        "id not a UUID",
        lambda w: pb.GetConnectionRequest(connection_id=NOT_UUID),
        INVALID,
        "connection_id",
    ),
    case(
        S + "GetConnection", "unknown connection", lambda w: pb.GetConnectionRequest(connection_id=UNKNOWN), NOT_FOUND
    ),
    case(
        S + "ListConnections",
        "page size negative",
        lambda w: pb.ListConnectionsRequest(page_size=-1),
        INVALID,
        "page_size",
    ),
    case(
        S + "ListConnections",
        "page token forged",
        lambda w: pb.ListConnectionsRequest(page_token=NOT_A_TOKEN),
        INVALID,
        "page_token",
    ),
    case(
        S + "UpdateConnection",
        "update mask missing",
        lambda w: pb.UpdateConnectionRequest(connection=c.Connection(connection_id=w.connection_id, display_name="X")),
        INVALID,
        "update_mask",
    ),
    case(
        S + "UpdateConnection",
        "update mask names the type",
        lambda w: update(w, "type", type=c.CONNECTION_TYPE_TRYTON),
        INVALID,
        "update_mask",
    ),
    case(
        S + "UpdateConnection", "name missing", lambda w: update(w, "display_name"), INVALID, "connection.display_name"
    ),
    case(
        S + "UpdateConnection",
        "mapping role unknown",
        lambda w: update(w, "mapping", mapping=c.ConnectionMapping(journals={"bogus": "J"})),
        INVALID,
        "connection.mapping.journals",
    ),
    case(
        S + "UpdateConnection",
        "stale etag",
        lambda w: update(w, "display_name", display_name="Renamed", etag="v0"),
        # ABORTED, as a stale etag is in every service (AIP-154).
        ABORTED,
        reason="ETAG_MISMATCH",
    ),
    case(
        S + "UpdateConnection",
        "id not a UUID",
        lambda w: pb.UpdateConnectionRequest(
            connection=c.Connection(connection_id=SQL, display_name="X"), update_mask=FieldMask(paths=["display_name"])
        ),
        INVALID,
        "connection.connection_id",
    ),
    case(
        S + "UpdateConnection",
        "unknown connection",
        lambda w: pb.UpdateConnectionRequest(
            connection=c.Connection(connection_id=UNKNOWN, display_name="X"),
            update_mask=FieldMask(paths=["display_name"]),
        ),
        NOT_FOUND,
    ),
    case(
        S + "DeleteConnection",
        "id not a UUID",
        lambda w: pb.DeleteConnectionRequest(connection_id=SQL),
        INVALID,
        "connection_id",
    ),
    case(
        S + "DeleteConnection",
        "unknown connection",
        lambda w: pb.DeleteConnectionRequest(connection_id=UNKNOWN),
        NOT_FOUND,
    ),
    case(
        S + "DeleteConnection",
        "stale etag",
        lambda w: pb.DeleteConnectionRequest(connection_id=w.connection_id, etag="v0"),
        ABORTED,
        reason="ETAG_MISMATCH",
    ),
    # Nothing to get wrong; the seeded connection has no secret, so nothing is re-encrypted. A
    # successful admin call is audited (source "interceptor"), nothing else is written.
    case(
        S + "RotateConnectionSecrets",
        "no secret to rotate",
        lambda w: pb.RotateConnectionSecretsRequest(),
        OK,
        writes=frozenset({"erp_gateway.audit_log"}),
    ),
    case(
        S + "TestConnection",
        "id not a UUID",
        lambda w: pb.TestConnectionRequest(connection_id=NOT_UUID),
        INVALID,
        "connection_id",
    ),
    case(
        S + "TestConnection", "unknown connection", lambda w: pb.TestConnectionRequest(connection_id=UNKNOWN), NOT_FOUND
    ),
    # --- Sync jobs
    case(
        S + "ListSyncJobs",
        "connection id not a UUID",
        lambda w: pb.ListSyncJobsRequest(connection_id=SQL),
        INVALID,
        "connection_id",
    ),
    case(S + "ListSyncJobs", "state out of the enum", lambda w: pb.ListSyncJobsRequest(state=99), INVALID, "state"),
    case(
        S + "ListSyncJobs",
        "page token forged",
        lambda w: pb.ListSyncJobsRequest(page_token=NOT_A_TOKEN),
        INVALID,
        "page_token",
    ),
    case(S + "RetrySyncJob", "job id not a UUID", lambda w: pb.RetrySyncJobRequest(job_id=NOT_UUID), INVALID, "job_id"),
    case(S + "RetrySyncJob", "unknown job", lambda w: pb.RetrySyncJobRequest(job_id=UNKNOWN), NOT_FOUND),
    # --- ExportJournal
    case(S + "ExportJournal", "start missing", lambda w: export(w, start_time=None), INVALID, "start_time"),
    case(S + "ExportJournal", "end missing", lambda w: export(w, end_time=None), INVALID, "end_time"),
    case(
        S + "ExportJournal",
        "end before start",
        lambda w: export(w, start_time=to_timestamp(w.now), end_time=to_timestamp(w.now - timedelta(days=2))),
        INVALID,
        "end_time",
    ),
    case(S + "ExportJournal", "currency missing", lambda w: export(w, currency_code=""), INVALID, "currency_code"),
    case(S + "ExportJournal", "currency unknown", lambda w: export(w, currency_code="ZZZ"), INVALID, "currency_code"),
    case(
        S + "ExportJournal", "currency lower case", lambda w: export(w, currency_code="eur"), INVALID, "currency_code"
    ),
    case(S + "ExportJournal", "request id not a UUID", lambda w: export(w, request_id=NOT_UUID), INVALID, "request_id"),
    case(
        S + "ExportJournal",
        "connection id not a UUID",
        lambda w: export(w, connection_id=SQL),
        INVALID,
        "connection_id",
    ),
    case(S + "ExportJournal", "unknown connection", lambda w: export(w, connection_id=UNKNOWN), NOT_FOUND),
    case(S + "ExportJournal", "posting to a file export", lambda w: export(w, post=True), FAILED),
]
