"""Bills across processes: usage rated by charging reaches billing as unbilled items (ChargesCreated
over NATS); moving the shared clock past the cycle's end makes billing's cycle closer (two
replicas) close the cycle and issue its bill, once, with the taxed total and the first number of
the year's series; a late usage event goes on the next bill, labelled with its own period; the
bills are listed, open in the billing summary and announced with BillIssued."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import grpc
import nats
import pytest
from e2e_support import metered_account
from evolutivo.admin.v1 import clock_admin_service_pb2 as clock_pb
from evolutivo.admin.v1 import clock_admin_service_pb2_grpc as clock_grpc
from evolutivo.billing.v1 import bill_cycle_pb2, bill_pb2, events_pb2
from evolutivo.billing.v1 import billing_service_pb2 as billing_pb
from evolutivo.billing.v1 import billing_service_pb2_grpc as billing_grpc
from evolutivo.charging.v1 import charging_service_pb2 as charging_pb
from evolutivo.charging.v1 import charging_service_pb2_grpc as charging_grpc
from evolutivo.charging.v1 import usage_pb2
from evolutivo.customer.v1 import customer_service_pb2 as customer_pb
from evolutivo.customer.v1 import customer_service_pb2_grpc as customer_grpc
from evolutivo.customer.v1 import purchase_pb2
from evolutivo_runtime.money import from_money
from evolutivo_runtime.testing import eventually
from evolutivo_runtime.timestamps import to_timestamp
from evolutivo_stack.embedded import scratch_dir
from evolutivo_stack.stack import Stack
from google.protobuf.duration_pb2 import Duration
from google.protobuf.timestamp_pb2 import Timestamp
from reconciliation import reconciled

pytestmark = pytest.mark.e2e

ISSUED = bill_pb2.BILL_STATUS_ISSUED
CLOSED = bill_cycle_pb2.BILL_CYCLE_STATUS_CLOSED


@pytest.fixture(scope="module")
def stack() -> Iterator[Stack]:
    # Billing's closer checks twice a second with no late-usage delay, so a cycle closes and is
    # billed right after the clock passes its end; two billing replicas race for every bill.
    with scratch_dir("stack") as data_dir:
        with Stack(
            data_dir,
            base_port=None,
            clock_mode="controllable",
            env={
                "BILLING_CYCLE_CHECK_SECONDS": "0.5",
                "BILLING_LATE_USAGE_DELAY_SECONDS": "0",
                "BILLING_TAX_RATES": '{"standard": "0.21", "reduced": "0.10", "exempt": "0"}',
            },
            replicas={"billing": 2},
        ) as running:
            yield running


def at(ts: Timestamp) -> datetime:
    return ts.ToDatetime(tzinfo=UTC)


async def clock_now(channels: dict[str, grpc.aio.Channel]) -> datetime:
    admin = clock_grpc.ClockAdminServiceStub(channels["charging"])
    return at((await admin.GetClock(clock_pb.GetClockRequest())).now)


async def advance_to(channels: dict[str, grpc.aio.Channel], target: datetime) -> None:
    """Moves the shared clock to at least `target` and waits until billing and charging follow."""
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


async def rate(charging: charging_grpc.ChargingServiceAsyncStub, event: usage_pb2.UsageEvent) -> usage_pb2.RatedCharge:
    """Records the event and re-submits it until charging has learnt what it lacked (the account,
    the purchase and the cycle cross NATS); its one charge."""
    await charging.RecordUsage(charging_pb.RecordUsageRequest(event=event))

    async def attempt() -> usage_pb2.UsageResult | None:
        (result,) = (await charging.ResubmitUsage(charging_pb.ResubmitUsageRequest(event_ids=[event.event_id]))).results
        return result if result.status == usage_pb2.USAGE_STATUS_RATED else None

    (charge,) = (await eventually(attempt, what=f"{event.event_id} to be rated")).charges
    return charge


async def unbilled(billing: billing_grpc.BillingServiceAsyncStub, account_id: str, charge_id: str) -> bill_pb2.BillItem:
    """The charge as an unbilled item of the account, once billing has received it."""

    async def received() -> bill_pb2.BillItem | None:
        items = (await billing.ListUnbilledItems(billing_pb.ListUnbilledItemsRequest(account_id=account_id))).items
        return next((i for i in items if i.charge_id == charge_id), None)

    return await eventually(received, what=f"billing to receive charge {charge_id}")


async def bills(billing: billing_grpc.BillingServiceAsyncStub, account_id: str, count: int) -> list[bill_pb2.Bill]:
    """The account's bills, newest first, once there are `count`."""

    async def listed() -> list[bill_pb2.Bill] | None:
        found = (await billing.ListBills(billing_pb.ListBillsRequest(account_id=account_id))).bills
        return list(found) if len(found) >= count else None

    return await eventually(listed, what=f"{count} bills")


async def test_usage_is_billed_when_its_cycle_closes(stack: Stack, channels: dict[str, grpc.aio.Channel]) -> None:
    charging = charging_grpc.ChargingServiceStub(channels["charging"])
    customer = customer_grpc.CustomerServiceStub(channels["customer"])
    billing = billing_grpc.BillingServiceStub(channels["billing"])

    code, account_id = await metered_account(channels, "Facturas SL")
    await customer.CreatePurchase(
        customer_pb.CreatePurchaseRequest(account_id=account_id, purchase=purchase_pb2.Purchase(charge_offer_code=code))
    )
    now = await clock_now(channels)

    # 150 calls at 0.01: 1.50, received by billing as an unbilled item of the open cycle.
    charge = await rate(charging, usage(account_id, "150", now))
    assert from_money(charge.amount) == Decimal("1.50")
    item = await unbilled(billing, account_id, charge.charge_id)
    (first_cycle,) = (await billing.ListBillCycles(billing_pb.ListBillCyclesRequest(account_id=account_id))).bill_cycles
    assert (item.bill_cycle_id, item.late, item.tax_code) == (first_cycle.bill_cycle_id, False, "standard")

    # Past the cycle's end (no late-usage delay): closed and billed, once, by one of the replicas.
    await advance_to(channels, at(first_cycle.end_time) + timedelta(seconds=5))
    (bill,) = await bills(billing, account_id, 1)
    issue_year = bill.issue_date.year
    assert (bill.status, bill.bill_number, bill.bill_cycle_id) == (
        ISSUED,
        f"F-{issue_year}-000001",
        first_cycle.bill_cycle_id,
    )
    assert (bill.issue_date, bill.period_end_date) == (first_cycle.end_date, first_cycle.end_date)
    # 1.50 + 21% (0.315, rounded half up).
    assert (from_money(bill.subtotal), from_money(bill.tax_total), from_money(bill.total)) == (
        Decimal("1.50"),
        Decimal("0.32"),
        Decimal("1.82"),
    )
    full = (await billing.GetBill(billing_pb.GetBillRequest(bill_id=bill.bill_id))).bill
    (line,) = full.lines
    assert (line.charge_offer_code, line.charge_code, line.quantity, list(line.charge_ids)) == (
        code,
        "api_calls",
        "150",
        [charge.charge_id],
    )
    assert (
        list((await billing.ListUnbilledItems(billing_pb.ListUnbilledItemsRequest(account_id=account_id))).items) == []
    )

    # Usage of the billed period arriving now: rated late, billed on the next bill under its own period.
    late = await rate(charging, usage(account_id, "100", now + timedelta(minutes=1)))
    late_item = await unbilled(billing, account_id, late.charge_id)
    cycles = (await billing.ListBillCycles(billing_pb.ListBillCyclesRequest(account_id=account_id))).bill_cycles
    second_cycle = cycles[0]
    assert cycles[1].status == CLOSED
    assert (late_item.bill_cycle_id, late_item.late) == (second_cycle.bill_cycle_id, True)
    assert late_item.period_start_date == first_cycle.start_date

    await advance_to(channels, at(second_cycle.end_time) + timedelta(seconds=5))
    newest, oldest = await bills(billing, account_id, 2)
    assert oldest.bill_id == bill.bill_id
    assert newest.bill_number == f"F-{newest.issue_date.year}-{1 if newest.issue_date.year != issue_year else 2:06d}"
    (late_line,) = newest.lines
    assert (late_line.period_start_date, late_line.period_end_date) == (first_cycle.start_date, first_cycle.end_date)
    assert from_money(newest.total) == Decimal("1.21")

    # Both open in the billing summary; each announced once.
    summary = await billing.GetBillingSummary(billing_pb.GetBillingSummaryRequest(account_id=account_id))
    assert sorted(b.bill_number for b in summary.open_bills) == sorted([bill.bill_number, newest.bill_number])
    nc = await nats.connect(stack.nats_url)
    try:
        sub = await nc.jetstream().subscribe("evolutivo.billing.v1.bill.issued", ordered_consumer=True)
        announced: list[events_pb2.BillIssued] = []

        async def collect() -> list[events_pb2.BillIssued] | None:
            while True:
                try:
                    msg = await sub.next_msg(timeout=0.5)
                except nats.errors.TimeoutError:
                    break
                event = events_pb2.BillIssued.FromString(msg.data)
                if event.bill.account_id == account_id:
                    announced.append(event)
            return announced if len(announced) >= 2 else None

        await eventually(collect, timeout=30, what="two BillIssued events")
        await sub.unsubscribe()
    finally:
        await nc.close()
    assert sorted(e.bill.bill_number for e in announced) == sorted([bill.bill_number, newest.bill_number])
    assert all(list(e.bill.lines[0].charge_ids) == [] for e in announced)

    # The five books agree once the scenario's events have landed (docs/reconciliation.md).
    await reconciled(stack)
