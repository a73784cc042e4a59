"""The ERP gateway's domain rules: a sync state per suite record."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta, timezone

import pytest
from evolutivo_erp_gateway.domain.model import (
    EntityType,
    InvalidSyncState,
    SyncState,
    SyncStatus,
    allocation_entity_id,
)

NOW = datetime(2031, 5, 17, 9, 30, tzinfo=UTC)
ENTITY = uuid.UUID("8f0c6c1e-5d55-4c4c-9d3b-1f7f1f1f1f1f")


def test_a_new_record_waits_pending_without_an_erp_id() -> None:
    state = SyncState.pending(EntityType.CUSTOMER, ENTITY, NOW)
    assert state == SyncState(EntityType.CUSTOMER, ENTITY, SyncStatus.PENDING, "", NOW)


def test_update_time_is_stored_in_utc() -> None:
    state = SyncState.pending(EntityType.INVOICE, ENTITY, NOW.astimezone(timezone(timedelta(hours=9))))
    assert state.update_time == NOW
    assert state.update_time.utcoffset() == timedelta(0)


def test_a_naive_instant_is_refused() -> None:
    with pytest.raises(InvalidSyncState, match="timezone-aware"):
        SyncState.pending(EntityType.CUSTOMER, ENTITY, datetime(2031, 5, 17))


def test_a_synced_record_has_the_erps_id() -> None:
    with pytest.raises(InvalidSyncState, match="ERP's id"):
        SyncState(EntityType.CUSTOMER, ENTITY, SyncStatus.SYNCED, "", NOW)
    assert SyncState(EntityType.CUSTOMER, ENTITY, SyncStatus.SYNCED, "C-1001", NOW).erp_id == "C-1001"


@pytest.mark.parametrize("status", [SyncStatus.PENDING, SyncStatus.FAILED])
def test_unsynced_records_may_lack_an_erp_id(status: SyncStatus) -> None:
    assert SyncState(EntityType.PAYMENT, ENTITY, status, "", NOW).status is status


def test_a_payments_later_allocations_have_stable_ids_of_their_own() -> None:
    assert allocation_entity_id(ENTITY, 2) == allocation_entity_id(ENTITY, 2)
    assert len({allocation_entity_id(ENTITY, n) for n in (2, 3, 4)} | {ENTITY}) == 4
    assert allocation_entity_id(ENTITY, 2) == uuid.uuid5(ENTITY, "payment_allocation:2")
