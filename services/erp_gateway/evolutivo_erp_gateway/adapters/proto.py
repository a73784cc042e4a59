"""Translation between the domain model and the evolutivo.erp_gateway.v1 messages."""

from __future__ import annotations

from evolutivo.erp_gateway.v1 import sync_state_pb2
from evolutivo_runtime.errors import InvalidArgument
from google.protobuf.timestamp_pb2 import Timestamp

from evolutivo_erp_gateway.domain.model import EntityType, SyncState, SyncStatus

_ENTITY_TYPES = {
    sync_state_pb2.ENTITY_TYPE_CUSTOMER: EntityType.CUSTOMER,
    sync_state_pb2.ENTITY_TYPE_INVOICE: EntityType.INVOICE,
    sync_state_pb2.ENTITY_TYPE_CREDIT_NOTE: EntityType.CREDIT_NOTE,
    sync_state_pb2.ENTITY_TYPE_PAYMENT: EntityType.PAYMENT,
}
_STATUSES = {
    SyncStatus.PENDING: sync_state_pb2.SYNC_STATUS_PENDING,
    SyncStatus.SYNCED: sync_state_pb2.SYNC_STATUS_SYNCED,
    SyncStatus.FAILED: sync_state_pb2.SYNC_STATUS_FAILED,
}


def entity_type_from_pb(value: sync_state_pb2.EntityType.ValueType, field: str = "entity_type") -> EntityType:
    if value == sync_state_pb2.ENTITY_TYPE_UNSPECIFIED:
        raise InvalidArgument(field, "is required")
    try:
        return _ENTITY_TYPES[value]
    except KeyError:
        raise InvalidArgument(field, "is not a known entity type") from None


def state_to_pb(state: SyncState) -> sync_state_pb2.SyncState:
    update_time = Timestamp()
    update_time.FromDatetime(state.update_time)
    return sync_state_pb2.SyncState(
        entity_type={v: k for k, v in _ENTITY_TYPES.items()}[state.entity_type],
        entity_id=str(state.entity_id),
        status=_STATUSES[state.status],
        erp_id=state.erp_id,
        update_time=update_time,
    )
