"""Bill cycles across processes: an account created through customer gets its first cycle in
billing; moving the shared clock past the cycle's end plus the late-usage delay makes billing's
cycle closer (run by both billing replicas) close it and open the next, once, with the events on
NATS; a jump of months closes the cycles in between, in order."""

from __future__ import annotations

import asyncio
import itertools
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import grpc
import nats
import pytest
from evolutivo.admin.v1 import clock_admin_service_pb2 as clock_pb
from evolutivo.admin.v1 import clock_admin_service_pb2_grpc as clock_grpc
from evolutivo.billing.v1 import bill_cycle_pb2, events_pb2
from evolutivo.billing.v1 import billing_service_pb2 as billing_pb
from evolutivo.billing.v1 import billing_service_pb2_grpc as billing_grpc
from evolutivo.customer.v1 import account_pb2
from evolutivo.customer.v1 import customer_service_pb2 as customer_pb
from evolutivo.customer.v1 import customer_service_pb2_grpc as customer_grpc
from evolutivo_runtime.testing import eventually
from evolutivo_stack.embedded import scratch_dir
from evolutivo_stack.stack import Stack
from google.protobuf.duration_pb2 import Duration
from google.protobuf.timestamp_pb2 import Timestamp

pytestmark = pytest.mark.e2e

LATE_USAGE_DELAY = timedelta(seconds=3600)  # billing's default, left unchanged
OPEN = bill_cycle_pb2.BILL_CYCLE_STATUS_OPEN
CLOSED = bill_cycle_pb2.BILL_CYCLE_STATUS_CLOSED


@pytest.fixture(scope="module")
def stack() -> Iterator[Stack]:
    # tests/e2e/conftest.py's stack, with billing's closer checking twice a second and two billing
    # replicas, so two closers in two processes race for every due cycle.
    with scratch_dir("stack") as data_dir:
        with Stack(
            data_dir,
            base_port=None,
            clock_mode="controllable",
            env={"BILLING_CYCLE_CHECK_SECONDS": "0.5"},
            replicas={"billing": 2},
        ) as running:
            yield running


def at(ts: Timestamp) -> datetime:
    return ts.ToDatetime(tzinfo=UTC)


async def list_cycles(channels: dict[str, grpc.aio.Channel], account_id: str) -> list[bill_cycle_pb2.BillCycle]:
    """Every cycle of the account, newest first, page by page."""
    stub = billing_grpc.BillingServiceStub(channels["billing"])
    found: list[bill_cycle_pb2.BillCycle] = []
    token = ""
    while True:
        page = await stub.ListBillCycles(
            billing_pb.ListBillCyclesRequest(account_id=account_id, page_size=2, page_token=token)
        )
        found += page.bill_cycles
        token = page.next_page_token
        if not token:
            return found


async def advance_to(channels: dict[str, grpc.aio.Channel], target: datetime) -> datetime:
    """Moves the shared clock (through charging's ClockAdminService: any service's moves it for
    all) to at least `target`, and waits until billing follows."""
    admin = clock_grpc.ClockAdminServiceStub(channels["charging"])
    now = at((await admin.GetClock(clock_pb.GetClockRequest())).now)
    seconds = max(int((target - now).total_seconds()) + 1, 0)
    moved = await admin.AdvanceClock(clock_pb.AdvanceClockRequest(duration=Duration(seconds=seconds)))
    billing_clock = clock_grpc.ClockAdminServiceStub(channels["billing"])

    async def followed() -> bool | None:
        seen = await billing_clock.GetClock(clock_pb.GetClockRequest())
        return True if seen.revision >= moved.revision else None

    await eventually(followed, timeout=10, what="billing to follow the clock")
    return at(moved.now)


def assert_contiguous(cycles: list[bill_cycle_pb2.BillCycle]) -> None:
    """Newest first: numbered n..1, only the newest open, each starting where the previous ends."""
    assert [c.sequence for c in cycles] == list(range(len(cycles), 0, -1))
    assert [c.status for c in cycles] == [OPEN] + [CLOSED] * (len(cycles) - 1)
    for newer, older in itertools.pairwise(cycles):
        assert newer.start_time == older.end_time
        assert at(older.close_time) >= at(older.end_time) + LATE_USAGE_DELAY


async def closed_events(stack: Stack, account_id: str, expected: int) -> list[events_pb2.BillCycleClosed]:
    """The BillCycleClosed events of the account on billing's stream, once `expected` are there."""
    nc = await nats.connect(stack.nats_url)
    try:
        js = nc.jetstream()
        sub = await js.subscribe("evolutivo.billing.v1.bill_cycle.closed", ordered_consumer=True)
        found: list[events_pb2.BillCycleClosed] = []

        async def collect() -> list[events_pb2.BillCycleClosed] | None:
            while True:
                try:
                    msg = await sub.next_msg(timeout=0.5)
                except nats.errors.TimeoutError:
                    break
                event = events_pb2.BillCycleClosed.FromString(msg.data)
                if event.bill_cycle.account_id == account_id:
                    found.append(event)
            return found if len(found) >= expected else None

        await eventually(collect, timeout=30, what=f"{expected} BillCycleClosed events")
        await sub.unsubscribe()
        return found
    finally:
        await nc.close()


async def test_cycles_open_and_close_as_the_clock_moves(stack: Stack, channels: dict[str, grpc.aio.Channel]) -> None:
    zone = ZoneInfo("America/New_York")
    created = await customer_grpc.CustomerServiceStub(channels["customer"]).CreateAccount(
        customer_pb.CreateAccountRequest(
            request_id=str(uuid.uuid4()),
            account=account_pb2.Account(
                type=account_pb2.ACCOUNT_TYPE_BUSINESS,
                display_name="Hudson Freight LLC",
                currency_code="USD",
                time_zone="America/New_York",
                billing_profile=account_pb2.BillingProfile(
                    bill_cycle_day=31, frequency=account_pb2.BILLING_FREQUENCY_MONTHLY, payment_terms_days=30
                ),
            ),
        )
    )
    account = created.account
    account_id = account.account_id

    # The first cycle opens with the bill unit, from the local day the account was created.
    async def first_cycle() -> list[bill_cycle_pb2.BillCycle] | None:
        found = await list_cycles(channels, account_id)
        return found or None

    (first,) = await eventually(first_cycle, what="the first bill cycle")
    assert (first.sequence, first.status, first.time_zone) == (1, OPEN, "America/New_York")
    local_created = at(account.create_time).astimezone(zone).date()
    assert (first.start_date.year, first.start_date.month, first.start_date.day) == (
        local_created.year,
        local_created.month,
        local_created.day,
    )
    assert at(first.start_time) <= at(account.create_time) < at(first.end_time)
    assert at(first.start_time).astimezone(zone).hour == 0, "cycles start at local midnight"

    # Past its end, but not its late-usage delay: it stays open.
    await advance_to(channels, at(first.end_time) + timedelta(minutes=30))
    await asyncio.sleep(1.5)  # three of the closer's checks
    assert [c.status for c in await list_cycles(channels, account_id)] == [OPEN]

    # Past end + delay: closed, the next one open.
    await advance_to(channels, at(first.end_time) + LATE_USAGE_DELAY + timedelta(seconds=5))

    async def rolled_over() -> list[bill_cycle_pb2.BillCycle] | None:
        found = await list_cycles(channels, account_id)
        return found if len(found) >= 2 else None

    cycles = await eventually(rolled_over, what="the first cycle to close")
    assert len(cycles) == 2
    assert_contiguous(cycles)
    assert cycles[1].bill_cycle_id == first.bill_cycle_id
    second = cycles[0]

    # A jump of about three months: every cycle in between closes, in order, one at a time.
    target = at(second.end_time) + timedelta(days=70)
    moved_to = await advance_to(channels, target)

    async def caught_up() -> list[bill_cycle_pb2.BillCycle] | None:
        found = await list_cycles(channels, account_id)
        newest = found[0]
        return found if at(newest.start_time) <= moved_to - LATE_USAGE_DELAY < at(newest.end_time) else None

    cycles = await eventually(caught_up, what="billing to catch up with the clock")
    assert len(cycles) >= 4
    assert_contiguous(cycles)

    # Each closed cycle was closed once (two replicas ran closers) and announced once.
    events = await closed_events(stack, account_id, len(cycles) - 1)
    assert sorted(e.bill_cycle.sequence for e in events) == list(range(1, len(cycles)))
    by_sequence = {c.sequence: c for c in cycles}
    for event in events:
        assert event.bill_cycle.status == CLOSED
        assert event.next_bill_cycle.sequence == event.bill_cycle.sequence + 1
        assert event.next_bill_cycle.start_time == event.bill_cycle.end_time
        assert event.bill_cycle.bill_cycle_id == by_sequence[event.bill_cycle.sequence].bill_cycle_id
