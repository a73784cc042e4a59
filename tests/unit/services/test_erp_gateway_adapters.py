"""The ERP gateway's pure adapters and wiring."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

import pytest
from evolutivo.customer.v1 import events_pb2 as customer_events
from evolutivo.erp_gateway.v1 import sync_state_pb2
from evolutivo_erp_gateway.adapters import events, proto
from evolutivo_erp_gateway.domain.model import EntityType, SyncState, SyncStatus
from evolutivo_erp_gateway.entrypoints.app import definition
from evolutivo_erp_gateway.entrypoints.consumers import subscriptions
from evolutivo_erp_gateway.settings import ErpGatewaySettings
from evolutivo_runtime.errors import InvalidArgument

NOW = datetime(2031, 5, 17, 9, 30, 0, 42, tzinfo=UTC)
ENTITY = uuid.UUID("8f0c6c1e-5d55-4c4c-9d3b-1f7f1f1f1f1f")

PAIRS = [
    (sync_state_pb2.ENTITY_TYPE_CUSTOMER, EntityType.CUSTOMER),
    (sync_state_pb2.ENTITY_TYPE_INVOICE, EntityType.INVOICE),
    (sync_state_pb2.ENTITY_TYPE_CREDIT_NOTE, EntityType.CREDIT_NOTE),
    (sync_state_pb2.ENTITY_TYPE_PAYMENT, EntityType.PAYMENT),
    (sync_state_pb2.ENTITY_TYPE_PAYMENT_REVERSAL, EntityType.PAYMENT_REVERSAL),
    (sync_state_pb2.ENTITY_TYPE_WRITE_OFF, EntityType.WRITE_OFF),
    (sync_state_pb2.ENTITY_TYPE_COLLECTIONS_REFERRAL, EntityType.REFERRAL),
    (sync_state_pb2.ENTITY_TYPE_PAYMENT_ALLOCATION, EntityType.PAYMENT_ALLOCATION),
    (sync_state_pb2.ENTITY_TYPE_CREDIT_NOTE_ALLOCATION, EntityType.CREDIT_NOTE_ALLOCATION),
]


def test_every_entity_type_has_its_proto_value() -> None:
    assert {entity_type for _, entity_type in PAIRS} == set(EntityType)


@pytest.mark.parametrize(("pb_type", "entity_type"), PAIRS)
def test_entity_type_both_ways(pb_type: int, entity_type: EntityType) -> None:
    assert proto.entity_type_from_pb(pb_type) is entity_type  # type: ignore[arg-type]
    state = SyncState(entity_type, ENTITY, SyncStatus.PENDING, "", NOW)
    assert proto.state_to_pb(state).entity_type == pb_type


def test_unspecified_entity_type_names_the_field() -> None:
    with pytest.raises(InvalidArgument) as refused:
        proto.entity_type_from_pb(sync_state_pb2.ENTITY_TYPE_UNSPECIFIED)
    assert refused.value.field == "entity_type"


def test_unknown_entity_type_names_the_field() -> None:
    with pytest.raises(InvalidArgument) as refused:
        proto.entity_type_from_pb(42)  # type: ignore[arg-type]
    assert refused.value.field == "entity_type"


@pytest.mark.parametrize(
    ("status", "erp_id", "pb_status"),
    [
        (SyncStatus.PENDING, "", sync_state_pb2.SYNC_STATUS_PENDING),
        (SyncStatus.SYNCED, "C-1001", sync_state_pb2.SYNC_STATUS_SYNCED),
        (SyncStatus.FAILED, "", sync_state_pb2.SYNC_STATUS_FAILED),
    ],
)
def test_state_to_pb(status: SyncStatus, erp_id: str, pb_status: int) -> None:
    pb = proto.state_to_pb(SyncState(EntityType.CUSTOMER, ENTITY, status, erp_id, NOW))
    assert (pb.entity_id, pb.status, pb.erp_id) == (str(ENTITY), pb_status, erp_id)
    assert pb.update_time.ToDatetime(tzinfo=UTC) == NOW


def test_the_gateway_publishes_no_events_yet() -> None:
    with pytest.raises(TypeError):
        events.encode(object())


def test_consumes_customers_bills_and_payments_with_its_own_durable() -> None:
    subs = {s.stream: s for s in subscriptions()}
    assert set(subs) == {"EVOLUTIVO_CUSTOMER", "EVOLUTIVO_BILLING", "EVOLUTIVO_BALANCE"}
    assert {s.durable for s in subs.values()} == {"erp_gateway"}
    sub = subs["EVOLUTIVO_CUSTOMER"]
    assert sub.subjects == [
        "evolutivo.customer.v1.account.created",
        "evolutivo.customer.v1.account.updated",
        "evolutivo.customer.v1.account.personal_data_erased",
        "evolutivo.customer.v1.contact.changed",
    ]
    assert "evolutivo.billing.v1.collections_case.referred" in subs["EVOLUTIVO_BILLING"].subjects
    assert sub.handlers["evolutivo.customer.v1.AccountCreated"].message_type is customer_events.AccountCreated


def test_definition_and_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ERP_GATEWAY_GRPC_PORT", "50055")
    d = definition()
    assert d.name == "erp_gateway"
    assert isinstance(d.settings, ErpGatewaySettings)
    assert d.settings.grpc_port == 50055
    assert [p.name for p in (d.migrations_dir / "versions").glob("0001_*.py")] == ["0001_sync_states.py"]
