"""Billing's pure adapters and wiring: protobuf translation, events, page tokens, subscriptions."""

from __future__ import annotations

import base64
import json
import uuid
from datetime import UTC, datetime

import pytest
from evolutivo.billing.v1 import bill_unit_pb2, events_pb2
from evolutivo.charging.v1 import events_pb2 as charging_events
from evolutivo.customer.v1 import account_pb2
from evolutivo.customer.v1 import events_pb2 as customer_events
from evolutivo_billing.adapters import events, proto
from evolutivo_billing.domain.model import BillingFrequency, BillingProfile, BillUnit, ListPosition
from evolutivo_billing.entrypoints.app import definition
from evolutivo_billing.entrypoints.consumers import subscriptions
from evolutivo_billing.settings import BillingSettings
from evolutivo_runtime.errors import InvalidArgument
from evolutivo_runtime.pagination import encode_token
from hypothesis import given
from hypothesis import strategies as st

NOW = datetime(2031, 5, 17, 9, 30, 0, 123456, tzinfo=UTC)
ACCOUNT = uuid.UUID("8f0c6c1e-5d55-4c4c-9d3b-1f7f1f1f1f1f")


def _unit() -> BillUnit:
    profile = BillingProfile(bill_cycle_day=31, frequency=BillingFrequency.SEMI_ANNUAL, payment_terms_days=15)
    return BillUnit.open(ACCOUNT, "EUR", "Europe/Madrid", profile, NOW)


def test_unit_to_pb() -> None:
    unit = _unit()
    pb = proto.unit_to_pb(unit)
    assert pb.bill_unit_id == str(unit.bill_unit_id)
    assert pb.account_id == str(ACCOUNT)
    assert (pb.currency_code, pb.time_zone) == ("EUR", "Europe/Madrid")
    assert (pb.bill_cycle_day, pb.payment_terms_days) == (31, 15)
    assert pb.frequency == bill_unit_pb2.BILLING_FREQUENCY_SEMI_ANNUAL
    assert pb.create_time.ToDatetime(tzinfo=UTC) == NOW


@pytest.mark.parametrize(
    ("customer", "expected"),
    [
        (account_pb2.BILLING_FREQUENCY_MONTHLY, BillingFrequency.MONTHLY),
        (account_pb2.BILLING_FREQUENCY_QUARTERLY, BillingFrequency.QUARTERLY),
        (account_pb2.BILLING_FREQUENCY_SEMI_ANNUAL, BillingFrequency.SEMI_ANNUAL),
        (account_pb2.BILLING_FREQUENCY_ANNUAL, BillingFrequency.ANNUAL),
        # Customer's own default when the frequency is left out.
        (account_pb2.BILLING_FREQUENCY_UNSPECIFIED, BillingFrequency.MONTHLY),
    ],
)
def test_profile_from_customer(customer: int, expected: BillingFrequency) -> None:
    pb = account_pb2.BillingProfile(bill_cycle_day=7, frequency=customer, payment_terms_days=20)  # type: ignore[arg-type]
    assert proto.profile_from_customer_pb(pb) == BillingProfile(7, expected, 20)


def test_unknown_customer_frequency_is_a_broken_event() -> None:
    with pytest.raises(ValueError, match="frequency"):
        proto.profile_from_customer_pb(account_pb2.BillingProfile(bill_cycle_day=7, frequency=99))  # type: ignore[arg-type]


def test_bill_unit_created_is_encoded_on_its_subject() -> None:
    unit = _unit()
    subject, message = events.encode(unit.events[0])
    assert subject == "evolutivo.billing.v1.bill_unit.created"
    assert isinstance(message, events_pb2.BillUnitCreated)
    assert message.bill_unit == proto.unit_to_pb(unit)


def test_an_unknown_event_has_no_encoding() -> None:
    with pytest.raises(TypeError):
        events.encode(object())


# Page tokens.

ids = st.uuids()
instants = st.datetimes(min_value=datetime(2000, 1, 1), max_value=datetime(2100, 1, 1), timezones=st.just(UTC))


@given(instants, ids, st.one_of(st.none(), ids))
def test_page_token_round_trip(instant: datetime, bill_unit_id: uuid.UUID, account_id: uuid.UUID | None) -> None:
    position = ListPosition(instant, bill_unit_id)
    assert proto.position_from_token(proto.page_token(position, account_id), account_id) == position


def test_empty_token_is_the_first_page() -> None:
    assert proto.position_from_token("", None) is None
    assert proto.position_from_token("", ACCOUNT) is None


def test_a_token_only_serves_the_filter_it_was_issued_for() -> None:
    token = proto.page_token(ListPosition(NOW, uuid.uuid4()), None)
    with pytest.raises(InvalidArgument) as refused:
        proto.position_from_token(token, ACCOUNT)
    assert refused.value.field == "page_token"
    other = proto.page_token(ListPosition(NOW, uuid.uuid4()), uuid.uuid4())
    with pytest.raises(InvalidArgument):
        proto.position_from_token(other, ACCOUNT)


def _raw(text: str) -> str:
    return base64.urlsafe_b64encode(text.encode()).decode()


@pytest.mark.parametrize(
    "token",
    [
        "abc",  # not base64
        _raw("not json"),
        _raw("[]"),
        _raw("{}"),
        _raw(json.dumps({"t": "yesterday", "id": str(uuid.uuid4()), "a": ""})),
        _raw(json.dumps({"t": NOW.isoformat(), "id": "not-a-uuid", "a": ""})),
        _raw(json.dumps({"t": "2031-05-17T09:30:00", "id": str(uuid.uuid4()), "a": ""})),  # naive
        _raw(json.dumps({"t": 5, "id": str(uuid.uuid4()), "a": ""})),
        encode_token("42"),
    ],
)
def test_a_forged_token_is_invalid_argument(token: str) -> None:
    with pytest.raises(InvalidArgument) as refused:
        proto.position_from_token(token, None)
    assert refused.value.field == "page_token"


# Wiring.


def test_consumes_account_events_from_customer_with_its_own_durable() -> None:
    sub = subscriptions()[0]
    assert sub.durable == "billing"
    assert sub.stream == "EVOLUTIVO_CUSTOMER"
    assert sub.subjects == [
        "evolutivo.customer.v1.account.created",
        "evolutivo.customer.v1.account.status_changed",
        "evolutivo.customer.v1.account.billing_profile_changed",
        # What bill documents and their delivery need: the name, the address, the billing contacts.
        "evolutivo.customer.v1.account.updated",
        "evolutivo.customer.v1.contact.changed",
        "evolutivo.customer.v1.account.personal_data_erased",
    ]
    handler = sub.handlers["evolutivo.customer.v1.AccountCreated"]
    assert handler.message_type is customer_events.AccountCreated
    assert (
        sub.handlers["evolutivo.customer.v1.AccountStatusChanged"].message_type is customer_events.AccountStatusChanged
    )
    assert (
        sub.handlers["evolutivo.customer.v1.BillingProfileChanged"].message_type
        is customer_events.BillingProfileChanged
    )


def test_consumes_charges_from_charging_with_its_own_durable() -> None:
    sub = subscriptions()[1]
    assert (sub.durable, sub.stream, sub.subjects) == (
        "billing",
        "EVOLUTIVO_CHARGING",
        ["evolutivo.charging.v1.charges.created"],
    )
    assert sub.handlers["evolutivo.charging.v1.ChargesCreated"].message_type is charging_events.ChargesCreated


def test_definition_and_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BILLING_GRPC_PORT", "50054")
    monkeypatch.setenv("BILLING_DATABASE_URL", "postgresql://u@h:5432/evolutivo_billing")
    d = definition()
    assert d.name == "billing"
    assert isinstance(d.settings, BillingSettings)
    assert d.settings.grpc_port == 50054
    assert d.settings.database_url.endswith("/evolutivo_billing")
    assert (d.migrations_dir / "env.py").is_file()
    assert sorted(p.name for p in (d.migrations_dir / "versions").glob("0001_*.py")) == ["0001_bill_units.py"]
