"""Rating, pure: which purchases and charges price a usage event, in which cycle, why an event is
not rated, price overrides, quantities read from properties, and usage counters that make a
cycle's charges add up to the price of its total however its events are batched or ordered."""

from __future__ import annotations

import hashlib
import uuid
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from evolutivo_charging.domain.catalog import (
    Charge,
    ChargeOffer,
    Flat,
    Graduated,
    OfferStatus,
    Package,
    Percentage,
    PerUnit,
    PropertyFilter,
    Tier,
    Volume,
)
from evolutivo_charging.domain.model import ChargingAccount, ChargingAccountStatus
from evolutivo_charging.domain.pricing import cumulative_cost, round_money
from evolutivo_charging.domain.rating import (
    CounterKey,
    NotRated,
    Plan,
    choose_cycle,
    effective_price,
    plan,
    price,
)
from evolutivo_charging.domain.usage import (
    BillCycle,
    BillCycleStatus,
    ChargeKind,
    Purchase,
    Reason,
    UsageEvent,
    UsageStatus,
)
from evolutivo_runtime.errors import InvalidArgument
from hypothesis import given, settings
from hypothesis import strategies as st

T0 = datetime(2031, 5, 1, tzinfo=UTC)
NOW = datetime(2031, 5, 17, 9, 30, tzinfo=UTC)
ACCOUNT = uuid.UUID("00000000-0000-4000-8000-000000000001")
SERVICE = uuid.UUID("00000000-0000-4000-8000-0000000000aa")
MAY = uuid.UUID("00000000-0000-4000-8000-00000000c005")
APRIL = uuid.UUID("00000000-0000-4000-8000-00000000c004")
JUNE = uuid.UUID("00000000-0000-4000-8000-00000000c006")

GRADUATED = Graduated(
    (
        Tier(Decimal(1000), Decimal(0)),
        Tier(Decimal(10000), Decimal("0.0015")),
        Tier(None, Decimal("0.001"), Decimal("2.50")),
    )
)
API = Charge("api_calls", "API calls", GRADUATED, event_type="api.call", tax_code="S", balance_group="usage")


def account(status: ChargingAccountStatus = ChargingAccountStatus.ACTIVE, currency: str = "EUR") -> ChargingAccount:
    return ChargingAccount(ACCOUNT, currency, "Europe/Madrid", status, T0)


def offer(
    *charges: Charge, version: int = 1, valid_from: datetime = T0, valid_to: datetime | None = None, code: str = "pro"
) -> ChargeOffer:
    return ChargeOffer(
        charge_offer_id=uuid.uuid4(),
        code=code,
        version=version,
        name="Pro",
        description="",
        currency_code="EUR",
        valid_from=valid_from,
        valid_to=valid_to,
        status=OfferStatus.ACTIVE,
        charges=charges or (API,),
        create_time=T0,
        activate_time=T0,
    )


def purchase(
    code: str = "pro",
    start: datetime = T0,
    end: datetime | None = None,
    overrides: tuple[tuple[str, Decimal], ...] = (),
    service_id: uuid.UUID | None = None,
    cancel: datetime | None = None,
    purchase_id: uuid.UUID | None = None,
) -> Purchase:
    return Purchase(
        purchase_id=purchase_id or uuid.UUID(int=1),
        account_id=ACCOUNT,
        service_id=service_id,
        charge_offer_code=code,
        charge_offer_version=1,
        quantity=Decimal(1),
        start_time=start,
        end_time=end,
        cancel_time=cancel,
        price_overrides=overrides,
    )


def cycle(
    bill_cycle_id: uuid.UUID = MAY,
    start: datetime = T0,
    days: int = 31,
    status: BillCycleStatus = BillCycleStatus.OPEN,
) -> BillCycle:
    return BillCycle(bill_cycle_id, ACCOUNT, start, start + timedelta(days=days), status)


def event(
    quantity: str = "1",
    at: datetime = NOW,
    event_type: str = "api.call",
    properties: dict[str, str] | None = None,
    event_id: str = "e-1",
    service_id: str = "",
) -> UsageEvent:
    return UsageEvent.validated("event", event_id, str(ACCOUNT), event_type, at, quantity, properties or {}, service_id)


def planned(e: UsageEvent, *offers: ChargeOffer, purchases: list[Purchase] | None = None, **kw: object) -> Plan:
    result = plan(
        e,
        account(),
        purchases if purchases is not None else [purchase()],
        {"pro": list(offers or (offer(),))},
        kw.get("cycles", [cycle()]),  # type: ignore[arg-type]
    )
    assert isinstance(result, Plan), result
    return result


def not_rated(e: UsageEvent, **kw: object) -> NotRated:
    result = plan(
        e,
        kw["account"] if "account" in kw else account(),  # type: ignore[arg-type]
        kw.get("purchases", [purchase()]),  # type: ignore[arg-type]
        kw.get("versions", {"pro": [offer()]}),  # type: ignore[arg-type]
        kw.get("cycles", [cycle()]),  # type: ignore[arg-type]
    )
    assert isinstance(result, NotRated), result
    return result


# Validation of events.


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"event_id": ""}, "event.event_id"),
        ({"event_id": "x" * 201}, "event.event_id"),
        ({"event_id": "bad\nid"}, "event.event_id"),
        ({"account_id": ""}, "event.account_id"),
        ({"account_id": "not-a-uuid"}, "event.account_id"),
        ({"event_type": ""}, "event.event_type"),
        ({"event_type": "API Call"}, "event.event_type"),
        ({"event_time": None}, "event.event_time"),
        ({"quantity": "NaN"}, "event.quantity"),
        ({"quantity": "-1"}, "event.quantity"),
        ({"quantity": "0"}, "event.quantity"),
        ({"quantity": "Infinity"}, "event.quantity"),
        ({"quantity": "1e18"}, "event.quantity"),
        ({"quantity": "0.0000000000001"}, "event.quantity"),
        ({"quantity": "ten"}, "event.quantity"),
        ({"service_id": "svc-1"}, "event.service_id"),
        ({"properties": {"": "x"}}, "event.properties"),
        ({"properties": {f"p{i}": "x" for i in range(65)}}, "event.properties"),
    ],
)
def test_invalid_events_are_refused_naming_the_field(changes: dict[str, object], field: str) -> None:
    given_: dict[str, object] = {
        "event_id": "e-1",
        "account_id": str(ACCOUNT),
        "event_type": "api.call",
        "event_time": NOW,
        "quantity": "1",
        "properties": {},
        "service_id": "",
    }
    given_.update(changes)
    with pytest.raises(InvalidArgument) as refused:
        UsageEvent.validated("event", **given_)  # type: ignore[arg-type]
    assert refused.value.field == field


def test_a_batch_names_the_event_by_its_index() -> None:
    with pytest.raises(InvalidArgument) as refused:
        UsageEvent.validated("events[3]", "e", str(ACCOUNT), "api.call", NOW, "-2", {}, "")
    assert refused.value.field == "events[3].quantity"


def test_the_fingerprint_is_of_the_canonical_payload() -> None:
    one = event("1")
    assert event("").quantity == Decimal(1)
    assert event("").fingerprint() == one.fingerprint() == event("1.000").fingerprint()
    assert event("2").fingerprint() != one.fingerprint()
    assert event(properties={"region": "eu"}).fingerprint() != one.fingerprint()
    assert event(at=NOW + timedelta(microseconds=1)).fingerprint() != one.fingerprint()
    # Upper-case UUIDs are the same account.
    upper = UsageEvent.validated("event", "e-1", str(ACCOUNT).upper(), "api.call", NOW, "1", {}, "")
    assert upper.fingerprint() == one.fingerprint()
    # The id is not part of the payload; the stored payload gives the event back.
    stored = event(properties={"b": "2", "a": "1"}, service_id=str(SERVICE))
    assert UsageEvent.from_payload("e-1", stored.payload()) == stored
    # The fingerprints stored since session 1 stay valid: the same text, the same hash.
    assert stored.payload_text() == (
        '{"account_id":"00000000-0000-4000-8000-000000000001","event_time":"2031-05-17T09:30:00+00:00",'
        '"event_type":"api.call","properties":{"a":"1","b":"2"},"quantity":"1",'
        '"service_id":"00000000-0000-4000-8000-0000000000aa"}'
    )
    assert stored.fingerprint() == hashlib.sha256(stored.payload_text().encode()).hexdigest()


# Why an event is not rated.


def test_an_unknown_account_is_unrated() -> None:
    assert not_rated(event(), account=None).reason == Reason.UNKNOWN_ACCOUNT


@pytest.mark.parametrize(
    ("status", "reason"),
    [
        (ChargingAccountStatus.SUSPENDED, Reason.ACCOUNT_SUSPENDED),
        (ChargingAccountStatus.CLOSED, Reason.ACCOUNT_CLOSED),
    ],
)
def test_a_suspended_or_closed_account_is_rejected(status: ChargingAccountStatus, reason: str) -> None:
    refused = not_rated(event(), account=account(status))
    assert (refused.status, refused.reason) == (UsageStatus.REJECTED, reason)


@pytest.mark.parametrize(
    "case",
    [
        {"purchases": []},
        {"purchases": [purchase(start=NOW + timedelta(seconds=1))]},
        {"purchases": [purchase(end=NOW)]},  # [start, end): ended at the event's time
        {"purchases": [purchase(cancel=T0)]},
        {"purchases": [purchase(service_id=uuid.uuid4())], "service": True},
        {"versions": {"pro": [offer(valid_from=NOW + timedelta(days=1))]}},
        {"versions": {"pro": []}},
        {"event_type": "sms.sent"},
        {"filtered": True},
    ],
)
def test_no_matching_purchase(case: dict[str, object]) -> None:
    kw: dict[str, object] = {k: v for k, v in case.items() if k in ("purchases", "versions")}
    e = event(
        event_type=str(case.get("event_type", "api.call")),
        service_id=str(SERVICE) if case.get("service") else "",
        properties={"region": "us"},
    )
    if case.get("filtered"):
        eu_only = Charge("eu", "EU", PerUnit(Decimal(1)), "api.call", (PropertyFilter("region", ("eu",)),))
        kw["versions"] = {"pro": [offer(eu_only)]}
    refused = not_rated(e, **kw)
    assert (refused.status, refused.reason) == (UsageStatus.UNRATED, Reason.NO_MATCHING_PURCHASE)


def test_no_open_cycle() -> None:
    assert not_rated(event(), cycles=[]).reason == Reason.NO_OPEN_CYCLE
    # After the open cycle: its cycle has not opened yet.
    assert not_rated(event(at=T0 + timedelta(days=31)), cycles=[cycle()]).reason == Reason.NO_OPEN_CYCLE
    # Only closed cycles known.
    assert not_rated(event(), cycles=[cycle(status=BillCycleStatus.CLOSED)]).reason == Reason.NO_OPEN_CYCLE


def test_the_purchase_is_checked_before_the_cycle() -> None:
    assert not_rated(event(), purchases=[], cycles=[]).reason == Reason.NO_MATCHING_PURCHASE


# Cycles.


def test_the_open_cycle_holding_the_event_takes_it() -> None:
    chosen = choose_cycle([cycle(APRIL, T0 - timedelta(days=30), 30, BillCycleStatus.CLOSED), cycle()], NOW)
    assert chosen is not None and chosen[0].bill_cycle_id == MAY and chosen[1] is False


def test_an_event_in_a_closed_cycle_goes_to_the_open_one_flagged_late() -> None:
    april = cycle(APRIL, T0 - timedelta(days=30), 30, BillCycleStatus.CLOSED)
    in_april = T0 - timedelta(days=3)
    result = planned(
        event(at=in_april),
        offer(valid_from=T0 - timedelta(days=60)),
        purchases=[purchase(start=T0 - timedelta(days=60))],
        cycles=[april, cycle()],
    )
    assert (result.cycle.bill_cycle_id, result.late) == (MAY, True)
    # Also before any cycle charging knows.
    assert choose_cycle([cycle()], T0 - timedelta(days=400)) == (cycle(), True)
    # Two open cycles (billing's close of May not applied yet): each holds its own events.
    june = cycle(JUNE, T0 + timedelta(days=31), 30)
    assert choose_cycle([cycle(), june], T0 + timedelta(days=32)) == (june, False)
    assert choose_cycle([cycle(), june], NOW) == (cycle(), False)


# Prices.


def test_the_version_in_force_at_the_event_prices_it() -> None:
    switch = NOW - timedelta(days=1)
    v1 = offer(Charge("api_calls", "API", PerUnit(Decimal("0.01")), "api.call"), valid_to=switch)
    v2 = offer(Charge("api_calls", "API", PerUnit(Decimal("0.02")), "api.call"), version=2, valid_from=switch)
    for at, version, amount in [(switch - timedelta(seconds=1), 1, "0.10"), (switch, 2, "0.20")]:
        p = planned(event("10", at=at), v1, v2)
        (charge,) = price(p, {}, NOW)
        assert (charge.charge_offer_version, charge.amount) == (version, Decimal(amount))


def test_a_charge_keeps_what_priced_it() -> None:
    p = planned(event("1500"))
    counters: dict[CounterKey, Decimal] = {}
    (charge,) = price(p, counters, NOW, new_id=lambda: uuid.UUID(int=7))
    assert charge.charge_id == uuid.UUID(int=7)
    assert charge.kind is ChargeKind.USAGE
    assert (charge.event_id, charge.account_id, charge.purchase_id) == ("e-1", ACCOUNT, uuid.UUID(int=1))
    assert (charge.charge_offer_code, charge.charge_offer_version, charge.charge_code) == ("pro", 1, "api_calls")
    assert (charge.tax_code, charge.balance_group, charge.currency_code) == ("S", "usage", "EUR")
    assert (charge.bill_cycle_id, charge.late, charge.event_time, charge.rate_time) == (MAY, False, NOW, NOW)
    assert charge.quantity == Decimal(1500)
    # 1000 free, 500 at 0.0015.
    assert (charge.amount, charge.unrounded_amount) == (Decimal("0.75"), Decimal("0.75"))
    assert [(line.tier, line.units) for line in charge.tiers] == [(0, Decimal(1000)), (1, Decimal(500))]
    assert counters == {(ACCOUNT, uuid.UUID(int=1), "api_calls", MAY): Decimal(1500)}


def test_graduated_tiers_count_the_cycles_usage() -> None:
    counters: dict[CounterKey, Decimal] = {}
    amounts = []
    for q in ["900", "200", "9000", "1"]:
        charges = price(planned(event(q)), counters, NOW)
        amounts.append(sum((c.amount for c in charges), Decimal(0)))
    # 900 free; 100 free + 100 x 0.0015; 8900 x 0.0015 (to 10000) + 100 over: 0.1 + 2.50 fee...
    assert amounts[0] == 0
    assert sum(amounts, Decimal(0)) == round_money(cumulative_cost(GRADUATED, Decimal(10101))[0], 2)


def test_a_free_allowance_gives_no_charge_but_counts() -> None:
    counters: dict[CounterKey, Decimal] = {}
    assert price(planned(event("999")), counters, NOW) == ()
    assert next(iter(counters.values())) == Decimal(999)
    (charge,) = price(planned(event("2")), counters, NOW)
    assert charge.unrounded_amount == Decimal("0.0015")
    assert charge.amount == Decimal("0.00")  # under half a cent: rounded cumulatively


def test_a_cumulative_counter_is_per_purchase_charge_and_cycle() -> None:
    two = [purchase(), purchase(purchase_id=uuid.UUID(int=2))]
    p = planned(event("5"), purchases=two)
    assert len(p.lines) == 2
    keys = p.counter_keys()
    assert keys == sorted(keys) and {k[1] for k in keys} == {uuid.UUID(int=1), uuid.UUID(int=2)}


def test_the_minor_unit_is_the_accounts_currency() -> None:
    per_unit = Charge("api_calls", "API", PerUnit(Decimal("0.4")), "api.call")
    yen = offer(per_unit)
    yen.currency_code = "JPY"
    result = plan(event("3"), account(currency="JPY"), [purchase()], {"pro": [yen]}, [cycle()])
    assert isinstance(result, Plan)
    (charge,) = price(result, {}, NOW)
    assert (charge.amount, charge.unrounded_amount, charge.currency_code) == (Decimal(1), Decimal("1.2"), "JPY")


def test_an_offer_in_another_currency_is_unrated() -> None:
    assert not_rated(event(), account=account(currency="USD")).reason == Reason.CURRENCY_MISMATCH


def test_flat_and_percentage_are_per_event() -> None:
    fee = Charge("fee", "Fee", Flat(Decimal("0.005")), "payment.captured")
    pct = Charge(
        "pct",
        "Card",
        Percentage("amount", Decimal("0.029"), Decimal("0.30"), Decimal("5"), Decimal("0.25")),
        "payment.captured",
    )
    amounts = []
    for value in ["1", "100", "1000"]:
        charges = price(
            planned(event(event_type="payment.captured", properties={"amount": value}), offer(fee, pct)), {}, NOW
        )
        amounts.append([c.amount for c in charges])
    # Flat 0.005 rounds half up to 0.01 on each event; 2.9% + 0.25, at least 0.30, at most 5.
    assert amounts == [
        [Decimal("0.01"), Decimal("0.30")],
        [Decimal("0.01"), Decimal("3.15")],
        [Decimal("0.01"), Decimal("5.00")],
    ]


def test_a_missing_amount_property_is_unrated() -> None:
    pct = Charge("pct", "Card", Percentage("amount", Decimal("0.029")), "payment.captured")
    for properties in [{}, {"amount": "-5"}, {"amount": "NaN"}]:
        e = event(event_type="payment.captured", properties=properties)
        assert not_rated(e, versions={"pro": [offer(pct)]}).reason == Reason.AMOUNT_PROPERTY_INVALID


def test_the_quantity_can_come_from_a_property() -> None:
    storage = Charge("storage", "Storage", PerUnit(Decimal("0.02")), "storage.used", quantity_property="gb_hours")
    e = event("1", event_type="storage.used", properties={"gb_hours": "120.5"})
    (charge,) = price(planned(e, offer(storage)), {}, NOW)
    assert (charge.quantity, charge.amount) == (Decimal("120.5"), Decimal("2.41"))
    for properties in [{}, {"gb_hours": "0"}, {"gb_hours": "-1"}, {"gb_hours": "lots"}]:
        e = event(event_type="storage.used", properties=properties)
        assert not_rated(e, versions={"pro": [offer(storage)]}).reason == Reason.QUANTITY_PROPERTY_INVALID


# Price overrides.


def test_overrides_replace_the_unit_price_the_amount_or_the_block_price() -> None:
    assert effective_price(PerUnit(Decimal(1)), Decimal("0.5")) == PerUnit(Decimal("0.5"))
    assert effective_price(Flat(Decimal(1)), Decimal("0.5")) == Flat(Decimal("0.5"))
    assert effective_price(GRADUATED, Decimal("0.001")) == PerUnit(Decimal("0.001"))
    assert effective_price(Volume(GRADUATED.tiers), Decimal("0.001")) == PerUnit(Decimal("0.001"))
    assert effective_price(Package(Decimal(100), Decimal(2), Decimal(10)), Decimal(1)) == Package(
        Decimal(100), Decimal(1), Decimal(10)
    )
    assert effective_price(Percentage("amount", Decimal("0.01")), Decimal(1)) is None
    assert effective_price(GRADUATED, None) is GRADUATED


def test_a_purchase_override_prices_its_events() -> None:
    p = planned(event("2000"), purchases=[purchase(overrides=(("api_calls", Decimal("0.001")),))])
    (charge,) = price(p, {}, NOW)
    assert (charge.amount, charge.tiers) == (Decimal("2.00"), ())


def test_an_override_of_a_percentage_is_unrated() -> None:
    pct = Charge("pct", "Card", Percentage("amount", Decimal("0.029")), "payment.captured")
    e = event(event_type="payment.captured", properties={"amount": "10"})
    refused = not_rated(e, versions={"pro": [offer(pct)]}, purchases=[purchase(overrides=(("pct", Decimal("0.01")),))])
    assert refused.reason == Reason.PRICE_OVERRIDE_UNSUPPORTED


# A cycle's charges add up to the price of its total.

VOLUME = Volume(
    (Tier(Decimal(100), Decimal("0.10")), Tier(Decimal(1000), Decimal("0.08")), Tier(None, Decimal("0.05")))
)
PACKAGE = Package(size=Decimal(100), price=Decimal("1.99"), free_units=Decimal(50))
quantities = st.lists(
    st.decimals(min_value=Decimal("0.001"), max_value=Decimal(3000), places=3, allow_nan=False, allow_infinity=False),
    min_size=1,
    max_size=30,
)


@pytest.mark.parametrize(
    "model",
    [GRADUATED, VOLUME, PerUnit(Decimal("0.0004")), PACKAGE],
    ids=["graduated", "volume", "unit", "package"],
)
@settings(max_examples=50, deadline=None)
@given(amounts=quantities, data=st.data())
def test_the_cycle_total_is_independent_of_order(model: object, amounts: list[Decimal], data: st.DataObject) -> None:
    charge = Charge("api_calls", "API", model, "api.call")  # type: ignore[arg-type]
    version = offer(charge)
    order = data.draw(st.permutations(amounts))
    totals = []
    for sequence in (amounts, order):
        counters: dict[CounterKey, Decimal] = {}
        charges = [
            c
            for i, q in enumerate(sequence)
            for c in price(planned(event(str(q), event_id=str(i)), version), counters, NOW)
        ]
        totals.append(sum((c.amount for c in charges), Decimal(0)))
    expected = round_money(cumulative_cost(model, sum(amounts, Decimal(0)))[0], 2)  # type: ignore[arg-type]
    assert totals == [expected, expected]
