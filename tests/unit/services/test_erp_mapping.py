"""Connections and their mappings, retry policy, credit-note taxes, webhook signatures and
Tryton's JSON: the pure parts of the ERP gateway."""

from __future__ import annotations

import datetime as dt
import json
import random
import uuid
from decimal import Decimal

import pytest
from evolutivo.billing.v1 import bill_pb2, credit_note_pb2
from evolutivo.erp_gateway.v1 import connection_pb2
from evolutivo_erp_gateway.adapters import proto
from evolutivo_erp_gateway.adapters.tryton import _credit_note_taxes, _decode, _encode
from evolutivo_erp_gateway.adapters.webhook import sign, verify
from evolutivo_erp_gateway.domain.connections import Connection, ConnectionType, Mapping
from evolutivo_erp_gateway.domain.jobs import RetryPolicy
from evolutivo_erp_gateway.domain.model import EntityType
from evolutivo_runtime.errors import InvalidArgument
from evolutivo_runtime.money import to_money

NOW = dt.datetime(2031, 5, 17, 9, 30, tzinfo=dt.UTC)


def connection(**changes: object) -> Connection:
    values: dict[str, object] = {
        "connection_id": uuid.uuid4(),
        "display_name": "Tryton production",
        "type": ConnectionType.TRYTON,
        "endpoint_url": "http://erp.example:8000/prod/",
        "database": "",
        "username": "gateway",
        "mapping": Mapping(accounts={"receivable": "39", "revenue": "99", "revenue:TV": "100"}),
        "enabled": True,
        "import_payments": False,
        "has_credentials": True,
        "create_time": NOW,
        "update_time": NOW,
    }
    values.update(changes)
    return Connection(**values)  # type: ignore[arg-type]


def test_a_valid_connection_passes() -> None:
    connection().validate()
    connection(type=ConnectionType.GL_FILE_EXPORT, endpoint_url="", username="").validate()
    connection(type=ConnectionType.ODOO, endpoint_url="https://odoo.example", database="prod").validate()
    connection(type=ConnectionType.WEBHOOK, endpoint_url="https://hooks.example/erp", username="").validate()


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"display_name": ""}, "connection.display_name"),
        ({"display_name": "x" * 201}, "connection.display_name"),
        ({"endpoint_url": "ftp://erp.example/prod/"}, "connection.endpoint_url"),
        ({"endpoint_url": "http://erp.example:8000/"}, "connection.endpoint_url"),
        ({"username": ""}, "connection.username"),
        ({"type": ConnectionType.ODOO, "endpoint_url": "https://odoo.example"}, "connection.database"),
        ({"type": ConnectionType.WEBHOOK, "import_payments": True}, "connection.import_payments"),
        ({"mapping": Mapping(accounts={"bank": "1"})}, "connection.mapping.accounts"),
        ({"mapping": Mapping(journals={"sales": "1"})}, "connection.mapping.journals"),
        ({"mapping": Mapping(taxes={"standard": ""})}, "connection.mapping.taxes"),
    ],
)
def test_a_broken_rule_names_the_field(changes: dict[str, object], field: str) -> None:
    with pytest.raises(InvalidArgument) as refused:
        connection(**changes).validate()
    assert refused.value.field == field


def test_revenue_is_per_offer_when_mapped_and_general_otherwise() -> None:
    mapping = connection().mapping
    assert mapping.revenue_account("TV") == "100"
    assert mapping.revenue_account("MOBILE") == "99"
    assert Mapping().revenue_account("TV") == ""


def test_mapping_json_round_trip_and_proto() -> None:
    mapping = Mapping(customers={"a": "1"}, products={"TV": "7"}, taxes={"standard": "1"}, journals={"cash": "3"})
    assert Mapping.from_json(json.loads(json.dumps(mapping.to_json()))) == mapping
    assert proto.mapping_from_pb(proto.mapping_to_pb(mapping)) == mapping


def test_which_connections_take_records() -> None:
    # Referrals go only to the connections marked for them (test_erp_referrals.py).
    for entity in set(EntityType) - {EntityType.REFERRAL}:
        assert connection().takes(entity)
        assert connection(type=ConnectionType.WEBHOOK).takes(entity)
        assert connection(type=ConnectionType.ODOO).takes(entity)
        assert not connection(type=ConnectionType.GL_FILE_EXPORT).takes(entity)


def test_a_read_connection_never_carries_its_secret() -> None:
    pb = proto.connection_to_pb(connection())
    assert pb.has_credentials
    assert not any(field.name in ("secret", "password") for field in connection_pb2.Connection.DESCRIPTOR.fields)


@pytest.mark.parametrize(
    ("paths", "field"), [([], "update_mask"), (["type"], "update_mask"), (["etag"], "update_mask")]
)
def test_update_mask_names_updatable_fields_only(paths: list[str], field: str) -> None:
    with pytest.raises(InvalidArgument) as refused:
        proto.connection_changes(connection_pb2.Connection(), paths)
    assert refused.value.field == field


def test_backoff_grows_exponentially_with_jitter_up_to_a_cap() -> None:
    policy = RetryPolicy()
    rng = random.Random(7)
    for attempts in range(1, 30):
        delay = policy.delay(attempts, rng)
        full = min(policy.base * 2 ** (attempts - 1), policy.cap)
        assert full / 2 <= delay <= full
    assert not policy.exhausted(policy.max_attempts - 1)
    assert policy.exhausted(policy.max_attempts)


def test_the_default_attempts_outlast_an_erp_down_for_an_hour() -> None:
    policy = RetryPolicy()
    # The least the waits before a job goes DEAD can add up to (every jitter at its minimum).
    least = sum(
        (min(policy.base * 2 ** (n - 1), policy.cap) / 2 for n in range(1, policy.max_attempts)), dt.timedelta(0)
    )
    assert least > dt.timedelta(hours=1)


def _money(text: str) -> object:
    return to_money(Decimal(text), "EUR")


def test_credit_note_taxes_use_the_bills_rates_and_add_up_to_its_tax_total() -> None:
    bill = bill_pb2.Bill(
        taxes=[
            bill_pb2.BillTax(tax_code="standard", rate="0.21"),
            bill_pb2.BillTax(tax_code="reduced", rate="0.10"),
        ]
    )
    note = credit_note_pb2.CreditNote(
        lines=[
            credit_note_pb2.CreditNoteLine(tax_code="standard", amount=_money("0.50")),  # type: ignore[arg-type]
            credit_note_pb2.CreditNoteLine(tax_code="reduced", amount=_money("0.05")),  # type: ignore[arg-type]
        ],
        tax_total=_money("0.11"),  # type: ignore[arg-type]
    )
    taxes = _credit_note_taxes(note, bill)
    assert taxes == [("reduced", Decimal("0.05"), Decimal("0.01")), ("standard", Decimal("0.50"), Decimal("0.10"))]
    assert sum(t for _, _, t in taxes) == Decimal("0.11")


def test_webhook_signature_verifies_and_refuses_tampering_and_replays() -> None:
    body = b'{"event":"invoice.posted"}'
    header = sign("s3cret", int(NOW.timestamp()), body)
    assert verify("s3cret", header, body, NOW)
    assert not verify("s3cret", header, body + b" ", NOW)
    assert not verify("other", header, body, NOW)
    assert not verify("s3cret", header, body, NOW + dt.timedelta(minutes=6))
    assert not verify("s3cret", "garbage", body, NOW)


def test_tryton_json_round_trip() -> None:
    values = [Decimal("12.10"), dt.date(2031, 5, 1), dt.datetime(2031, 5, 1, 9, 30, 1, 5)]
    encoded = json.dumps(values, default=_encode)
    assert json.loads(encoded, object_hook=_decode) == values
    assert '"__class__": "Decimal"' in encoded
