"""Fees on the calendar across processes, with two charging replicas (two fee loops, two usage
subscribers): a purchase bought now gets its one-time and in-advance fees once charging knows it
and billing's first cycle; one starting later gets them when the shared clock passes its start
(the fee loop), prorated; when billing closes the cycle, the in-arrears fees of the closed cycle
and the in-advance fees of the next are charged, billed in the next; usage published straight to
the NATS usage subject is rated once; every fee charge goes out in ChargesCreated."""

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
from evolutivo_charging.domain.pricing import prorated_fee
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
ZONE = "Europe/Madrid"
RECURRING, ONE_TIME, USAGE = (
    usage_pb2.CHARGE_KIND_RECURRING,
    usage_pb2.CHARGE_KIND_ONE_TIME,
    usage_pb2.CHARGE_KIND_USAGE,
)


@pytest.fixture(scope="module")
def stack() -> Iterator[Stack]:
    # Billing's closer and charging's fee loop check twice a second; two charging replicas race
    # for every started purchase and share the usage subject's durable consumer.
    with scratch_dir("stack") as data_dir:
        with Stack(
            data_dir,
            base_port=None,
            clock_mode="controllable",
            env={"BILLING_CYCLE_CHECK_SECONDS": "0.5", "CHARGING_FEE_CHECK_SECONDS": "0.5"},
            replicas={"charging": 2},
        ) as running:
            yield running


def at(ts: Timestamp) -> datetime:
    return ts.ToDatetime(tzinfo=UTC)


async def clock_now(channels: dict[str, grpc.aio.Channel]) -> datetime:
    admin = clock_grpc.ClockAdminServiceStub(channels["charging"])
    return at((await admin.GetClock(clock_pb.GetClockRequest())).now)


async def advance_to(stack: Stack, channels: dict[str, grpc.aio.Channel], target: datetime) -> None:
    admin = clock_grpc.ClockAdminServiceStub(channels["charging"])
    seconds = max(int((target - await clock_now(channels)).total_seconds()) + 1, 0)
    moved = await admin.AdvanceClock(clock_pb.AdvanceClockRequest(duration=Duration(seconds=seconds)))
    # Every replica of the services involved follows the clock.
    replicas = [
        (service, index) for service in ("charging", "billing") for index in range(len(stack.replicas(service)))
    ]
    for service, index in replicas:
        async with stack.channel(service, index) as channel:
            stub = clock_grpc.ClockAdminServiceStub(channel)

            async def followed(stub: clock_grpc.ClockAdminServiceAsyncStub = stub) -> bool | None:
                seen = await stub.GetClock(clock_pb.GetClockRequest())
                return True if seen.revision >= moved.revision else None

            await eventually(followed, timeout=10, what=f"{service}[{index}] to follow the clock")


async def charges_of(charging: charging_grpc.ChargingServiceAsyncStub, account_id: str) -> list[usage_pb2.RatedCharge]:
    page = await charging.ListCharges(charging_pb.ListChargesRequest(account_id=account_id, page_size=1000))
    return list(page.charges)


def summary(found: list[usage_pb2.RatedCharge]) -> list[tuple[str, str, int, Decimal, str, bool]]:
    return sorted(
        (ch.purchase_id, ch.charge_code, ch.kind, from_money(ch.amount), ch.bill_cycle_id, ch.late) for ch in found
    )


async def test_fees_follow_the_calendar(stack: Stack, channels: dict[str, grpc.aio.Channel]) -> None:
    charging = charging_grpc.ChargingServiceStub(channels["charging"])
    customer = customer_grpc.CustomerServiceStub(channels["customer"])
    billing = billing_grpc.BillingServiceStub(channels["billing"])

    code = f"host_{uuid.uuid4().hex[:8]}"
    draft = await charging.CreateChargeOffer(
        charging_pb.CreateChargeOfferRequest(
            charge_offer=catalog_pb2.ChargeOffer(
                code=code,
                name="Hosting",
                currency_code="EUR",
                charges=[
                    catalog_pb2.Charge(code="setup", name="Set-up", one_time=catalog_pb2.OneTimeFee(amount="50")),
                    catalog_pb2.Charge(
                        code="monthly",
                        name="Monthly",
                        recurring=catalog_pb2.RecurringFee(
                            amount="31", timing=catalog_pb2.RECURRING_TIMING_IN_ADVANCE, prorate=True
                        ),
                    ),
                    catalog_pb2.Charge(
                        code="support",
                        name="Support",
                        recurring=catalog_pb2.RecurringFee(
                            amount="9.30", timing=catalog_pb2.RECURRING_TIMING_IN_ARREARS, prorate=True
                        ),
                    ),
                    catalog_pb2.Charge(
                        code="calls",
                        name="Calls",
                        event_type="api.call",
                        per_unit=catalog_pb2.PerUnitPrice(unit_price="0.01"),
                    ),
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
                    display_name="Alojamiento SL",
                    currency_code="EUR",
                    time_zone=ZONE,
                ),
            )
        )
    ).account
    account_id = account.account_id
    now = await clock_now(channels)
    first = (
        await customer.CreatePurchase(
            customer_pb.CreatePurchaseRequest(
                account_id=account_id, purchase=purchase_pb2.Purchase(charge_offer_code=code)
            )
        )
    ).purchase
    later_start = now + timedelta(days=3)
    second = (
        await customer.CreatePurchase(
            customer_pb.CreatePurchaseRequest(
                account_id=account_id,
                purchase=purchase_pb2.Purchase(
                    charge_offer_code=code, quantity="2", start_time=to_timestamp(later_start)
                ),
            )
        )
    ).purchase

    async def cycles() -> list[bill_cycle_pb2.BillCycle]:
        found = await billing.ListBillCycles(billing_pb.ListBillCyclesRequest(account_id=account_id))
        return list(reversed(found.bill_cycles))  # oldest first

    c1 = (await eventually(cycles, what="the first cycle"))[0]
    c1_start, c1_end = at(c1.start_time), at(c1.end_time)

    def monthly(fee: str, cycle_start: datetime, cycle_end: datetime, start: datetime | None = None) -> Decimal:
        return prorated_fee(Decimal(fee), cycle_start, cycle_end, start, None, ZONE, 2).amount

    # The purchase bought now: its set-up fee and the first cycle's fee, once charging knows both.
    async def first_fees() -> list[usage_pb2.RatedCharge] | None:
        found = await charges_of(charging, account_id)
        return found if len(found) >= 2 else None

    found = await eventually(first_fees, what="the first purchase's fees")
    assert summary(found) == summary_of(
        [
            (first.purchase_id, "setup", ONE_TIME, Decimal("50.00"), c1.bill_cycle_id, False),
            (
                first.purchase_id,
                "monthly",
                RECURRING,
                monthly("31", c1_start, c1_end, at(first.start_time)),
                c1.bill_cycle_id,
                False,
            ),
        ]
    )

    # The clock passes the second purchase's start: the fee loop (in either replica) charges it.
    await advance_to(stack, channels, later_start + timedelta(seconds=5))

    async def second_fees() -> list[usage_pb2.RatedCharge] | None:
        found = await charges_of(charging, account_id)
        return found if len(found) >= 4 else None

    found = await eventually(second_fees, what="the second purchase's fees")
    assert summary([ch for ch in found if ch.purchase_id == second.purchase_id]) == summary_of(
        [
            (second.purchase_id, "setup", ONE_TIME, Decimal("100.00"), c1.bill_cycle_id, False),
            (
                second.purchase_id,
                "monthly",
                RECURRING,
                monthly("62", c1_start, c1_end, later_start),
                c1.bill_cycle_id,
                False,
            ),
        ]
    )

    # Billing closes the first cycle: its support fees in arrears and the next cycle's fees in
    # advance, all billed in the next cycle.
    await advance_to(stack, channels, c1_end + LATE_USAGE_DELAY + timedelta(seconds=5))

    async def closed() -> list[bill_cycle_pb2.BillCycle] | None:
        found = await cycles()
        return found if len(found) >= 2 and found[0].status == CLOSED else None

    c2 = (await eventually(closed, what="the first cycle to close"))[1]
    c2_start, c2_end = at(c2.start_time), at(c2.end_time)

    async def close_fees() -> list[usage_pb2.RatedCharge] | None:
        found = await charges_of(charging, account_id)
        return found if len(found) >= 8 else None

    found = await eventually(close_fees, what="the fees of the close")
    after_close = [ch for ch in found if ch.bill_cycle_id == c2.bill_cycle_id]
    assert summary(after_close) == summary_of(
        [
            (first.purchase_id, "support", RECURRING, Decimal("9.30"), c2.bill_cycle_id, False),
            (
                second.purchase_id,
                "support",
                RECURRING,
                prorated_fee(Decimal("18.60"), c1_start, c1_end, later_start, None, ZONE, 2).amount,
                c2.bill_cycle_id,
                False,
            ),
            (first.purchase_id, "monthly", RECURRING, monthly("31", c2_start, c2_end), c2.bill_cycle_id, False),
            (second.purchase_id, "monthly", RECURRING, monthly("62", c2_start, c2_end), c2.bill_cycle_id, False),
        ]
    )

    # Usage published straight to the NATS subject, twice: rated once, into the open cycle.
    nc = await nats.connect(stack.nats_url)
    try:
        js = nc.jetstream()

        async def stream_ready() -> bool | None:
            return True if await js.stream_info("EVOLUTIVO_USAGE") else None

        await eventually(stream_ready, what="charging to declare the usage stream")
        event = usage_pb2.UsageEvent(
            event_id=f"e2e-{uuid.uuid4().hex}",
            account_id=account_id,
            event_type="api.call",
            event_time=to_timestamp(await clock_now(channels)),
            quantity="150",
        )
        await js.publish(
            "evolutivo.usage.v1.events", event.SerializeToString(), headers={"Nats-Msg-Id": event.event_id}
        )
        await js.publish(
            "evolutivo.usage.v1.events", event.SerializeToString(), headers={"Nats-Msg-Id": f"{event.event_id}-again"}
        )

        async def usage_charges() -> list[usage_pb2.RatedCharge] | None:
            found = [ch for ch in await charges_of(charging, account_id) if ch.kind == USAGE]
            return found or None

        # Both purchases' offers rate api.call: a charge for each.
        rated = await eventually(usage_charges, what="usage from NATS to be rated")
        assert sorted((ch.purchase_id, ch.event_id, from_money(ch.amount), ch.bill_cycle_id) for ch in rated) == sorted(
            (p.purchase_id, event.event_id, Decimal("1.50"), c2.bill_cycle_id) for p in (first, second)
        )
        (result,) = (
            await charging.RecordUsageBatch(charging_pb.RecordUsageBatchRequest(events=[event]))
        ).results  # the same id over gRPC: the stored result
        assert sorted(ch.charge_id for ch in result.charges) == sorted(ch.charge_id for ch in rated)

        # Every fee charge went out on NATS, once.
        sub = await js.subscribe("evolutivo.charging.v1.charges.created", ordered_consumer=True)
        published: dict[str, int] = {}
        fee_ids = {ch.charge_id for ch in found}

        async def collect() -> bool | None:
            while True:
                try:
                    msg = await sub.next_msg(timeout=0.5)
                except nats.errors.TimeoutError:
                    break
                for ch in events_pb2.ChargesCreated.FromString(msg.data).charges:
                    published[ch.charge_id] = published.get(ch.charge_id, 0) + 1
            return True if fee_ids <= published.keys() else None

        await eventually(collect, timeout=30, what="the fee charges on NATS")
        assert all(published[i] == 1 for i in fee_ids)
        await sub.unsubscribe()
    finally:
        await nc.close()
    # Nothing was charged twice by the two replicas.
    final = await charges_of(charging, account_id)
    assert len(final) == 10
    keys = [(ch.purchase_id, ch.charge_code, ch.kind, ch.event_time.ToDatetime()) for ch in final]
    assert len(keys) == len(set(keys))


def summary_of(rows: list[tuple[str, str, int, Decimal, str, bool]]) -> list[tuple[str, str, int, Decimal, str, bool]]:
    return sorted(rows)
