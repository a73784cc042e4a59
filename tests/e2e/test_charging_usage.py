"""Usage rating across processes: charging learns the account and its purchase from customer and
the cycle from billing, over NATS; usage that arrives before them is kept unrated and rated on
ResubmitUsage; graduated tiers count across calls; a replay returns the first charges; once billing
closes a cycle, usage with a time in it is rated into the next cycle, flagged late; the charges
are published on NATS."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import grpc
import nats
import pytest
from evolutivo.admin.v1 import clock_admin_service_pb2 as clock_pb
from evolutivo.admin.v1 import clock_admin_service_pb2_grpc as clock_grpc
from evolutivo.billing.v1 import bill_cycle_pb2
from evolutivo.billing.v1 import billing_service_pb2 as billing_pb
from evolutivo.billing.v1 import billing_service_pb2_grpc as billing_grpc
from evolutivo.charging.v1 import catalog_pb2, events_pb2, usage_pb2
from evolutivo.charging.v1 import charging_service_pb2 as charging_pb
from evolutivo.charging.v1 import charging_service_pb2_grpc as charging_grpc
from evolutivo.customer.v1 import account_pb2, purchase_pb2
from evolutivo.customer.v1 import customer_service_pb2 as customer_pb
from evolutivo.customer.v1 import customer_service_pb2_grpc as customer_grpc
from evolutivo_runtime.money import from_money
from evolutivo_runtime.testing import eventually
from evolutivo_runtime.timestamps import to_timestamp
from evolutivo_stack.embedded import scratch_dir
from evolutivo_stack.stack import Stack
from google.protobuf.duration_pb2 import Duration
from google.protobuf.timestamp_pb2 import Timestamp

pytestmark = pytest.mark.e2e

LATE_USAGE_DELAY = timedelta(seconds=3600)  # billing's default
CLOSED = bill_cycle_pb2.BILL_CYCLE_STATUS_CLOSED


@pytest.fixture(scope="module")
def stack() -> Iterator[Stack]:
    # Billing's cycle closer checks twice a second, so a cycle closes soon after the clock passes it.
    with scratch_dir("stack") as data_dir:
        with Stack(
            data_dir, base_port=None, clock_mode="controllable", env={"BILLING_CYCLE_CHECK_SECONDS": "0.5"}
        ) as running:
            yield running


def at(ts: Timestamp) -> datetime:
    return ts.ToDatetime(tzinfo=UTC)


async def clock_now(channels: dict[str, grpc.aio.Channel]) -> datetime:
    admin = clock_grpc.ClockAdminServiceStub(channels["charging"])
    return at((await admin.GetClock(clock_pb.GetClockRequest())).now)


async def advance_to(channels: dict[str, grpc.aio.Channel], target: datetime) -> None:
    admin = clock_grpc.ClockAdminServiceStub(channels["charging"])
    seconds = max(int((target - await clock_now(channels)).total_seconds()) + 1, 0)
    moved = await admin.AdvanceClock(clock_pb.AdvanceClockRequest(duration=Duration(seconds=seconds)))
    for service in ("billing", "charging"):
        stub = clock_grpc.ClockAdminServiceStub(channels[service])

        async def followed(stub: clock_grpc.ClockAdminServiceAsyncStub = stub) -> bool | None:
            seen = await stub.GetClock(clock_pb.GetClockRequest())
            return True if seen.revision >= moved.revision else None

        await eventually(followed, timeout=10, what=f"{service} to follow the clock")


def usage(account_id: str, quantity: str, at_time: datetime) -> usage_pb2.UsageEvent:
    return usage_pb2.UsageEvent(
        event_id=f"e2e-{uuid.uuid4().hex}",
        account_id=account_id,
        event_type="api.call",
        event_time=to_timestamp(at_time),
        quantity=quantity,
    )


async def rated_eventually(charging: charging_grpc.ChargingServiceAsyncStub, event_id: str) -> usage_pb2.UsageResult:
    """Re-submits a kept event until charging has learnt what it lacked (events cross NATS)."""

    async def attempt() -> usage_pb2.UsageResult | None:
        (result,) = (await charging.ResubmitUsage(charging_pb.ResubmitUsageRequest(event_ids=[event_id]))).results
        return result if result.status == usage_pb2.USAGE_STATUS_RATED else None

    return await eventually(attempt, what=f"{event_id} to be rated")


async def test_usage_is_rated_into_billings_cycles(stack: Stack, channels: dict[str, grpc.aio.Channel]) -> None:
    charging = charging_grpc.ChargingServiceStub(channels["charging"])
    customer = customer_grpc.CustomerServiceStub(channels["customer"])
    billing = billing_grpc.BillingServiceStub(channels["billing"])

    code = f"api_{uuid.uuid4().hex[:8]}"
    draft = await charging.CreateChargeOffer(
        charging_pb.CreateChargeOfferRequest(
            charge_offer=catalog_pb2.ChargeOffer(
                code=code,
                name="API Pro",
                currency_code="EUR",
                charges=[
                    catalog_pb2.Charge(
                        code="api_calls",
                        name="API calls",
                        event_type="api.call",
                        graduated=catalog_pb2.TieredPrice(
                            tiers=[
                                catalog_pb2.Tier(up_to="1000", unit_price="0"),
                                catalog_pb2.Tier(unit_price="0.0015"),
                            ]
                        ),
                    )
                ],
            )
        )
    )
    await charging.ActivateChargeOffer(
        charging_pb.ActivateChargeOfferRequest(charge_offer_id=draft.charge_offer.charge_offer_id)
    )
    account = (
        await customer.CreateAccount(
            customer_pb.CreateAccountRequest(
                request_id=str(uuid.uuid4()),
                account=account_pb2.Account(
                    type=account_pb2.ACCOUNT_TYPE_BUSINESS,
                    display_name="Consumo SL",
                    currency_code="EUR",
                    time_zone="Europe/Madrid",
                ),
            )
        )
    ).account
    await customer.CreatePurchase(
        customer_pb.CreatePurchaseRequest(
            account_id=account.account_id, purchase=purchase_pb2.Purchase(charge_offer_code=code)
        )
    )
    now = await clock_now(channels)

    # Sent at once: charging may not know the account, its purchase or its cycle yet. Kept, and
    # rated on ResubmitUsage once it does.
    first = usage(account.account_id, "1500", now)
    result = (await charging.RecordUsage(charging_pb.RecordUsageRequest(event=first))).result
    assert result.status in (usage_pb2.USAGE_STATUS_RATED, usage_pb2.USAGE_STATUS_UNRATED)
    rated = await rated_eventually(charging, first.event_id)
    (charge,) = rated.charges
    assert from_money(charge.amount) == Decimal("0.75")  # 1000 free, 500 x 0.0015
    (cycle,) = (
        await billing.ListBillCycles(billing_pb.ListBillCyclesRequest(account_id=account.account_id))
    ).bill_cycles
    assert (charge.bill_cycle_id, charge.late) == (cycle.bill_cycle_id, False)

    # A replay returns the first charges; the tiers count across calls.
    assert (await charging.RecordUsage(charging_pb.RecordUsageRequest(event=first))).result == rated
    batch = await charging.RecordUsageBatch(
        charging_pb.RecordUsageBatchRequest(events=[usage(account.account_id, "500", now) for _ in range(2)])
    )
    assert [from_money(r.charges[0].amount) for r in batch.results] == [Decimal("0.75"), Decimal("0.75")]

    # Billing closes the cycle: usage with a time in it lands in the next cycle, flagged late.
    await advance_to(channels, at(cycle.end_time) + LATE_USAGE_DELAY + timedelta(seconds=5))

    async def closed() -> list[bill_cycle_pb2.BillCycle] | None:
        found = (
            await billing.ListBillCycles(billing_pb.ListBillCyclesRequest(account_id=account.account_id))
        ).bill_cycles
        return list(found) if len(found) >= 2 and found[-1].status == CLOSED else None

    cycles = await eventually(closed, what="the first cycle to close")
    following = cycles[0]

    async def late_charge() -> usage_pb2.RatedCharge | None:
        # Until charging has applied BillCycleClosed (it crosses NATS), the first cycle is still
        # open to it and takes the event: send a new one until the next cycle takes it.
        late = usage(account.account_id, "1100", now + timedelta(minutes=1))
        result = (await charging.RecordUsage(charging_pb.RecordUsageRequest(event=late))).result
        if result.status != usage_pb2.USAGE_STATUS_RATED:
            result = await rated_eventually(charging, late.event_id)
        (found,) = result.charges
        return found if found.bill_cycle_id == following.bill_cycle_id else None

    landed = await eventually(late_charge, what="a late event to land in the next cycle")
    assert landed.late
    assert at(landed.event_time) < at(following.start_time)  # its own time is kept
    # The next cycle's tiers start again: 1000 free, 100 x 0.0015.
    assert from_money(landed.amount) == Decimal("0.15")

    # Every charge went out on NATS, with its event id.
    nc = await nats.connect(stack.nats_url)
    try:
        js = nc.jetstream()
        sub = await js.subscribe("evolutivo.charging.v1.charges.created", ordered_consumer=True)
        published: dict[str, str] = {}

        async def collect() -> dict[str, str] | None:
            while True:
                try:
                    msg = await sub.next_msg(timeout=0.5)
                except nats.errors.TimeoutError:
                    break
                for ch in events_pb2.ChargesCreated.FromString(msg.data).charges:
                    published[ch.charge_id] = ch.event_id
            return published if charge.charge_id in published else None

        await eventually(collect, timeout=30, what="ChargesCreated on NATS")
        assert published[charge.charge_id] == first.event_id
        await sub.unsubscribe()
    finally:
        await nc.close()
