"""Charging's pure adapters and wiring."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

import pytest
from evolutivo.billing.v1 import events_pb2 as billing_events
from evolutivo.charging.v1 import charging_account_pb2
from evolutivo.customer.v1 import account_pb2
from evolutivo.customer.v1 import events_pb2 as customer_events
from evolutivo_charging.adapters import events, proto
from evolutivo_charging.domain.model import ChargingAccount, ChargingAccountStatus
from evolutivo_charging.entrypoints.app import definition
from evolutivo_charging.entrypoints.consumers import subscriptions
from evolutivo_charging.settings import ChargingSettings

NOW = datetime(2031, 5, 17, 9, 30, 0, 654321, tzinfo=UTC)
ACCOUNT = uuid.UUID("8f0c6c1e-5d55-4c4c-9d3b-1f7f1f1f1f1f")


@pytest.mark.parametrize(
    ("status", "pb_status"),
    [
        (ChargingAccountStatus.ACTIVE, charging_account_pb2.CHARGING_ACCOUNT_STATUS_ACTIVE),
        (ChargingAccountStatus.SUSPENDED, charging_account_pb2.CHARGING_ACCOUNT_STATUS_SUSPENDED),
        (ChargingAccountStatus.CLOSED, charging_account_pb2.CHARGING_ACCOUNT_STATUS_CLOSED),
    ],
)
def test_account_to_pb(status: ChargingAccountStatus, pb_status: int) -> None:
    pb = proto.account_to_pb(ChargingAccount(ACCOUNT, "EUR", "Europe/Madrid", status, NOW))
    assert (pb.account_id, pb.currency_code, pb.time_zone) == (str(ACCOUNT), "EUR", "Europe/Madrid")
    assert pb.status == pb_status
    assert pb.update_time.ToDatetime(tzinfo=UTC) == NOW


@pytest.mark.parametrize(
    ("customer", "expected"),
    [
        (account_pb2.ACCOUNT_STATUS_ACTIVE, ChargingAccountStatus.ACTIVE),
        (account_pb2.ACCOUNT_STATUS_SUSPENDED, ChargingAccountStatus.SUSPENDED),
        (account_pb2.ACCOUNT_STATUS_CLOSED, ChargingAccountStatus.CLOSED),
    ],
)
def test_status_from_customer(customer: int, expected: ChargingAccountStatus) -> None:
    assert proto.status_from_customer_pb(customer) is expected  # type: ignore[arg-type]


@pytest.mark.parametrize("customer", [account_pb2.ACCOUNT_STATUS_UNSPECIFIED, 99])
def test_a_status_without_counterpart_is_a_broken_event(customer: int) -> None:
    with pytest.raises(ValueError, match="status"):
        proto.status_from_customer_pb(customer)  # type: ignore[arg-type]


def test_charging_publishes_no_events_yet() -> None:
    with pytest.raises(TypeError):
        events.encode(object())


def test_consumes_account_and_purchase_events_from_customer_with_its_own_durable() -> None:
    sub, _ = subscriptions()
    assert (sub.durable, sub.stream) == ("charging", "EVOLUTIVO_CUSTOMER")
    assert sub.subjects == [
        "evolutivo.customer.v1.account.created",
        "evolutivo.customer.v1.account.updated",
        "evolutivo.customer.v1.account.status_changed",
        "evolutivo.customer.v1.purchase.created",
        "evolutivo.customer.v1.purchase.ended",
    ]
    assert sub.handlers["evolutivo.customer.v1.AccountCreated"].message_type is customer_events.AccountCreated
    assert (
        sub.handlers["evolutivo.customer.v1.AccountStatusChanged"].message_type is customer_events.AccountStatusChanged
    )


def test_consumes_cycle_events_from_billing_with_its_own_durable() -> None:
    _, sub = subscriptions()
    assert (sub.durable, sub.stream) == ("charging", "EVOLUTIVO_BILLING")
    assert sub.subjects == ["evolutivo.billing.v1.bill_cycle.opened", "evolutivo.billing.v1.bill_cycle.closed"]
    assert sub.handlers["evolutivo.billing.v1.BillCycleOpened"].message_type is billing_events.BillCycleOpened
    assert sub.handlers["evolutivo.billing.v1.BillCycleClosed"].message_type is billing_events.BillCycleClosed


def test_definition_and_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CHARGING_GRPC_PORT", "50052")
    d = definition()
    assert d.name == "charging"
    assert isinstance(d.settings, ChargingSettings)
    assert d.settings.grpc_port == 50052
    assert [p.name for p in (d.migrations_dir / "versions").glob("0001_*.py")] == ["0001_charging_accounts.py"]
