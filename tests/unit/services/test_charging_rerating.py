"""Rerating, pure: a cycle's usage priced again with the current catalog and purchases gives
reversing and new charges for the differences only; with an unchanged catalog nothing; the sum of
the original, reversing and new charges is what rating from scratch gives; credit limits refuse
usage in a group over its limit unless the charge allows overage."""

from __future__ import annotations

import uuid
from collections import defaultdict
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from decimal import Decimal

from evolutivo_charging.domain.catalog import (
    Charge,
    ChargeOffer,
    Flat,
    Graduated,
    OfferStatus,
    Package,
    PerUnit,
    PriceModel,
    Tier,
    Volume,
)
from evolutivo_charging.domain.model import ChargingAccount, ChargingAccountStatus
from evolutivo_charging.domain.rating import CounterKey, NotRated, Plan, plan, price
from evolutivo_charging.domain.rerating import RatedUsage, rerate_cycle
from evolutivo_charging.domain.usage import (
    BillCycle,
    BillCycleStatus,
    ChargeKind,
    CreditState,
    Purchase,
    RatedCharge,
    Reason,
    UsageEvent,
    UsageStatus,
    exceeded_group,
)
from hypothesis import given, settings
from hypothesis import strategies as st

T0 = datetime(2031, 5, 1, tzinfo=UTC)
NOW = datetime(2031, 5, 20, tzinfo=UTC)
ACCOUNT = uuid.UUID("00000000-0000-4000-8000-000000000001")
PURCHASE = uuid.UUID("00000000-0000-4000-8000-0000000000b1")
OTHER_PURCHASE = uuid.UUID("00000000-0000-4000-8000-0000000000b2")
MAY = uuid.UUID("00000000-0000-4000-8000-00000000c005")
JUNE = uuid.UUID("00000000-0000-4000-8000-00000000c006")
RUN = uuid.UUID("00000000-0000-4000-8000-0000000000e1")

GRADUATED = Graduated(
    (
        Tier(Decimal(100), Decimal(0)),
        Tier(Decimal(1000), Decimal("0.0150")),
        Tier(None, Decimal("0.0100"), Decimal("2.50")),
    )
)
CHEAPER = Graduated(
    (
        Tier(Decimal(200), Decimal(0)),
        Tier(Decimal(1000), Decimal("0.0125")),
        Tier(None, Decimal("0.0075"), Decimal("1.25")),
    )
)
MODELS: list[PriceModel] = [
    CHEAPER,
    PerUnit(Decimal("0.0133")),
    Volume((Tier(Decimal(500), Decimal("0.02")), Tier(None, Decimal("0.011")))),
    Package(Decimal(50), Decimal("0.35"), Decimal(10)),
    Flat(Decimal("0.07")),
    GRADUATED,
]


def account() -> ChargingAccount:
    return ChargingAccount(ACCOUNT, "EUR", "Europe/Madrid", ChargingAccountStatus.ACTIVE, T0)


def api(model: PriceModel, **fields: object) -> Charge:
    return Charge("api_calls", "API calls", model, event_type="api.call", **fields)  # type: ignore[arg-type]


def offer(*charges: Charge, version: int = 1, code: str = "pro") -> ChargeOffer:
    return ChargeOffer(
        charge_offer_id=uuid.uuid4(),
        code=code,
        version=version,
        name="Pro",
        description="",
        currency_code="EUR",
        valid_from=T0 - timedelta(days=60),
        valid_to=None,
        status=OfferStatus.ACTIVE,
        charges=charges,
        create_time=T0,
        activate_time=T0,
    )


def purchase(code: str = "pro", purchase_id: uuid.UUID = PURCHASE, end: datetime | None = None) -> Purchase:
    return Purchase(purchase_id, ACCOUNT, None, code, 1, Decimal(1), T0 - timedelta(days=30), end, None)


def cycle(cycle_id: uuid.UUID = MAY, status: BillCycleStatus = BillCycleStatus.OPEN, months: int = 0) -> BillCycle:
    start = T0 + timedelta(days=31 * months)
    return BillCycle(cycle_id, ACCOUNT, start, start + timedelta(days=31), status)


def event(n: int, quantity: Decimal, at: datetime | None = None) -> UsageEvent:
    return UsageEvent(f"e-{n}", ACCOUNT, "api.call", at or T0 + timedelta(hours=n + 1), quantity)


def rate_all(
    events: list[UsageEvent], versions: dict[str, list[ChargeOffer]], purchases: list[Purchase], cycles: list[BillCycle]
) -> dict[str, tuple[RatedCharge, ...]]:
    """What rating gives the events, in this order, from empty counters."""
    counters: dict[CounterKey, Decimal] = {}
    rated: dict[str, tuple[RatedCharge, ...]] = {}
    for e in events:
        planned = plan(e, account(), purchases, versions, cycles)
        assert isinstance(planned, Plan), planned
        rated[e.event_id] = price(planned, counters, T0)
    return rated


def rerate(
    events: list[UsageEvent],
    standing: dict[str, tuple[RatedCharge, ...]],
    versions: dict[str, list[ChargeOffer]],
    purchases: list[Purchase],
    cycles: list[BillCycle],
    in_scope: set[str] | None = None,
    code: str = "",
) -> list[RatedCharge]:
    usage = [RatedUsage(e, standing[e.event_id], in_scope is None or e.event_id in in_scope) for e in events]
    done = rerate_cycle(cycles[0], usage, account(), purchases, versions, cycles, code, RUN, NOW)
    return done.charges


def total(charges: object) -> Decimal:
    return sum((c.amount for c in charges), Decimal(0))  # type: ignore[attr-defined]


quantities = st.lists(
    st.decimals(min_value=Decimal("0.5"), max_value=Decimal(700), places=1, allow_nan=False, allow_infinity=False),
    min_size=1,
    max_size=12,
)


@settings(max_examples=60, deadline=None)
@given(quantities=quantities, model=st.sampled_from(MODELS))
def test_rerating_with_an_unchanged_catalog_makes_no_charges(quantities: list[Decimal], model: PriceModel) -> None:
    # Events rated in any order of their times: rerating replays the rating order, so nothing moves.
    events = [event(n, q) for n, q in enumerate(quantities)]
    events.reverse()
    versions = {"pro": [offer(api(model))]}
    original = rate_all(events, versions, [purchase()], [cycle()])
    assert rerate(events, original, versions, [purchase()], [cycle()]) == []


@settings(max_examples=60, deadline=None)
@given(quantities=quantities, old=st.sampled_from(MODELS), new=st.sampled_from(MODELS))
def test_original_reversals_and_new_charges_add_up_to_rating_from_scratch(
    quantities: list[Decimal], old: PriceModel, new: PriceModel
) -> None:
    events = [event(n, q) for n, q in enumerate(quantities)]
    before = {"pro": [offer(api(old))]}
    after = {"pro": [offer(api(new), version=2)]}
    original = rate_all(events, before, [purchase()], [cycle()])
    made = rerate(events, original, after, [purchase()], [cycle()])
    scratch = rate_all(events, after, [purchase()], [cycle()])
    assert total(c for cs in original.values() for c in cs) + total(made) == total(
        c for cs in scratch.values() for c in cs
    )
    # Event by event too: what stands after the run is what rating gives now.
    standing: dict[str, Decimal] = defaultdict(Decimal)
    for charges in original.values():
        for c in charges:
            standing[c.event_id] += c.amount
    for c in made:
        standing[c.event_id] += c.amount
    for e in events:
        assert standing[e.event_id] == total(scratch[e.event_id])
    # A second run over what now stands makes nothing.
    reversed_ids = {c.reverses_charge_id for c in made if c.reverses_charge_id}
    now_standing = {
        e.event_id: tuple(
            [c for c in original[e.event_id] if c.charge_id not in reversed_ids]
            + [c for c in made if c.event_id == e.event_id and c.kind is not ChargeKind.REVERSAL]
        )
        for e in events
    }
    assert rerate(events, now_standing, after, [purchase()], [cycle()]) == []


def test_a_changed_price_gives_a_reversal_naming_the_original_and_a_new_charge() -> None:
    events = [event(0, Decimal(150)), event(1, Decimal(300))]
    original = rate_all(events, {"pro": [offer(api(GRADUATED))]}, [purchase()], [cycle()])
    made = rerate(events, original, {"pro": [offer(api(CHEAPER), version=2)]}, [purchase()], [cycle()])
    (first,) = original["e-0"]
    (second,) = original["e-1"]
    # e-0: 150 units, 50 in the old paid band; the new free band covers them: reversed, nothing new.
    assert [(c.event_id, c.kind, c.amount, c.reverses_charge_id) for c in made[:1]] == [
        ("e-0", ChargeKind.REVERSAL, -first.amount, first.charge_id)
    ]
    reversal, new = made[1:]
    assert (reversal.kind, reversal.amount, reversal.reverses_charge_id) == (
        ChargeKind.REVERSAL,
        -second.amount,
        second.charge_id,
    )
    assert (new.kind, new.replaces_charge_id, new.charge_offer_version) == (ChargeKind.USAGE, second.charge_id, 2)
    assert new.amount == Decimal("3.13")  # 250 units past the 200 free at 0.0125, rounded
    assert {c.rerate_run_id for c in made} == {RUN}
    assert all(c.bill_cycle_id == MAY and not c.late and c.rate_time == NOW for c in made)


def test_only_events_in_scope_are_corrected_but_tiers_count_the_whole_cycle() -> None:
    events = [event(0, Decimal(150)), event(1, Decimal(300))]
    original = rate_all(events, {"pro": [offer(api(GRADUATED))]}, [purchase()], [cycle()])
    made = rerate(events, original, {"pro": [offer(api(CHEAPER), version=2)]}, [purchase()], [cycle()], {"e-1"})
    assert {c.event_id for c in made} == {"e-1"}
    # e-1 is priced after e-0's 150 units: units 151..450 under the new tiers.
    assert [c.amount for c in made if c.kind is ChargeKind.USAGE] == [Decimal("3.13")]


def test_an_ended_purchase_reverses_the_charges_after_its_end() -> None:
    events = [event(0, Decimal(2)), event(1, Decimal(2), at=T0 + timedelta(days=5))]
    versions = {"pro": [offer(api(Flat(Decimal("0.50"))))]}
    original = rate_all(events, versions, [purchase()], [cycle()])
    ended = [purchase(end=T0 + timedelta(days=2))]
    made = rerate(events, original, versions, ended, [cycle()])
    assert [(c.event_id, c.kind, c.amount) for c in made] == [("e-1", ChargeKind.REVERSAL, Decimal("-0.50"))]


def test_an_offer_code_limits_the_corrections_to_its_charges() -> None:
    events = [event(0, Decimal(10))]
    before = {"pro": [offer(api(PerUnit(Decimal("0.10"))))], "extra": [offer(api(Flat(Decimal(1))), code="extra")]}
    after = {
        "pro": [offer(api(PerUnit(Decimal("0.20"))), version=2)],
        "extra": [offer(api(Flat(Decimal(2))), code="extra", version=2)],
    }
    bought = [purchase(), purchase("extra", OTHER_PURCHASE)]
    original = rate_all(events, before, bought, [cycle()])
    made = rerate(events, original, after, bought, [cycle()], code="extra")
    assert [(c.charge_offer_code, c.kind, c.amount) for c in made] == [
        ("extra", ChargeKind.REVERSAL, Decimal(-1)),
        ("extra", ChargeKind.USAGE, Decimal(2)),
    ]


def test_corrections_of_a_closed_cycle_go_to_the_open_one_flagged_late() -> None:
    may, june = cycle(), cycle(JUNE, months=1)
    events = [event(0, Decimal(10))]
    original = rate_all(events, {"pro": [offer(api(PerUnit(Decimal("0.10"))))]}, [purchase()], [may, june])
    closed = [replace(may, status=BillCycleStatus.CLOSED), june]
    made = rerate(events, original, {"pro": [offer(api(PerUnit(Decimal("0.20"))), version=2)]}, [purchase()], closed)
    assert [(c.kind, c.amount, c.bill_cycle_id, c.late) for c in made] == [
        (ChargeKind.REVERSAL, Decimal("-1.00"), JUNE, True),
        (ChargeKind.USAGE, Decimal("2.00"), JUNE, True),
    ]


def test_a_tax_code_fix_is_a_correction_too() -> None:
    events = [event(0, Decimal(10))]
    original = rate_all(events, {"pro": [offer(api(PerUnit(Decimal("0.10"))))]}, [purchase()], [cycle()])
    fixed = {"pro": [offer(api(PerUnit(Decimal("0.10")), tax_code="reduced"), version=2)]}
    made = rerate(events, original, fixed, [purchase()], [cycle()])
    assert [(c.kind, c.amount, c.tax_code) for c in made] == [
        (ChargeKind.REVERSAL, Decimal("-1.00"), ""),
        (ChargeKind.USAGE, Decimal("1.00"), "reduced"),
    ]


# Credit limits.


def states(*groups: tuple[str, bool, bool]) -> list[CreditState]:
    return [CreditState(ACCOUNT, name, is_default, exceeded, 1) for name, is_default, exceeded in groups]


def test_an_empty_balance_group_is_the_default_group() -> None:
    credit = states(("default", True, True), ("project", False, False))
    assert exceeded_group(credit, "") == "default"
    assert exceeded_group(credit, "project") is None
    assert exceeded_group(states(("default", True, False), ("project", False, True)), "project") == "project"
    assert exceeded_group([], "") is None


def test_usage_landing_in_a_group_over_its_limit_is_rejected_unless_overage_is_allowed() -> None:
    e = event(0, Decimal(1))
    over = states(("default", True, True))
    refused = plan(e, account(), [purchase()], {"pro": [offer(api(Flat(Decimal(1))))]}, [cycle()], over)
    assert isinstance(refused, NotRated)
    assert (refused.status, refused.reason, refused.details) == (
        UsageStatus.REJECTED,
        Reason.CREDIT_LIMIT_EXCEEDED,
        {"balance_group": "default"},
    )
    allowed = plan(
        e, account(), [purchase()], {"pro": [offer(api(Flat(Decimal(1)), allow_overage=True))]}, [cycle()], over
    )
    assert isinstance(allowed, Plan)
    # A charge landing in another group is not held back by the default group's limit.
    elsewhere = plan(
        e, account(), [purchase()], {"pro": [offer(api(Flat(Decimal(1)), balance_group="project"))]}, [cycle()], over
    )
    assert isinstance(elsewhere, Plan)
