"""Rerating across processes over real gRPC: usage rated with a price that turns out wrong is
rated again after a backdated catalog fix; RerateUsage makes a reversing charge naming each wrong
one and a new charge, never an edit; balance books both from ChargesCreated, so the account owes
what the fixed catalog says; a retry returns the first run and another run changes nothing."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import grpc
import pytest
from evolutivo.admin.v1 import clock_admin_service_pb2 as clock_pb
from evolutivo.admin.v1 import clock_admin_service_pb2_grpc as clock_grpc
from evolutivo.balance.v1 import balance_service_pb2 as balance_pb
from evolutivo.balance.v1 import balance_service_pb2_grpc as balance_grpc
from evolutivo.charging.v1 import catalog_pb2, usage_pb2
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
from reconciliation import reconciled

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def stack() -> Iterator[Stack]:
    # The services rerating involves (the ERP gateway has no part in it).
    with scratch_dir("stack") as data_dir:
        with Stack(
            data_dir, base_port=None, clock_mode="controllable", services=("customer", "charging", "balance", "billing")
        ) as running:
            yield running


async def clock_now(channels: dict[str, grpc.aio.Channel]) -> datetime:
    admin = clock_grpc.ClockAdminServiceStub(channels["charging"])
    return (await admin.GetClock(clock_pb.GetClockRequest())).now.ToDatetime(tzinfo=UTC)


def offer(code: str, unit_price: str, valid_from: datetime) -> catalog_pb2.ChargeOffer:
    return catalog_pb2.ChargeOffer(
        code=code,
        name="API Pro",
        currency_code="EUR",
        valid_from=to_timestamp(valid_from),
        charges=[
            catalog_pb2.Charge(
                code="api_calls",
                name="API calls",
                event_type="api.call",
                per_unit=catalog_pb2.PerUnitPrice(unit_price=unit_price),
            )
        ],
    )


async def activate(charging: charging_grpc.ChargingServiceAsyncStub, draft: catalog_pb2.ChargeOffer) -> None:
    created = await charging.CreateChargeOffer(
        charging_pb.CreateChargeOfferRequest(charge_offer=draft, request_id=str(uuid.uuid4()))
    )
    await charging.ActivateChargeOffer(
        charging_pb.ActivateChargeOfferRequest(charge_offer_id=created.charge_offer.charge_offer_id)
    )


async def test_rerating_after_a_backdated_fix_corrects_the_charges_and_the_balance(
    stack: Stack, channels: dict[str, grpc.aio.Channel]
) -> None:
    charging = charging_grpc.ChargingServiceStub(channels["charging"])
    customer = customer_grpc.CustomerServiceStub(channels["customer"])
    balance = balance_grpc.BalanceServiceStub(channels["balance"])
    start = await clock_now(channels)
    code = f"api_{uuid.uuid4().hex[:8]}"
    # Priced at 0.02 by mistake: it should have been 0.01 all along.
    await activate(charging, offer(code, "0.02", start - timedelta(days=1)))

    account = (
        await customer.CreateAccount(
            customer_pb.CreateAccountRequest(
                request_id=str(uuid.uuid4()),
                account=account_pb2.Account(
                    type=account_pb2.ACCOUNT_TYPE_BUSINESS,
                    display_name="Rerating SL",
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
    used_at = await clock_now(channels) + timedelta(seconds=1)
    events = [
        usage_pb2.UsageEvent(
            event_id=f"e2e-{uuid.uuid4().hex}",
            account_id=account.account_id,
            event_type="api.call",
            event_time=to_timestamp(used_at),
            quantity=quantity,
        )
        for quantity in ("100", "250", "33")
    ]

    async def rated() -> list[usage_pb2.UsageResult] | None:
        # Until charging has learnt the account, its purchase and its cycle (over NATS) the events
        # are kept unrated; resubmitted until they are rated.
        await charging.RecordUsageBatch(charging_pb.RecordUsageBatchRequest(events=events))
        results = (
            await charging.ResubmitUsage(charging_pb.ResubmitUsageRequest(event_ids=[e.event_id for e in events]))
        ).results
        return list(results) if all(r.status == usage_pb2.USAGE_STATUS_RATED for r in results) else None

    original = await eventually(rated, what="the usage to be rated")
    assert [from_money(r.charges[0].amount) for r in original] == [Decimal("2.00"), Decimal("5.00"), Decimal("0.66")]

    async def owed(amount: Decimal) -> Decimal | None:
        got = await balance.GetBalance(balance_pb.GetBalanceRequest(account_id=account.account_id))
        return amount if from_money(got.total) == amount else None

    await eventually(lambda: owed(Decimal("7.66")), what="balance to book the charges")

    # The fix: version 2 at 0.01, in force from before the usage.
    await activate(charging, offer(code, "0.01", used_at - timedelta(hours=1)))
    request = charging_pb.RerateUsageRequest(
        account_id=account.account_id,
        start_time=to_timestamp(used_at - timedelta(minutes=5)),
        end_time=to_timestamp(used_at + timedelta(minutes=5)),
        charge_offer_code=code,
        request_id=str(uuid.uuid4()),
    )
    run = (await charging.RerateUsage(request)).rerate_run
    assert (run.events_rerated, run.events_changed, run.charges_reversed, run.charges_created) == (3, 3, 3, 3)
    assert from_money(run.net_amount) == Decimal("-3.83")
    # A retry is the same run.
    assert (await charging.RerateUsage(request)).rerate_run == run

    charges = (await charging.ListCharges(charging_pb.ListChargesRequest(account_id=account.account_id))).charges
    originals = {r.charges[0].charge_id: r.charges[0] for r in original}
    made = [ch for ch in charges if ch.rerate_run_id == run.rerate_run_id]
    reversals = [ch for ch in made if ch.kind == usage_pb2.CHARGE_KIND_REVERSAL]
    assert {ch.reverses_charge_id for ch in reversals} == set(originals)
    assert all(from_money(ch.amount) == -from_money(originals[ch.reverses_charge_id].amount) for ch in reversals)
    fresh = [ch for ch in made if ch.kind == usage_pb2.CHARGE_KIND_USAGE]
    assert sorted(from_money(ch.amount) for ch in fresh) == [Decimal("0.33"), Decimal("1.00"), Decimal("2.50")]
    assert {ch.charge_offer_version for ch in fresh} == {2}
    # The originals are still listed unchanged.
    assert {ch.charge_id: ch for ch in charges if ch.charge_id in originals} == originals

    # Balance booked the reversals and the new charges.
    await eventually(lambda: owed(Decimal("3.83")), what="balance to book the corrections")
    # Nothing is left to correct.
    again = (
        await charging.RerateUsage(
            charging_pb.RerateUsageRequest(
                account_id=account.account_id,
                start_time=request.start_time,
                end_time=request.end_time,
                request_id=str(uuid.uuid4()),
            )
        )
    ).rerate_run
    assert (again.events_rerated, again.events_changed, again.charges_created) == (3, 0, 0)

    # The five books agree once the scenario's events have landed (docs/reconciliation.md).
    await reconciled(stack)
