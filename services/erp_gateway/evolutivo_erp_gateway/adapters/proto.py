"""Translation between the domain model and the evolutivo.erp_gateway.v1 messages."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

from evolutivo.erp_gateway.v1 import (
    connection_pb2,
    erp_gateway_service_pb2,
    journal_pb2,
    sync_job_pb2,
    sync_state_pb2,
)
from evolutivo_runtime.errors import InvalidArgument
from evolutivo_runtime.money import to_money
from google.protobuf.timestamp_pb2 import Timestamp

from evolutivo_erp_gateway.adapters.erp import Problem, ProblemKind
from evolutivo_erp_gateway.domain.connections import Connection, ConnectionType, Mapping
from evolutivo_erp_gateway.domain.jobs import JobState, SyncJob
from evolutivo_erp_gateway.domain.journal import Journal
from evolutivo_erp_gateway.domain.model import EntityType, SyncState, SyncStatus

_ENTITY_TYPES = {
    sync_state_pb2.ENTITY_TYPE_CUSTOMER: EntityType.CUSTOMER,
    sync_state_pb2.ENTITY_TYPE_INVOICE: EntityType.INVOICE,
    sync_state_pb2.ENTITY_TYPE_CREDIT_NOTE: EntityType.CREDIT_NOTE,
    sync_state_pb2.ENTITY_TYPE_PAYMENT: EntityType.PAYMENT,
    sync_state_pb2.ENTITY_TYPE_PAYMENT_REVERSAL: EntityType.PAYMENT_REVERSAL,
    sync_state_pb2.ENTITY_TYPE_WRITE_OFF: EntityType.WRITE_OFF,
    sync_state_pb2.ENTITY_TYPE_COLLECTIONS_REFERRAL: EntityType.REFERRAL,
    sync_state_pb2.ENTITY_TYPE_PAYMENT_ALLOCATION: EntityType.PAYMENT_ALLOCATION,
    sync_state_pb2.ENTITY_TYPE_CREDIT_NOTE_ALLOCATION: EntityType.CREDIT_NOTE_ALLOCATION,
}
_STATUSES = {
    SyncStatus.PENDING: sync_state_pb2.SYNC_STATUS_PENDING,
    SyncStatus.SYNCED: sync_state_pb2.SYNC_STATUS_SYNCED,
    SyncStatus.FAILED: sync_state_pb2.SYNC_STATUS_FAILED,
}
_CONNECTION_TYPES = {
    connection_pb2.CONNECTION_TYPE_TRYTON: ConnectionType.TRYTON,
    connection_pb2.CONNECTION_TYPE_ODOO: ConnectionType.ODOO,
    connection_pb2.CONNECTION_TYPE_WEBHOOK: ConnectionType.WEBHOOK,
    connection_pb2.CONNECTION_TYPE_GL_FILE_EXPORT: ConnectionType.GL_FILE_EXPORT,
}
_JOB_STATES = {
    sync_job_pb2.SYNC_JOB_STATE_PENDING: JobState.PENDING,
    sync_job_pb2.SYNC_JOB_STATE_RETRYING: JobState.RETRYING,
    sync_job_pb2.SYNC_JOB_STATE_SUCCEEDED: JobState.SUCCEEDED,
    sync_job_pb2.SYNC_JOB_STATE_DEAD: JobState.DEAD,
}
_PROBLEMS = {
    ProblemKind.UNREACHABLE: erp_gateway_service_pb2.CONNECTION_PROBLEM_KIND_UNREACHABLE,
    ProblemKind.AUTH_FAILED: erp_gateway_service_pb2.CONNECTION_PROBLEM_KIND_AUTH_FAILED,
    ProblemKind.MAPPING_MISSING: erp_gateway_service_pb2.CONNECTION_PROBLEM_KIND_MAPPING_MISSING,
    ProblemKind.CONFIG_INVALID: erp_gateway_service_pb2.CONNECTION_PROBLEM_KIND_CONFIG_INVALID,
    ProblemKind.ERP_ERROR: erp_gateway_service_pb2.CONNECTION_PROBLEM_KIND_ERP_ERROR,
}


def _ts(value: datetime) -> Timestamp:
    ts = Timestamp()
    ts.FromDatetime(value)
    return ts


def entity_type_from_pb(value: sync_state_pb2.EntityType.ValueType, field: str = "entity_type") -> EntityType:
    if value == sync_state_pb2.ENTITY_TYPE_UNSPECIFIED:
        raise InvalidArgument(field, "is required")
    try:
        return _ENTITY_TYPES[value]
    except KeyError:
        raise InvalidArgument(field, "is not a known entity type") from None


def optional_entity_type(value: sync_state_pb2.EntityType.ValueType, field: str) -> EntityType | None:
    return None if value == sync_state_pb2.ENTITY_TYPE_UNSPECIFIED else entity_type_from_pb(value, field)


def entity_type_to_pb(value: EntityType) -> sync_state_pb2.EntityType.ValueType:
    return {v: k for k, v in _ENTITY_TYPES.items()}[value]


def state_to_pb(state: SyncState) -> sync_state_pb2.SyncState:
    return sync_state_pb2.SyncState(
        entity_type=entity_type_to_pb(state.entity_type),
        entity_id=str(state.entity_id),
        status=_STATUSES[state.status],
        erp_id=state.erp_id,
        update_time=_ts(state.update_time),
    )


def connection_type_from_pb(value: connection_pb2.ConnectionType.ValueType, field: str) -> ConnectionType:
    if value == connection_pb2.CONNECTION_TYPE_UNSPECIFIED:
        raise InvalidArgument(field, "is required")
    try:
        return _CONNECTION_TYPES[value]
    except KeyError:
        raise InvalidArgument(field, "is not a known connection type") from None


def mapping_from_pb(m: connection_pb2.ConnectionMapping) -> Mapping:
    return Mapping(
        customers=dict(m.customers),
        products=dict(m.products),
        taxes=dict(m.taxes),
        journals=dict(m.journals),
        accounts=dict(m.accounts),
    )


def mapping_to_pb(m: Mapping) -> connection_pb2.ConnectionMapping:
    return connection_pb2.ConnectionMapping(
        customers=m.customers, products=m.products, taxes=m.taxes, journals=m.journals, accounts=m.accounts
    )


def new_connection_from_pb(c: connection_pb2.Connection, now: datetime) -> Connection:
    return Connection(
        connection_id=uuid.uuid4(),
        display_name=c.display_name,
        type=connection_type_from_pb(c.type, "connection.type"),
        endpoint_url=c.endpoint_url,
        database=c.database,
        username=c.username,
        mapping=mapping_from_pb(c.mapping),
        enabled=c.enabled,
        import_payments=c.import_payments,
        collections_referrals=c.collections_referrals,
        has_credentials=False,
        create_time=now,
        update_time=now,
    )


def connection_changes(c: connection_pb2.Connection, paths: list[str]) -> tuple[dict[str, object], bool]:
    """The fields an update mask names, and whether it names the secret."""
    from evolutivo_erp_gateway.service_layer.handlers import UPDATABLE

    changes: dict[str, object] = {}
    secret = False
    if not paths:
        raise InvalidArgument("update_mask", "names no field")
    for path in paths:
        if path not in UPDATABLE:
            raise InvalidArgument("update_mask", f"{path!r} cannot be updated (one of {', '.join(UPDATABLE)})")
        if path == "secret":
            secret = True
        elif path == "mapping":
            changes["mapping"] = mapping_from_pb(c.mapping)
        else:
            changes[path] = getattr(c, path)
    return changes, secret


def connection_to_pb(c: Connection) -> connection_pb2.Connection:
    return connection_pb2.Connection(
        connection_id=str(c.connection_id),
        display_name=c.display_name,
        type={v: k for k, v in _CONNECTION_TYPES.items()}[c.type],
        endpoint_url=c.endpoint_url,
        database=c.database,
        username=c.username,
        has_credentials=c.has_credentials,
        mapping=mapping_to_pb(c.mapping),
        enabled=c.enabled,
        import_payments=c.import_payments,
        create_time=_ts(c.create_time),
        update_time=_ts(c.update_time),
        etag=c.etag,
        paused_until=_ts(c.paused_until) if c.paused_until else None,
        collections_referrals=c.collections_referrals,
    )


def job_state_from_pb(value: sync_job_pb2.SyncJobState.ValueType, field: str) -> JobState | None:
    if value == sync_job_pb2.SYNC_JOB_STATE_UNSPECIFIED:
        return None
    try:
        return _JOB_STATES[value]
    except KeyError:
        raise InvalidArgument(field, "is not a known job state") from None


def job_to_pb(job: SyncJob) -> sync_job_pb2.SyncJob:
    return sync_job_pb2.SyncJob(
        job_id=str(job.job_id),
        connection_id=str(job.connection_id),
        entity_type=entity_type_to_pb(job.entity_type),
        entity_id=str(job.entity_id),
        account_id=str(job.account_id),
        state={v: k for k, v in _JOB_STATES.items()}[job.state],
        attempts=job.attempts,
        last_error=job.last_error,
        next_attempt_time=_ts(job.next_attempt_time),
        erp_id=job.erp_id,
        create_time=_ts(job.create_time),
        update_time=_ts(job.update_time),
    )


def problem_to_pb(p: Problem) -> erp_gateway_service_pb2.ConnectionProblem:
    return erp_gateway_service_pb2.ConnectionProblem(kind=_PROBLEMS[p.kind], message=p.message)


def journal_to_pb(journal: Journal, erp_move_id: str) -> erp_gateway_service_pb2.ExportJournalResponse:
    currency = journal.currency_code
    return erp_gateway_service_pb2.ExportJournalResponse(
        lines=[
            journal_pb2.JournalLine(
                role=line.role,
                charge_offer_code=line.charge_offer_code,
                account=line.account,
                debit=to_money(line.debit, currency),
                credit=to_money(line.credit, currency),
            )
            for line in journal.lines
        ],
        debit_total=to_money(journal.debit_total, currency),
        credit_total=to_money(journal.credit_total, currency),
        csv=journal.to_csv(),
        json=journal.to_json(),
        erp_move_id=erp_move_id,
    )


def time_from_pb(ts: Timestamp, field: str) -> datetime:
    if not (ts.seconds or ts.nanos):
        raise InvalidArgument(field, "is required")
    return ts.ToDatetime(tzinfo=UTC)
