"""Balance, pure: the amount rules of payments and adjustments, where a charge lands, closing
groups, payments retried and reversed, transfers within one account, balances as of an instant,
and the unit of work's invariant: the balance moves it commits are the sums of the entries it
booked, whatever the duplicates and the messages that failed."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any, cast

import pytest
from evolutivo_balance.adapters import events, proto
from evolutivo_balance.adapters.orm import outbox
from evolutivo_balance.domain.model import (
    Adjustment,
    BalanceGroup,
    Charge,
    EntryType,
    LedgerEntry,
    Payment,
    PaymentMethod,
    PaymentState,
    SourceType,
    balance_of,
    charge_entry,
    check_amount,
    target_group,
    transfer,
)
from evolutivo_balance.service_layer.unit_of_work import BalanceUnitOfWork
from evolutivo_runtime.clock import FixedClock
from evolutivo_runtime.errors import FailedPrecondition, InvalidArgument
from hypothesis import given, settings
from hypothesis import strategies as st

NOW = datetime(2031, 5, 17, 9, 30, tzinfo=UTC)
ACCOUNT = uuid.uuid4()


def default_group(currency_code: str = "EUR", account_id: uuid.UUID = ACCOUNT) -> BalanceGroup:
    return BalanceGroup.open_default(account_id, currency_code, NOW)


# Amounts.


@pytest.mark.parametrize(
    ("amount", "currency_code", "sign", "field_name", "reason"),
    [
        ("10.00", "USD", 1, "amount.currency_code", "CURRENCY_MISMATCH"),
        ("10.00", "", 1, "amount.currency_code", "CURRENCY_MISMATCH"),
        ("0", "EUR", 1, "amount", "INVALID_ARGUMENT"),
        ("-1", "EUR", 1, "amount", "INVALID_ARGUMENT"),
        ("0", "EUR", 0, "amount", "INVALID_ARGUMENT"),
        ("1.005", "EUR", 0, "amount", "INVALID_ARGUMENT"),
        ("1000000000000000000", "EUR", 1, "amount", "INVALID_ARGUMENT"),
    ],
)
def test_amounts_are_refused_naming_the_field(
    amount: str, currency_code: str, sign: int, field_name: str, reason: str
) -> None:
    with pytest.raises(InvalidArgument) as refused:
        check_amount("amount", Decimal(amount), currency_code, "EUR", sign)
    assert (refused.value.field, refused.value.reason) == (field_name, reason)


@pytest.mark.parametrize(
    ("amount", "currency_code", "sign"),
    [
        ("0.01", "EUR", 1),
        ("-0.01", "EUR", 0),
        ("5", "JPY", 1),
        ("1.234", "BHD", 1),
        ("999999999999999999.99", "EUR", 1),
    ],
)
def test_amounts_in_the_minor_unit_of_the_accounts_currency_pass(amount: str, currency_code: str, sign: int) -> None:
    check_amount("amount", Decimal(amount), currency_code, currency_code, sign)


def test_a_yen_amount_with_decimals_is_refused() -> None:
    with pytest.raises(InvalidArgument, match="at most 0 decimals"):
        check_amount("amount", Decimal("5.5"), "JPY", "JPY", 1)


# Charges.


def charge(amount: str = "1.00", group: str = "", currency_code: str = "EUR", **kw: Any) -> Charge:
    return Charge(uuid.uuid4(), ACCOUNT, group, Decimal(amount), currency_code, kw.get("rate_time"), kw.get("reverses"))


def test_a_charge_lands_in_the_group_it_names_or_in_the_default_group_saying_why() -> None:
    default = default_group()
    roaming = BalanceGroup.open(default, "roaming", NOW)
    closed = BalanceGroup.open(default, "closed", NOW)
    closed.close(NOW)
    groups = [default, roaming, closed]
    assert target_group(groups, "") == (default, "")
    assert target_group(groups, "roaming") == (roaming, "")
    assert target_group(groups, "default") == (default, "")
    for name in ("Roaming", "closed", "nope"):
        group, reason = target_group(groups, name)
        assert group is default
        assert reason == f"balance group {name!r} is not an open group of the account: booked to the default group"


def test_a_charge_entry_is_a_debit_effective_when_rated_and_a_reversal_says_what_it_reverses() -> None:
    group = default_group()
    rated_at = NOW - timedelta(hours=3)
    entry = charge_entry(group, charge("2.50", rate_time=rated_at), "", NOW)
    assert (entry.type, entry.amount, entry.source_type, entry.effective_time, entry.actor) == (
        EntryType.CHARGE,
        Decimal("2.50"),
        SourceType.CHARGE,
        rated_at,
        "charging",
    )
    reversed_id = uuid.uuid4()
    reversal = charge_entry(group, charge("-2.50", reverses=reversed_id), "", NOW)
    assert reversal.amount == Decimal("-2.50") and reversal.reason == f"reverses charge {reversed_id}"
    assert reversal.effective_time == NOW


def test_a_charge_in_another_currency_or_not_in_the_minor_unit_is_not_booked() -> None:
    with pytest.raises(FailedPrecondition) as refused:
        charge_entry(default_group(), charge(currency_code="USD"), "", NOW)
    assert refused.value.reason == "CURRENCY_MISMATCH"
    with pytest.raises(FailedPrecondition) as unrounded:
        charge_entry(default_group(), charge("0.0004"), "", NOW)
    assert unrounded.value.reason == "CHARGE_AMOUNT_INVALID"


# Groups.


def test_only_an_empty_non_default_group_closes_once() -> None:
    default = default_group()
    with pytest.raises(FailedPrecondition) as never:
        default.close(NOW)
    assert never.value.reason == "DEFAULT_BALANCE_GROUP"
    group = BalanceGroup.open(default, "project", NOW)
    group.balance = Decimal("0.01")
    with pytest.raises(FailedPrecondition) as not_empty:
        group.close(NOW)
    assert not_empty.value.reason == "BALANCE_NOT_ZERO"
    group.balance = Decimal("0.000000000")
    assert group.close(NOW) and not group.is_open
    assert not group.close(NOW + timedelta(days=1)), "closed already: nothing changes"
    assert group.close_time == NOW
    assert [type(e).__name__ for e in group.events] == ["BalanceGroupCreated", "BalanceGroupClosed"]


@pytest.mark.parametrize("name", ["", " padded", "x" * 65, "tab\there"])
def test_group_names_are_checked(name: str) -> None:
    with pytest.raises(InvalidArgument) as refused:
        BalanceGroup.open(default_group(), name, NOW)
    assert refused.value.field == "name"


# Payments.


def record(group: BalanceGroup, amount: str = "40.00", **kw: Any) -> tuple[Payment, LedgerEntry]:
    return Payment.record(
        group,
        Decimal(amount),
        kw.get("currency_code", "EUR"),
        kw.get("method", PaymentMethod.BANK_TRANSFER),
        kw.get("reference", "REF-1"),
        kw.get("received_time"),
        NOW,
    )


def test_a_payment_is_a_credit_effective_when_received() -> None:
    received = NOW - timedelta(days=2)
    payment, entry = record(default_group(), received_time=received)
    assert (entry.type, entry.amount, entry.source_type, entry.source_id, entry.effective_time) == (
        EntryType.PAYMENT,
        Decimal("-40.00"),
        SourceType.PAYMENT,
        "REF-1",
        received,
    )
    assert (payment.state, payment.entry_id, payment.received_time) == (PaymentState.RECORDED, entry.entry_id, received)
    assert record(default_group())[0].received_time == NOW, "now when not said"


@pytest.mark.parametrize(
    ("kw", "field_name"),
    [
        ({"currency_code": "USD"}, "amount.currency_code"),
        ({"amount": "0"}, "amount"),
        ({"amount": "-5"}, "amount"),
        ({"reference": ""}, "reference"),
        ({"reference": "x" * 201}, "reference"),
        ({"received_time": NOW + timedelta(seconds=1)}, "received_time"),
    ],
)
def test_a_bad_payment_is_refused_naming_the_field(kw: dict[str, Any], field_name: str) -> None:
    with pytest.raises(InvalidArgument) as refused:
        record(default_group(), kw.pop("amount", "40.00"), **kw)
    assert refused.value.field == field_name


def test_a_retry_must_be_the_same_payment() -> None:
    group = default_group()
    first, _ = record(group)
    first.check_retry(record(group, received_time=NOW - timedelta(minutes=1))[0])
    for other in (record(group, "40.01")[0], record(group, method=PaymentMethod.CARD)[0]):
        with pytest.raises(InvalidArgument) as refused:
            first.check_retry(other)
        assert (refused.value.field, refused.value.reason) == ("reference", "PAYMENT_REFERENCE_REUSED")


def test_a_reversal_restores_what_the_payment_paid() -> None:
    group = default_group()
    payment, credit = record(group)
    debit = payment.reverse(group, "returned", "bank", NOW + timedelta(days=3))
    assert (debit.type, debit.amount, debit.source_type, debit.source_id) == (
        EntryType.PAYMENT_REVERSAL,
        Decimal("40.00"),
        SourceType.PAYMENT,
        "REF-1",
    )
    assert balance_of([credit, debit]) == 0
    assert (payment.state, payment.reversal_entry_id, payment.reversal_reason) == (
        PaymentState.REVERSED,
        debit.entry_id,
        "returned",
    )
    assert [type(e).__name__ for e in payment.events] == ["PaymentRecorded", "PaymentReversed"]


# Adjustments and transfers.


@pytest.mark.parametrize(
    ("kw", "field_name"),
    [
        ({"reason_code": ""}, "reason_code"),
        ({"reason_code": "no spaces please"}, "reason_code"),
        ({"actor": ""}, "actor"),
        ({"amount": "0"}, "amount"),
        ({"currency_code": "GBP"}, "amount.currency_code"),
    ],
)
def test_an_adjustment_needs_a_reason_code_an_actor_and_an_amount(kw: dict[str, str], field_name: str) -> None:
    args = {"amount": "5.00", "currency_code": "EUR", "reason_code": "GOODWILL", "actor": "agent-7"} | kw
    with pytest.raises(InvalidArgument) as refused:
        Adjustment.make(
            default_group(), Decimal(args["amount"]), args["currency_code"], args["reason_code"], "", args["actor"], NOW
        )
    assert refused.value.field == field_name


def test_an_adjustment_is_its_own_source() -> None:
    made = Adjustment.make(default_group(), Decimal("-3.00"), "EUR", "GOODWILL", "outage", "agent-7", NOW)
    assert made.entry.source_id == str(made.entry.entry_id)
    assert (made.entry.amount, made.entry.reason_code, made.entry.reason) == (Decimal("-3.00"), "GOODWILL", "outage")


def test_a_transfer_stays_within_one_account_and_keeps_its_total() -> None:
    default = default_group()
    project = BalanceGroup.open(default, "project", NOW)
    moved = transfer(default, project, ACCOUNT, Decimal("7.00"), "EUR", "", "agent-7", NOW)
    assert (moved.from_entry.amount, moved.to_entry.amount) == (Decimal("-7.00"), Decimal("7.00"))
    assert balance_of([moved.from_entry, moved.to_entry]) == 0
    elsewhere = default_group(account_id=uuid.uuid4())
    with pytest.raises(InvalidArgument) as refused:
        transfer(default, elsewhere, ACCOUNT, Decimal("7.00"), "EUR", "", "agent-7", NOW)
    assert (refused.value.field, refused.value.reason) == ("to_balance_group_id", "TRANSFER_ACROSS_ACCOUNTS")
    with pytest.raises(InvalidArgument, match="another group"):
        transfer(default, default, ACCOUNT, Decimal("7.00"), "EUR", "", "agent-7", NOW)
    with pytest.raises(InvalidArgument):
        transfer(default, project, ACCOUNT, Decimal("-7.00"), "EUR", "", "agent-7", NOW)


def test_the_balance_as_of_an_instant_sums_the_entries_effective_by_then() -> None:
    group = default_group()
    entries = [
        charge_entry(group, charge("10.00", rate_time=NOW - timedelta(days=1)), "", NOW),
        record(group, "4.00", received_time=NOW - timedelta(hours=1))[0:2][1],
        charge_entry(group, charge("1.00", rate_time=NOW), "", NOW),
    ]
    assert balance_of(entries) == Decimal("7.00")
    assert balance_of(entries, NOW - timedelta(hours=2)) == Decimal("10.00")
    assert balance_of(entries, NOW - timedelta(hours=1)) == Decimal("6.00")
    assert balance_of(entries, NOW - timedelta(days=2)) == 0


# Events and translation.


def test_every_event_has_its_subject_and_message() -> None:
    group = default_group()
    payment, _ = record(group)
    payment.reverse(group, "returned", "", NOW)
    made = Adjustment.make(group, Decimal("1.00"), "EUR", "GOODWILL", "", "agent-7", NOW)
    project = BalanceGroup.open(group, "project", NOW)
    project.close(NOW)
    subjects = [events.encode(e)[0] for e in [*payment.events, *made.events, *project.events]]
    assert subjects == [
        "evolutivo.balance.v1.payment.recorded",
        "evolutivo.balance.v1.payment.reversed",
        "evolutivo.balance.v1.adjustment.made",
        "evolutivo.balance.v1.balance_group.created",
        "evolutivo.balance.v1.balance_group.closed",
    ]
    with pytest.raises(TypeError):
        events.encode(object())


def test_stored_amounts_go_out_in_the_minor_unit() -> None:
    group = default_group()
    group.balance = Decimal("12.340000000")
    money = proto.group_to_pb(group).balance
    assert (money.units, money.nanos, money.currency_code) == (12, 340_000_000, "EUR")


# The unit of work's invariant, with an in-memory ledger.


@dataclass
class FakeSession:
    async def execute(self, *args: Any, **kwargs: Any) -> None:
        return None

    async def commit(self) -> None:
        return None

    async def rollback(self) -> None:
        return None

    async def close(self) -> None:
        return None


@dataclass
class FakeLedger:
    """Books a source once, like the ledger's unique key."""

    sources: set[tuple[EntryType, SourceType, str]] = field(default_factory=set)

    async def add(self, entries: Sequence[LedgerEntry]) -> set[uuid.UUID]:
        added = set()
        for e in entries:
            if e.source not in self.sources:
                self.sources.add(e.source)
                added.add(e.entry_id)
        return added


@dataclass
class FakeGroups:
    moved: dict[uuid.UUID, Decimal] = field(default_factory=dict)

    async def move(self, deltas: dict[uuid.UUID, Decimal], defer: Any) -> None:
        for group_id, delta in deltas.items():
            self.moved[group_id] = self.moved.get(group_id, Decimal(0)) + delta


GROUPS = [uuid.UUID(int=n) for n in range(1, 4)]
entry_specs = st.tuples(
    st.sampled_from(GROUPS),
    st.decimals(min_value=-1000, max_value=1000, places=2, allow_nan=False, allow_infinity=False),
    st.integers(min_value=0, max_value=30),  # the source: repeats are replays
)
messages = st.lists(st.tuples(st.lists(entry_specs, max_size=8), st.booleans()), max_size=12)


@settings(max_examples=200, deadline=None)
@given(messages)
async def test_committed_balance_moves_are_the_sums_of_the_entries_booked(
    batch: list[tuple[list[tuple[uuid.UUID, Decimal, int]], bool]],
) -> None:
    """A consumer batch: each message books its entries in a savepoint; a failed message's
    entries and balance moves go; replays book nothing. What commit moves is, per group, the sum
    of the entries that stay."""
    uow = BalanceUnitOfWork(cast(Any, FakeSession), outbox, FixedClock(NOW))
    kept: list[LedgerEntry] = []
    async with uow:
        ledger, groups = FakeLedger(), FakeGroups()
        uow.ledger, uow.balance_groups = cast(Any, ledger), cast(Any, groups)
        for specs, fails in batch:
            mark = uow.checkpoint()
            sources_before = set(ledger.sources)
            entries = [
                LedgerEntry(
                    uuid.uuid4(),
                    g,
                    ACCOUNT,
                    EntryType.CHARGE,
                    amount,
                    "EUR",
                    SourceType.CHARGE,
                    str(source),
                    "",
                    "",
                    "",
                    NOW,
                    NOW,
                )
                for g, amount, source in specs
            ]
            booked = await uow.book(entries)
            if fails:
                ledger.sources = sources_before  # the savepoint rolled back
                uow.discard_since(mark)
            else:
                kept.extend(booked)
        await uow.commit()
    expected = {g: balance_of(e for e in kept if e.balance_group_id == g) for g in GROUPS}
    assert {g: groups.moved.get(g, Decimal(0)) for g in GROUPS} == expected
    assert len({e.source for e in kept}) == len(kept), "a source is booked once"
