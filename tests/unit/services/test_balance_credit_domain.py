"""Balance's credit rules, pure: thresholds and limits cross once per crossing, upward and downward,
in a reader's order, with versions that grow by one; percentages of the limit in force, temporary
limits that stop applying when they expire, available credit; what SetCreditLimit accepts; the
credit events on the wire; and the amount rules of write-offs and refunds."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from evolutivo.balance.v1 import events_pb2
from evolutivo_balance.adapters import events, proto
from evolutivo_balance.domain.credit import (
    Amount,
    CreditPolicy,
    CreditState,
    Crossing,
    Direction,
    LimitCrossing,
    Threshold,
    ThresholdCrossing,
    ThresholdSpec,
    assess,
    available_credit,
    policy_paths,
    updated_policy,
)
from evolutivo_balance.domain.model import (
    BalanceGroup,
    CreditLimitExceeded,
    CreditLimitRestored,
    CreditThresholdCrossed,
    EntryType,
    SourceType,
    check_refund,
    refund_entry,
    write_off_entry,
)
from evolutivo_runtime.errors import FailedPrecondition, InvalidArgument
from evolutivo_runtime.money import from_money
from hypothesis import given, settings
from hypothesis import strategies as st

NOW = datetime(2031, 5, 17, 9, 30, tzinfo=UTC)
D = Decimal


def policy(limit: str | None = "100.00", *thresholds: Threshold, **kw: object) -> CreditPolicy:
    return CreditPolicy(credit_limit=D(limit) if limit is not None else None, thresholds=thresholds, **kw)  # type: ignore[arg-type]


def walk(p: CreditPolicy, balances: list[str], now: datetime = NOW) -> tuple[CreditState, list[Crossing]]:
    """Assesses the balances one after the other, as successive transactions would."""
    state, seen = CreditState(), list[Crossing]()
    for balance in balances:
        state, crossings = assess(p, state, D(balance), 2, now)
        seen += crossings
    return state, seen


def described(crossings: Sequence[Crossing]) -> list[str]:
    out = []
    for c in crossings:
        if isinstance(c, LimitCrossing):
            out.append(f"{'exceeded' if c.exceeded else 'restored'}#{c.version}")
        else:
            assert isinstance(c, ThresholdCrossing)
            out.append(f"{c.threshold.key} {c.direction.value} at {c.level}#{c.version}")
    return out


# Crossings.


def test_a_threshold_crosses_once_up_and_once_down() -> None:
    p = policy("100.00", Threshold(amount=D("50.00")))
    state, seen = walk(p, ["10", "49.99", "50.00", "60", "70", "55", "49.99", "20", "51"])
    assert described(seen) == [
        "amount:50 up at 50.00#1",
        "amount:50 down at 50.00#2",
        "amount:50 up at 50.00#3",
    ]
    assert state.reached == {"amount:50"} and state.threshold_version == 3


def test_the_limit_is_exceeded_above_it_and_restored_at_or_below_it_once_per_crossing() -> None:
    state, seen = walk(policy("100.00"), ["100.00", "100.01", "150", "120", "100.00", "99", "101"])
    assert described(seen) == ["exceeded#1", "restored#2", "exceeded#3"]
    assert state.exceeded and state.version == 3


def test_a_jump_over_several_thresholds_and_the_limit_comes_in_a_readers_order() -> None:
    p = policy("200.00", Threshold(percent=D(90)), Threshold(amount=D("50.00")), Threshold(percent=D("50")))
    _, up = walk(p, ["250"])
    assert described(up) == [
        "amount:50 up at 50.00#1",
        "percent:50 up at 100.00#2",
        "percent:90 up at 180.00#3",
        "exceeded#1",
    ]
    state, _ = walk(p, ["250"])
    down_state, down = assess(p, state, D(0), 2, NOW)
    assert described(down) == [
        "restored#2",
        "percent:90 down at 180.00#4",
        "percent:50 down at 100.00#5",
        "amount:50 down at 50.00#6",
    ]
    assert down_state == CreditState(False, frozenset(), 2, 6)


def test_a_group_that_owes_nothing_has_reached_no_threshold() -> None:
    """With a zero limit every percentage has a zero level: a zero or credit balance reaches none."""
    p = policy("0", Threshold(percent=D(80)))
    state, seen = walk(p, ["0", "-5"])
    assert seen == [] and state == CreditState()
    _, seen = walk(p, ["0.01"])
    assert described(seen) == ["percent:80 up at 0.00#1", "exceeded#1"]


def test_percent_levels_round_half_up_to_the_minor_unit() -> None:
    assert Threshold(percent=D("33.33")).level(D("100.05"), 2) == D("33.35")
    assert Threshold(percent=D("87.5")).level(D("1001"), 0) == D("876")
    assert Threshold(percent=D(80)).level(None, 2) is None
    assert Threshold(amount=D("7.50")).level(None, 2) == D("7.50")


def test_a_policy_change_crosses_at_the_same_balance() -> None:
    """Lowering the limit below the balance exceeds it; raising it (or removing it) restores."""
    state, _ = walk(policy("500.00", Threshold(percent=D(50))), ["200"])
    assert state == CreditState(False, frozenset(), 0, 0)
    lowered, seen = assess(policy("300.00", Threshold(percent=D(50))), state, D(200), 2, NOW)
    assert described(seen) == ["percent:50 up at 150.00#1"]
    lowered, seen = assess(policy("150.00", Threshold(percent=D(50))), lowered, D(200), 2, NOW)
    assert described(seen) == ["exceeded#1"]
    cleared, seen = assess(policy(None, Threshold(percent=D(50))), lowered, D(200), 2, NOW)
    assert described(seen) == ["restored#2", "percent:50 down at None#2"]
    assert seen[0] == LimitCrossing(False, None, 2)
    assert cleared == CreditState(False, frozenset(), 2, 2)


def test_a_removed_threshold_is_forgotten_without_an_event() -> None:
    state, _ = walk(policy("100.00", Threshold(amount=D(10))), ["20"])
    new_state, seen = assess(policy("100.00"), state, D(20), 2, NOW)
    assert seen == [] and new_state.reached == frozenset() and new_state.threshold_version == 1


def test_an_unchanged_assessment_changes_nothing() -> None:
    p = policy("100.00", Threshold(amount=D(10)))
    state, _ = walk(p, ["120"])
    assert assess(p, state, D("130"), 2, NOW) == (state, [])


balances = st.lists(st.decimals(min_value=-300, max_value=300, places=2, allow_nan=False), max_size=40)


@settings(max_examples=300, deadline=None)
@given(balances)
def test_crossings_alternate_and_the_state_is_what_the_balance_says(path: list[Decimal]) -> None:
    """Whatever the path, limit events alternate starting with exceeded, each threshold's events
    alternate starting with up, versions grow by one per event, and the end state is the state a
    fresh assessment of the last balance gives."""
    p = policy("150.00", Threshold(amount=D(50)), Threshold(percent=D(80)), Threshold(percent=D(100)))
    state, seen = walk(p, [str(b) for b in path])
    limits = [c for c in seen if isinstance(c, LimitCrossing)]
    assert [c.exceeded for c in limits] == [n % 2 == 0 for n in range(len(limits))]
    assert [c.version for c in limits] == list(range(1, len(limits) + 1))
    thresholds = [c for c in seen if isinstance(c, ThresholdCrossing)]
    assert [c.version for c in thresholds] == list(range(1, len(thresholds) + 1))
    for key in ("amount:50", "percent:80", "percent:100"):
        directions = [c.direction for c in thresholds if c.threshold.key == key]
        assert directions == [Direction.UP if n % 2 == 0 else Direction.DOWN for n in range(len(directions))]
    fresh, _ = assess(p, CreditState(), path[-1] if path else D(0), 2, NOW)
    assert (state.exceeded, state.reached) == (fresh.exceeded, fresh.reached)


# Temporary limits and available credit.


def test_a_temporary_limit_is_in_force_until_it_expires() -> None:
    expires = NOW + timedelta(days=3)
    p = CreditPolicy(credit_limit=D(100), temporary_limit=D(500), temporary_limit_expire_time=expires)
    assert p.limit_at(NOW) == D(500)
    assert p.limit_at(expires - timedelta(microseconds=1)) == D(500)
    assert p.limit_at(expires) == D(100)
    assert p.without_expired_temporary(NOW) == p
    assert p.without_expired_temporary(expires) == CreditPolicy(credit_limit=D(100))


def test_an_expired_temporary_raise_the_group_used_exceeds_the_limit_once() -> None:
    expires = NOW + timedelta(days=3)
    p = CreditPolicy(
        credit_limit=D(100),
        temporary_limit=D(500),
        temporary_limit_expire_time=expires,
        thresholds=(Threshold(percent=D(50)),),
    )
    state, seen = walk(p, ["300"])
    assert described(seen) == ["percent:50 up at 250.00#1"]
    # Assessed lazily by a booking after the expiry, or by the expiry loop: the same crossings once.
    state, seen = assess(p, state, D(300), 2, expires)
    assert described(seen) == ["exceeded#1"]
    assert assess(p.without_expired_temporary(expires), state, D(300), 2, expires + timedelta(seconds=5))[1] == []


def test_available_credit_is_the_limit_less_the_balance_never_below_zero() -> None:
    assert available_credit(D("30.00"), D("100.00")) == D("70.00")
    assert available_credit(D("-20.00"), D("100.00")) == D("120.00"), "credit adds to it"
    assert available_credit(D("130.00"), D("100.00")) == 0
    assert available_credit(D("130.00"), None) is None


# What SetCreditLimit accepts.


def eur(amount: str, currency_code: str = "EUR") -> Amount:
    return Amount(D(amount), currency_code)


def update(
    *,
    paths: list[str] | None = None,
    limit: Amount | None = None,
    temporary: Amount | None = None,
    expires: datetime | None = None,
    thresholds: list[ThresholdSpec] | None = None,
    current: CreditPolicy | None = None,
) -> CreditPolicy:
    return updated_policy(
        current or CreditPolicy(),
        policy_paths(paths or []),
        limit,
        temporary,
        expires,
        thresholds or [],
        "EUR",
        2,
        NOW,
    )


def test_a_policy_is_set_whole_or_by_update_mask() -> None:
    full = update(
        limit=eur("1000.00"),
        temporary=eur("1500.00"),
        expires=NOW + timedelta(days=7),
        thresholds=[ThresholdSpec(percent="80"), ThresholdSpec(amount=eur("250.00"))],
    )
    assert full == CreditPolicy(
        D("1000.00"), D("1500.00"), NOW + timedelta(days=7), (Threshold(percent=D(80)), Threshold(amount=D(250)))
    )
    raised = update(paths=["credit_limit"], limit=eur("2000.00"), current=full)
    assert raised == CreditPolicy(D("2000.00"), D("1500.00"), NOW + timedelta(days=7), full.thresholds)
    no_temporary = update(paths=["temporary_limit_expire_time"], current=full)
    assert (no_temporary.temporary_limit, no_temporary.temporary_limit_expire_time) == (None, None)
    assert update(current=full) == CreditPolicy(), "everything unset with an empty mask clears it all"


@pytest.mark.parametrize(
    ("kwargs", "field_name"),
    [
        ({"limit": eur("10.00", "USD")}, "credit_policy.credit_limit.currency_code"),
        ({"limit": eur("-1.00")}, "credit_policy.credit_limit"),
        ({"limit": eur("1.001")}, "credit_policy.credit_limit"),
        ({"temporary": eur("10.00")}, "credit_policy.temporary_limit_expire_time"),
        ({"expires": NOW + timedelta(days=1)}, "credit_policy.temporary_credit_limit"),
        ({"temporary": eur("10.00"), "expires": NOW}, "credit_policy.temporary_limit_expire_time"),
        ({"thresholds": [ThresholdSpec()]}, "credit_policy.thresholds[0]"),
        ({"thresholds": [ThresholdSpec(amount=eur("0"))]}, "credit_policy.thresholds[0].amount"),
        ({"thresholds": [ThresholdSpec(percent="0")]}, "credit_policy.thresholds[0].percent"),
        ({"thresholds": [ThresholdSpec(percent="1000.01")]}, "credit_policy.thresholds[0].percent"),
        ({"thresholds": [ThresholdSpec(percent="eighty")]}, "credit_policy.thresholds[0].percent"),
        ({"thresholds": [ThresholdSpec(percent="80.125")]}, "credit_policy.thresholds[0].percent"),
        ({"thresholds": [ThresholdSpec(percent="80"), ThresholdSpec(percent="80.0")]}, "credit_policy.thresholds[1]"),
        ({"thresholds": [ThresholdSpec(amount=eur(str(n + 1))) for n in range(21)]}, "credit_policy.thresholds"),
        ({"paths": ["balance"]}, "update_mask"),
    ],
)
def test_a_bad_policy_is_refused_naming_the_field(kwargs: dict[str, object], field_name: str) -> None:
    with pytest.raises(InvalidArgument) as refused:
        update(**kwargs)  # type: ignore[arg-type]
    assert refused.value.field == field_name


# The credit events on the wire.


def test_credit_crossings_become_events_with_the_group_as_it_stands() -> None:
    group = BalanceGroup.open_default(uuid.uuid4(), "EUR", NOW)
    group.events.clear()
    group.set_credit_policy(policy("100.00", Threshold(percent=D(80))))
    group.balance = D("120.50")
    assert group.assess_credit(NOW)
    crossed, exceeded = group.events
    assert isinstance(crossed, CreditThresholdCrossed) and isinstance(exceeded, CreditLimitExceeded)
    subject, message = events.encode(exceeded)
    assert subject == "evolutivo.balance.v1.credit_limit.exceeded"
    assert isinstance(message, events_pb2.CreditLimitExceeded)
    assert (from_money(message.credit_limit), message.credit_state_version) == (D(100), 1)
    assert message.balance_group.credit_limit_exceeded
    assert from_money(message.balance_group.available_credit) == 0
    assert from_money(message.balance_group.balance) == D("120.50")
    subject, message = events.encode(crossed)
    assert subject == "evolutivo.balance.v1.credit_threshold.crossed"
    assert isinstance(message, events_pb2.CreditThresholdCrossed)
    assert message.direction == events_pb2.CREDIT_THRESHOLD_DIRECTION_UP
    assert (message.threshold.percent, from_money(message.threshold_amount)) == ("80", D("80.00"))
    assert message.threshold_state_version == 1
    assert not group.assess_credit(NOW), "assessed again, nothing new"

    group.events.clear()
    group.balance = D("10.00")
    group.set_credit_policy(CreditPolicy(thresholds=(Threshold(percent=D(80)),)))
    assert group.assess_credit(NOW)
    restored, down = group.events
    assert isinstance(restored, CreditLimitRestored)
    subject, message = events.encode(restored)
    assert subject == "evolutivo.balance.v1.credit_limit.restored"
    assert isinstance(message, events_pb2.CreditLimitRestored)
    assert not message.HasField("credit_limit") and message.credit_state_version == 2
    assert not message.balance_group.HasField("available_credit")
    _, message = events.encode(down)
    assert isinstance(message, events_pb2.CreditThresholdCrossed)
    assert message.direction == events_pb2.CREDIT_THRESHOLD_DIRECTION_DOWN
    assert not message.HasField("threshold_amount"), "no limit: the percentage has no level"


def test_a_group_shows_its_limit_in_force_and_available_credit() -> None:
    group = BalanceGroup.open_default(uuid.uuid4(), "JPY", NOW)
    expires = NOW + timedelta(hours=1)
    group.set_credit_policy(
        CreditPolicy(D(1000), D(5000), expires, (Threshold(amount=D(700)), Threshold(percent=D("87.5"))))
    )
    group.balance = D(1200)
    shown = proto.group_to_pb(group, NOW)
    assert (from_money(shown.credit_limit), from_money(shown.available_credit)) == (D(5000), D(3800))
    assert not shown.credit_limit_exceeded
    assert [t.WhichOneof("level") for t in shown.credit_policy.thresholds] == ["amount", "percent"]
    assert shown.credit_policy.thresholds[1].percent == "87.5"
    later = proto.group_to_pb(group, expires)
    assert (from_money(later.credit_limit), from_money(later.available_credit)) == (D(1000), D(0))
    assert later.credit_limit_exceeded, "an expired temporary limit stops applying at once in reads"


# Write-offs and refunds.


def test_a_write_off_is_a_credit_naming_its_source() -> None:
    group = BalanceGroup.open_default(uuid.uuid4(), "EUR", NOW)
    entry = write_off_entry(group, D("40.00"), "EUR", "bill", "b-1", "UNCOLLECTIBLE", "", "collections", NOW)
    assert (entry.type, entry.amount, entry.source_type, entry.source_id) == (
        EntryType.WRITE_OFF,
        D("-40.00"),
        SourceType.BILL,
        "b-1",
    )


@pytest.mark.parametrize(
    ("args", "field_name"),
    [
        (("", "b-1", "UNCOLLECTIBLE", "agent"), "source_type"),
        (("charge", "b-1", "UNCOLLECTIBLE", "agent"), "source_type"),
        (("bill", "", "UNCOLLECTIBLE", "agent"), "source_id"),
        (("bill", " b-1", "UNCOLLECTIBLE", "agent"), "source_id"),
        (("collections_case", "c-1", "", "agent"), "reason_code"),
        (("collections_case", "c-1", "UNCOLLECTIBLE", ""), "actor"),
    ],
)
def test_a_write_off_without_its_source_reason_or_actor_is_refused(args: tuple[str, ...], field_name: str) -> None:
    group = BalanceGroup.open_default(uuid.uuid4(), "EUR", NOW)
    source_type, source_id, reason_code, actor = args
    with pytest.raises(InvalidArgument) as refused:
        write_off_entry(group, D("1.00"), "EUR", source_type, source_id, reason_code, "", actor, NOW)
    assert refused.value.field == field_name


def test_a_refund_pays_back_at_most_the_groups_credit() -> None:
    group = BalanceGroup.open_default(uuid.uuid4(), "EUR", NOW)
    group.balance = D("-30.00")
    entry = refund_entry(group, D("30.00"), "EUR", "payout-1", "", "agent", NOW)
    assert (entry.type, entry.amount, entry.source_type) == (EntryType.REFUND, D("30.00"), SourceType.REFUND)
    check_refund(group, entry)
    too_much = refund_entry(group, D("30.01"), "EUR", "payout-2", "", "agent", NOW)
    with pytest.raises(FailedPrecondition) as refused:
        check_refund(group, too_much)
    assert refused.value.reason == "REFUND_EXCEEDS_CREDIT" and refused.value.metadata["credit"] == "30.00"
    group.balance = D("5.00")
    with pytest.raises(FailedPrecondition):
        check_refund(group, entry)
    for amount, currency_code, reference, actor, field_name in [
        ("1.00", "USD", "r", "agent", "amount.currency_code"),
        ("0", "EUR", "r", "agent", "amount"),
        ("1.00", "EUR", "", "agent", "reference"),
        ("1.00", "EUR", "r", "", "actor"),
    ]:
        with pytest.raises(InvalidArgument) as bad:
            refund_entry(group, D(amount), currency_code, reference, "", actor, NOW)
        assert bad.value.field == field_name
