"""Bills on the wire: charging's RatedCharge read into a charge, bills and items to protobuf (lines
with or without their charge ids), BillIssued without charge ids, and the page tokens."""

from __future__ import annotations

import uuid
from datetime import UTC, date, datetime
from decimal import Decimal

import pytest
from evolutivo.billing.v1 import bill_pb2, events_pb2
from evolutivo.charging.v1 import usage_pb2
from evolutivo_billing.adapters import bills_proto, events
from evolutivo_billing.domain.bills import (
    Bill,
    BillItem,
    BillListPosition,
    BillNumber,
    Charge,
    ItemListPosition,
    Period,
    TaxRates,
)
from evolutivo_billing.domain.cycles import BillCycle
from evolutivo_billing.domain.model import BillingProfile, BillUnit
from evolutivo_runtime.errors import InvalidArgument
from evolutivo_runtime.money import from_money, to_money
from evolutivo_runtime.pagination import encode_keyset
from evolutivo_runtime.timestamps import to_timestamp

NOW = datetime(2031, 6, 15, 1, 0, tzinfo=UTC)
ACCOUNT = uuid.uuid4()


def rated(**overrides: object) -> usage_pb2.RatedCharge:
    fields: dict[str, object] = {
        "charge_id": str(uuid.uuid4()),
        "account_id": str(ACCOUNT),
        "kind": usage_pb2.CHARGE_KIND_USAGE,
        "event_id": "evt-1",
        "purchase_id": str(uuid.uuid4()),
        "charge_offer_code": "api_pro",
        "charge_offer_version": 3,
        "charge_code": "api_calls",
        "tax_code": "reduced",
        "quantity": "1500",
        "amount": to_money(Decimal("0.75"), "EUR"),
        "unrounded_amount": "0.75",
        "event_time": to_timestamp(datetime(2031, 5, 20, 8, tzinfo=UTC)),
        "bill_cycle_id": str(uuid.uuid4()),
        "late": True,
    }
    fields.update(overrides)
    return usage_pb2.RatedCharge(**fields)  # type: ignore[arg-type]


def test_a_rated_charge_becomes_a_charge() -> None:
    pb = rated()
    charge = bills_proto.charge_from_pb(pb, "EUR")
    assert charge == Charge(
        charge_id=uuid.UUID(pb.charge_id),
        account_id=ACCOUNT,
        kind="usage",
        event_id="evt-1",
        charge_offer_code="api_pro",
        charge_offer_version=3,
        charge_code="api_calls",
        tax_code="reduced",
        quantity=Decimal(1500),
        amount=Decimal("0.75"),
        unrounded_amount=Decimal("0.75"),
        currency_code="EUR",
        event_time=datetime(2031, 5, 20, 8, tzinfo=UTC),
        bill_cycle_id=uuid.UUID(pb.bill_cycle_id),
        late=True,
    )
    fee = bills_proto.charge_from_pb(rated(kind=usage_pb2.CHARGE_KIND_RECURRING, event_id="", bill_cycle_id=""), "EUR")
    assert (fee.kind, fee.event_id, fee.bill_cycle_id) == ("recurring", "", None)


@pytest.mark.parametrize(
    "broken",
    [
        rated(amount=None),
        rated(event_time=None),
        rated(amount=to_money(Decimal(1), "USD")),
        rated(quantity="lots"),
        rated(quantity="NaN"),
        rated(charge_id="nope"),
        rated(account_id=""),
    ],
)
def test_a_broken_charge_is_a_broken_event(broken: usage_pb2.RatedCharge) -> None:
    with pytest.raises(ValueError):
        bills_proto.charge_from_pb(broken, "EUR")


def _bill() -> tuple[Bill, BillItem]:
    unit = BillUnit.open(ACCOUNT, "EUR", "Europe/Madrid", BillingProfile(15), NOW)
    cycle = BillCycle(
        bill_cycle_id=uuid.uuid4(),
        bill_unit_id=unit.bill_unit_id,
        account_id=ACCOUNT,
        sequence=1,
        start_time=datetime(2031, 5, 14, 22, tzinfo=UTC),
        end_time=datetime(2031, 6, 14, 22, tzinfo=UTC),
        start_date=date(2031, 5, 15),
        end_date=date(2031, 6, 15),
        time_zone="Europe/Madrid",
    )
    charge = bills_proto.charge_from_pb(rated(tax_code="standard"), "EUR")
    item = BillItem.place(charge, unit, cycle, Period.of_cycle(cycle), NOW)
    bill = Bill.for_cycle(unit, cycle, unit.profile, [item], TaxRates({"standard": Decimal("0.21")}), NOW)
    bill.issue(BillNumber("F-2031-000001", "F-2031", 1), NOW)
    return bill, item


def test_a_bill_to_protobuf_with_and_without_charge_ids() -> None:
    bill, item = _bill()
    pb = bills_proto.bill_to_pb(bill)
    assert (pb.bill_id, pb.status, pb.bill_number, pb.currency_code, pb.suppressed) == (
        str(bill.bill_id),
        bill_pb2.BILL_STATUS_ISSUED,
        "F-2031-000001",
        "EUR",
        False,
    )
    assert (pb.issue_date.year, pb.issue_date.month, pb.issue_date.day) == (2031, 6, 15)
    assert (pb.due_date.month, pb.due_date.day) == (7, 15)
    (line,) = pb.lines
    assert (line.line_number, line.tax_code, line.quantity, line.charge_count) == (1, "standard", "1500", 1)
    assert list(line.charge_ids) == [str(item.charge_id)]
    assert from_money(line.amount) == Decimal("0.75")
    (tax,) = pb.taxes
    assert (tax.tax_code, tax.rate, from_money(tax.tax_amount)) == ("standard", "0.21", Decimal("0.16"))
    assert (from_money(pb.subtotal), from_money(pb.tax_total), from_money(pb.total)) == (
        Decimal("0.75"),
        Decimal("0.16"),
        Decimal("0.91"),
    )
    listed = bills_proto.bill_to_pb(bill, with_charge_ids=False)
    assert list(listed.lines[0].charge_ids) == [] and listed.lines[0].charge_count == 1


def test_bill_issued_carries_the_bill_without_charge_ids() -> None:
    bill, _ = _bill()
    (event,) = bill.events
    subject, message = events.encode(event)
    assert subject == "evolutivo.billing.v1.bill.issued"
    assert isinstance(message, events_pb2.BillIssued)
    assert message.bill == bills_proto.bill_to_pb(bill, with_charge_ids=False)


def test_an_item_to_protobuf() -> None:
    _, item = _bill()
    pb = bills_proto.item_to_pb(item)
    assert (pb.charge_id, pb.kind, pb.tax_code, pb.quantity, pb.late, pb.bill_id) == (
        str(item.charge_id),
        "usage",
        "standard",
        "1500",
        True,
        "",
    )
    assert pb.rated_bill_cycle_id == str(item.charge.bill_cycle_id)
    assert (pb.period_start_date.day, pb.period_end_date.day) == (15, 15)


def test_page_tokens_round_trip_and_belong_to_their_account() -> None:
    bills_at = BillListPosition(date(2031, 6, 15), NOW, uuid.uuid4())
    token = bills_proto.bills_page_token(bills_at, ACCOUNT)
    assert bills_proto.bills_before_from_token(token, ACCOUNT) == bills_at
    assert bills_proto.bills_before_from_token("", ACCOUNT) is None
    items_at = ItemListPosition(NOW, uuid.uuid4())
    assert bills_proto.items_after_from_token(bills_proto.items_page_token(items_at, ACCOUNT), ACCOUNT) == items_at
    for bad in (
        lambda: bills_proto.bills_before_from_token(token, uuid.uuid4()),
        lambda: bills_proto.bills_before_from_token(encode_keyset("x", "y", "z", str(ACCOUNT)), ACCOUNT),
        lambda: bills_proto.bills_before_from_token(
            encode_keyset("2031-06-15", "2031-06-15T01:00:00", str(uuid.uuid4()), str(ACCOUNT)), ACCOUNT
        ),
        lambda: bills_proto.items_after_from_token(token, ACCOUNT),
        lambda: bills_proto.items_after_from_token(encode_keyset("then", "x", str(ACCOUNT)), ACCOUNT),
    ):
        with pytest.raises(InvalidArgument) as refused:
            bad()
        assert refused.value.field == "page_token"
