"""Fees on the calendar, pure: which recurring and one-time fees a purchase owes now, for which
period, billed in which cycle; proration by local days at cycle boundaries, across DST and in
February; purchases ending inside a cycle; quantity and price overrides; the version in force."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from itertools import count
from zoneinfo import ZoneInfo

import pytest
from evolutivo_charging.domain.catalog import (
    Charge,
    ChargeOffer,
    Flat,
    OfferStatus,
    OneTime,
    Recurring,
    RecurringTiming,
)
from evolutivo_charging.domain.fees import (
    WHOLE_PURCHASE,
    Fees,
    active_in,
    billed_in,
    cycle_fees,
    one_time_fees,
    purchase_fees,
    started,
)
from evolutivo_charging.domain.usage import BillCycle, BillCycleStatus, ChargeKind, Purchase

MADRID = "Europe/Madrid"
ACCOUNT = uuid.UUID("00000000-0000-4000-8000-000000000001")
PURCHASE = uuid.UUID("00000000-0000-4000-8000-0000000000b1")
OPEN, CLOSED = BillCycleStatus.OPEN, BillCycleStatus.CLOSED
ADVANCE, ARREARS = RecurringTiming.IN_ADVANCE, RecurringTiming.IN_ARREARS


def local(y: int, m: int, d: int, h: int = 0, zone: str = MADRID) -> datetime:
    return datetime(y, m, d, h, tzinfo=ZoneInfo(zone)).astimezone(UTC)


def cycle(start: datetime, end: datetime, status: BillCycleStatus = OPEN, zone: str = MADRID, n: int = 1) -> BillCycle:
    return BillCycle(uuid.uuid4(), ACCOUNT, start, end, status, sequence=n, time_zone=zone)


def offer(*charges: Charge, version: int = 1, valid_from: datetime | None = None, currency: str = "EUR") -> ChargeOffer:
    return ChargeOffer(
        charge_offer_id=uuid.uuid4(),
        code="hosting",
        version=version,
        name="Hosting",
        description="",
        currency_code=currency,
        valid_from=valid_from or datetime(2020, 1, 1, tzinfo=UTC),
        valid_to=None,
        status=OfferStatus.ACTIVE,
        charges=charges,
        create_time=datetime(2020, 1, 1, tzinfo=UTC),
    )


def monthly(amount: str = "31", timing: RecurringTiming = ADVANCE, prorate: bool = True) -> Charge:
    return Charge("monthly", "Monthly fee", Recurring(Decimal(amount), timing, prorate), tax_code="S")


SETUP = Charge("setup", "Set-up fee", OneTime(Decimal("99.90")), balance_group="fees")
CALLS = Charge("calls", "Calls", Flat(Decimal("0.10")), event_type="api.call")


def purchase(
    start: datetime,
    end: datetime | None = None,
    quantity: str = "1",
    cancel: datetime | None = None,
    overrides: tuple[tuple[str, Decimal], ...] = (),
) -> Purchase:
    return Purchase(PURCHASE, ACCOUNT, None, "hosting", 1, Decimal(quantity), start, end, cancel, overrides)


def ids() -> Callable[[], uuid.UUID]:
    numbers = count(1)
    return lambda: uuid.UUID(int=next(numbers))


# March 2026 in Madrid: 31 local days, one of them 23 hours long (29 March).
MARCH = (local(2026, 3, 1), local(2026, 4, 1))
APRIL = (local(2026, 4, 1), local(2026, 5, 1))
NOW = local(2026, 4, 1, 2)  # just after March ended (and billing's late-usage hour)


def amounts(due: Fees) -> list[Decimal]:
    return [f.charge.amount for f in due.fees]


# In advance.


def test_an_in_advance_fee_for_a_whole_open_cycle() -> None:
    march = cycle(*MARCH)
    due = cycle_fees(purchase(local(2026, 2, 10)), [offer(monthly(), SETUP, CALLS)], march, [march], MADRID, NOW)
    (fee,) = due.fees
    assert not due.waiting
    assert fee.key == (PURCHASE, "monthly", march.bill_cycle_id, "recurring")
    charge = fee.charge
    assert (charge.kind, charge.event_id, charge.amount, charge.unrounded_amount) == (
        ChargeKind.RECURRING,
        "",
        Decimal("31.00"),
        Decimal(31),
    )
    assert (charge.bill_cycle_id, charge.late, charge.event_time) == (march.bill_cycle_id, False, MARCH[0])
    assert (charge.charge_offer_code, charge.charge_offer_version, charge.charge_code) == ("hosting", 1, "monthly")
    assert (charge.tax_code, charge.quantity, charge.currency_code, charge.rate_time) == ("S", Decimal(1), "EUR", NOW)


@pytest.mark.parametrize(
    ("start", "days"),
    [
        (MARCH[0], 31),  # at the cycle's start: the whole cycle
        (local(2026, 2, 27, 15), 31),  # before it
        (local(2026, 3, 28), 4),  # 28..31 March: the 23-hour day counts as one
        (local(2026, 3, 29, 12), 3),  # mid-day on the DST day: that whole day
        (local(2026, 3, 31, 23), 1),  # the last local day (22:00 UTC)
    ],
)
def test_proration_from_a_start_inside_the_cycle_counts_local_days(start: datetime, days: int) -> None:
    march = cycle(*MARCH)
    (fee,) = cycle_fees(purchase(start), [offer(monthly())], march, [march], MADRID, NOW).fees
    assert fee.charge.amount == Decimal(days)
    assert fee.charge.event_time == max(start, MARCH[0])


def test_a_purchase_starting_at_the_cycles_end_or_ended_at_its_start_owes_it_nothing() -> None:
    march = cycle(*MARCH)
    at_end = purchase(MARCH[1])
    assert not active_in(at_end, march)
    assert cycle_fees(at_end, [offer(monthly())], march, [march], MADRID, NOW) == Fees()
    ended = purchase(local(2026, 1, 5), end=MARCH[0])
    assert cycle_fees(ended, [offer(monthly())], march, [march], MADRID, NOW) == Fees()


@pytest.mark.parametrize(
    ("end", "days"),
    [
        (local(2026, 3, 11), 10),  # 1..10 March
        (local(2026, 3, 30, 9), 29),  # ends mid-day on the 30th: that day is not charged
        (MARCH[1], 31),  # ends with the cycle
        (local(2026, 3, 1, 20), 0),  # ends on its first day: nothing
    ],
)
def test_a_purchase_ending_inside_the_cycle(end: datetime, days: int) -> None:
    march = cycle(*MARCH)
    due = cycle_fees(purchase(local(2026, 2, 1), end=end), [offer(monthly("62"))], march, [march], MADRID, NOW)
    assert amounts(due) == ([Decimal(2 * days)] if days else [])


def test_starting_and_ending_inside_the_cycle_in_february() -> None:
    zone = "America/New_York"
    feb = cycle(local(2028, 2, 1, zone=zone), local(2028, 3, 1, zone=zone), zone=zone)  # a leap year: 29 days
    bought = purchase(local(2028, 2, 10, zone=zone), end=local(2028, 2, 20, zone=zone))
    (fee,) = cycle_fees(bought, [offer(monthly("29"))], feb, [feb], "UTC", local(2028, 2, 12)).fees
    assert fee.charge.amount == Decimal(10)  # 10..19 February, counted in New York's days


def test_proration_rounds_half_up_and_keeps_the_exact_amount() -> None:
    march = cycle(*MARCH)
    (fee,) = cycle_fees(purchase(local(2026, 3, 21)), [offer(monthly("49"))], march, [march], MADRID, NOW).fees
    assert fee.charge.amount == Decimal("17.39")  # 49 x 11 / 31 = 17.387...
    assert abs(fee.charge.unrounded_amount * 31 - 539) < Decimal("1e-70")


def test_the_cycles_time_zone_prorates_or_the_accounts_when_it_has_none() -> None:
    # 10 March 00:00 in Tokyo is still 9 March in Madrid.
    tokyo_start = local(2026, 3, 10, zone="Asia/Tokyo")
    march_madrid = cycle(*MARCH)
    (in_madrid,) = cycle_fees(purchase(tokyo_start), [offer(monthly())], march_madrid, [], MADRID, NOW).fees
    assert in_madrid.charge.amount == Decimal(23)  # 9..31 March
    # Without one, the account's: 10..31 March in Tokyo's days.
    no_zone = cycle(*MARCH, zone="")
    (fallback,) = cycle_fees(purchase(tokyo_start), [offer(monthly())], no_zone, [], "Asia/Tokyo", NOW).fees
    assert fallback.charge.amount == Decimal(22)


def test_quantity_multiplies_the_fee_and_an_override_replaces_it() -> None:
    march = cycle(*MARCH)
    three = purchase(MARCH[0], quantity="3")
    assert amounts(cycle_fees(three, [offer(monthly("10"))], march, [march], MADRID, NOW)) == [Decimal(30)]
    cheaper = purchase(MARCH[0], quantity="2", overrides=(("monthly", Decimal("4.5")),))
    (fee,) = cycle_fees(cheaper, [offer(monthly("10"))], march, [march], MADRID, NOW).fees
    assert (fee.charge.amount, fee.charge.quantity) == (Decimal("9.00"), Decimal(2))
    free = purchase(MARCH[0], overrides=(("monthly", Decimal(0)),))
    assert cycle_fees(free, [offer(monthly("10"))], march, [march], MADRID, NOW) == Fees()


def test_a_fee_that_does_not_prorate_is_charged_whole() -> None:
    march = cycle(*MARCH)
    late_start = purchase(local(2026, 3, 30))
    assert amounts(cycle_fees(late_start, [offer(monthly("31", prorate=False))], march, [march], MADRID, NOW)) == [
        Decimal("31.00")
    ]


def test_no_fee_before_the_purchase_starts_nor_for_a_cancelled_one() -> None:
    march = cycle(*MARCH)
    later = purchase(local(2026, 3, 20))
    assert not started(later, local(2026, 3, 19))
    assert cycle_fees(later, [offer(monthly())], march, [march], MADRID, local(2026, 3, 19)) == Fees()
    cancelled = purchase(local(2026, 3, 20), cancel=local(2026, 3, 10))
    assert cycle_fees(cancelled, [offer(monthly())], march, [march], MADRID, NOW) == Fees()


def test_the_version_in_force_at_the_periods_start_prices_it() -> None:
    v1 = offer(monthly("10"), valid_from=datetime(2020, 1, 1, tzinfo=UTC))
    v1.valid_to = local(2026, 4, 15)
    v2 = offer(monthly("20"), version=2, valid_from=local(2026, 4, 15))
    march, april = cycle(*MARCH), cycle(*APRIL)
    (in_march,) = cycle_fees(purchase(local(2026, 2, 1)), [v1, v2], march, [march], MADRID, NOW).fees
    assert (in_march.charge.amount, in_march.charge.charge_offer_version) == (Decimal("10.00"), 1)
    # A purchase starting in April after the new version: priced by version 2, from its start.
    (in_april,) = cycle_fees(purchase(local(2026, 4, 16)), [v1, v2], april, [april], MADRID, local(2026, 4, 17)).fees
    assert (in_april.charge.amount, in_april.charge.charge_offer_version) == (Decimal("10.00"), 2)  # 20 x 15/30
    # No version in force: no fee.
    assert cycle_fees(purchase(local(2026, 2, 1)), [v2], march, [march], MADRID, NOW) == Fees()


# In arrears, and where fees are billed.


def test_an_in_arrears_fee_waits_for_the_close_and_is_billed_in_the_next_cycle() -> None:
    arrears = offer(monthly("31", ARREARS))
    bought = purchase(local(2026, 3, 11))
    march = cycle(*MARCH)
    assert cycle_fees(bought, [arrears], march, [march], MADRID, NOW) == Fees()  # still open
    closed = BillCycle(march.bill_cycle_id, ACCOUNT, *MARCH, CLOSED, time_zone=MADRID)
    # Closed, and charging does not know the next cycle yet: it waits.
    assert cycle_fees(bought, [arrears], closed, [closed], MADRID, NOW) == Fees((), waiting=True)
    april = cycle(*APRIL, n=2)
    (fee,) = cycle_fees(bought, [arrears], closed, [closed, april], MADRID, NOW).fees
    assert fee.key == (PURCHASE, "monthly", march.bill_cycle_id, "recurring")
    assert (fee.charge.amount, fee.charge.bill_cycle_id, fee.charge.late) == (
        Decimal("21.00"),
        april.bill_cycle_id,
        False,
    )
    assert fee.charge.event_time == bought.start_time  # the start of what it pays for
    # An open cycle does not take in-advance fees of its closed predecessor on time.
    assert billed_in(closed, ADVANCE, [closed, april]) == (april, True)
    assert billed_in(march, ADVANCE, [march]) == (march, False)


def test_fees_charging_learns_after_their_cycle_closed_are_billed_in_the_open_cycle_late() -> None:
    feb = cycle(local(2026, 2, 1), MARCH[0], CLOSED)
    march = cycle(*MARCH, CLOSED)
    april = cycle(*APRIL)
    backdated = purchase(local(2026, 2, 15))
    cycles = [feb, march, april]
    advance = purchase_fees(backdated, [offer(monthly("28"))], cycles, MADRID, local(2026, 4, 2))
    assert [(f.key[2], f.charge.bill_cycle_id, f.charge.late, f.charge.amount) for f in advance.fees] == [
        (feb.bill_cycle_id, april.bill_cycle_id, True, Decimal("14.00")),
        (march.bill_cycle_id, april.bill_cycle_id, True, Decimal("28.00")),
        (april.bill_cycle_id, april.bill_cycle_id, False, Decimal("28.00")),
    ]
    arrears = purchase_fees(backdated, [offer(monthly("28", ARREARS))], cycles, MADRID, local(2026, 4, 2))
    # February's in-arrears fee belonged on March's bill: late. March's is on time in April.
    assert [(f.key[2], f.charge.late) for f in arrears.fees] == [
        (feb.bill_cycle_id, True),
        (march.bill_cycle_id, False),
    ]


# One-time fees.


def test_a_one_time_fee_once_the_purchase_starts() -> None:
    march = cycle(*MARCH)
    start = local(2026, 3, 20, 10)
    bought = purchase(start, quantity="2")
    assert one_time_fees(bought, [offer(SETUP)], [march], start - timedelta(seconds=1)) == Fees()
    (fee,) = one_time_fees(bought, [offer(SETUP, monthly())], [march], start).fees
    assert fee.key == (PURCHASE, "setup", WHOLE_PURCHASE, "one_time")
    charge = fee.charge
    assert (charge.kind, charge.amount, charge.balance_group) == (ChargeKind.ONE_TIME, Decimal("199.80"), "fees")
    assert (charge.bill_cycle_id, charge.late, charge.event_time) == (march.bill_cycle_id, False, start)


def test_a_one_time_fee_without_an_open_cycle_waits_and_a_backdated_one_is_late() -> None:
    start = local(2026, 4, 1, 1)
    march = cycle(*MARCH)  # still open for late usage; April not known yet
    assert one_time_fees(purchase(start), [offer(SETUP)], [march], start) == Fees((), waiting=True)
    assert one_time_fees(purchase(start), [offer(SETUP)], [], start) == Fees((), waiting=True)
    closed = BillCycle(march.bill_cycle_id, ACCOUNT, *MARCH, CLOSED, time_zone=MADRID)
    april = cycle(*APRIL, n=2)
    (fee,) = one_time_fees(purchase(local(2026, 3, 5)), [offer(SETUP)], [closed, april], start).fees
    assert (fee.charge.bill_cycle_id, fee.charge.late) == (april.bill_cycle_id, True)
    cancelled = purchase(local(2026, 3, 5), cancel=local(2026, 3, 1))
    assert one_time_fees(cancelled, [offer(SETUP)], [april], start) == Fees()


def test_purchase_fees_are_unique_by_key_and_usage_charges_are_no_fees() -> None:
    march, april = cycle(*MARCH, CLOSED), cycle(*APRIL)
    due = purchase_fees(
        purchase(local(2026, 3, 3)), [offer(SETUP, monthly(), CALLS)], [april, march], MADRID, local(2026, 4, 2)
    )
    keys = [f.key for f in due.fees]
    assert len(keys) == len(set(keys)) == 3
    assert [k[1] for k in keys] == ["setup", "monthly", "monthly"]
    assert not due.waiting


def test_ids_come_from_the_generator() -> None:
    march = cycle(*MARCH)
    new_id = ids()
    (fee,) = cycle_fees(purchase(MARCH[0]), [offer(monthly())], march, [march], MADRID, NOW, new_id).fees
    assert fee.charge.charge_id == uuid.UUID(int=1)
