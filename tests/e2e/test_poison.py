"""Poison and overload across processes: an event no consumer can apply is retried, then goes to
the dead-letter subject while the events after it keep flowing; a usage event a call would refuse
is dead-lettered at once from the NATS usage subject; a client flooding the ingest gets
RESOURCE_EXHAUSTED (the server's bound on concurrent RPCs) instead of the service falling over,
its memory stays bounded, and what was accepted is in the books."""

from __future__ import annotations

import asyncio
import uuid
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import grpc
import nats
import pytest
from evolutivo.admin.v1 import clock_admin_service_pb2 as clock_pb
from evolutivo.admin.v1 import clock_admin_service_pb2_grpc as clock_grpc
from evolutivo.admin.v1 import dead_letter_admin_service_pb2 as dlq_pb
from evolutivo.admin.v1 import dead_letter_admin_service_pb2_grpc as dlq_grpc
from evolutivo.balance.v1 import balance_service_pb2 as balance_pb
from evolutivo.balance.v1 import balance_service_pb2_grpc as balance_grpc
from evolutivo.balance.v1 import ledger_pb2
from evolutivo.billing.v1 import billing_service_pb2 as billing_pb
from evolutivo.billing.v1 import billing_service_pb2_grpc as billing_grpc
from evolutivo.charging.v1 import catalog_pb2, events_pb2, usage_pb2
from evolutivo.charging.v1 import charging_service_pb2 as charging_pb
from evolutivo.charging.v1 import charging_service_pb2_grpc as charging_grpc
from evolutivo.customer.v1 import account_pb2, purchase_pb2
from evolutivo.customer.v1 import customer_service_pb2 as customer_pb
from evolutivo.customer.v1 import customer_service_pb2_grpc as customer_grpc
from evolutivo_runtime.money import to_money
from evolutivo_runtime.testing import eventually
from evolutivo_runtime.timestamps import to_timestamp
from evolutivo_stack.embedded import scratch_dir
from evolutivo_stack.stack import Stack
from reconciliation import reconciled

pytestmark = pytest.mark.e2e

# Charging runs at most this many RPCs at once (the runtime's MAX_CONCURRENT_RPCS setting).
CONCURRENT_RPCS = 4
# A charging replica idles at about 150 MB; a flood must not take it anywhere near this.
RSS_LIMIT_MB = 768


@pytest.fixture(scope="module")
def stack() -> Iterator[Stack]:
    with scratch_dir("poison") as data_dir:
        with Stack(
            data_dir,
            base_port=None,
            clock_mode="controllable",
            services=("customer", "charging", "balance", "billing"),
            env={
                # A poison event is given up on after three deliveries (backoff 2 s, 4 s).
                "BALANCE_CONSUMER_MAX_DELIVER": "3",
                "BILLING_CONSUMER_MAX_DELIVER": "3",
                "CUSTOMER_CONSUMER_MAX_DELIVER": "3",
                "CHARGING_MAX_CONCURRENT_RPCS": str(CONCURRENT_RPCS),
            },
        ) as running:
            yield running


async def clock_now(channels: dict[str, grpc.aio.Channel]) -> datetime:
    admin = clock_grpc.ClockAdminServiceStub(channels["charging"])
    return (await admin.GetClock(clock_pb.GetClockRequest())).now.ToDatetime(tzinfo=UTC)


async def customer_with_usage_offer(channels: dict[str, grpc.aio.Channel], event_type: str) -> str:
    """An EUR account with a purchase rating `event_type`, once charging rates its usage."""
    charging = charging_grpc.ChargingServiceStub(channels["charging"])
    customer = customer_grpc.CustomerServiceStub(channels["customer"])
    code = f"poison_{uuid.uuid4().hex[:8]}"
    draft = await charging.CreateChargeOffer(
        charging_pb.CreateChargeOfferRequest(
            charge_offer=catalog_pb2.ChargeOffer(
                code=code,
                name="Poison",
                currency_code="EUR",
                charges=[
                    catalog_pb2.Charge(
                        code="calls",
                        name="calls",
                        event_type=event_type,
                        per_unit=catalog_pb2.PerUnitPrice(unit_price="0.01"),
                    )
                ],
            )
        )
    )
    await charging.ActivateChargeOffer(
        charging_pb.ActivateChargeOfferRequest(charge_offer_id=draft.charge_offer.charge_offer_id)
    )
    account_id = (
        await customer.CreateAccount(
            customer_pb.CreateAccountRequest(
                request_id=str(uuid.uuid4()),
                account=account_pb2.Account(
                    type=account_pb2.ACCOUNT_TYPE_BUSINESS,
                    display_name="Poison SL",
                    currency_code="EUR",
                    time_zone="Europe/Madrid",
                ),
            )
        )
    ).account.account_id
    await customer.CreatePurchase(
        customer_pb.CreatePurchaseRequest(account_id=account_id, purchase=purchase_pb2.Purchase(charge_offer_code=code))
    )
    probe = usage_pb2.UsageEvent(
        event_id=f"probe-{uuid.uuid4().hex}",
        account_id=account_id,
        event_type=event_type,
        event_time=to_timestamp(await clock_now(channels)),
    )
    await charging.RecordUsage(charging_pb.RecordUsageRequest(event=probe))

    async def rated() -> bool | None:
        (result,) = (await charging.ResubmitUsage(charging_pb.ResubmitUsageRequest(event_ids=[probe.event_id]))).results
        return True if result.status == usage_pb2.USAGE_STATUS_RATED else None

    await eventually(rated, timeout=60, what="charging to rate the account's usage")
    return account_id


async def dead_letters(channel: grpc.aio.Channel) -> list[dlq_pb.DeadLetter]:
    listed = await dlq_grpc.DeadLetterAdminServiceStub(channel).ListDeadLetters(
        dlq_pb.ListDeadLettersRequest(page_size=1000)
    )
    return list(listed.dead_letters)


async def test_a_poison_event_is_dead_lettered_and_the_events_after_it_keep_flowing(
    stack: Stack, channels: dict[str, grpc.aio.Channel]
) -> None:
    account_id = await customer_with_usage_offer(channels, "poison.call")
    charging = charging_grpc.ChargingServiceStub(channels["charging"])
    balance = balance_grpc.BalanceServiceStub(channels["balance"])
    billing = billing_grpc.BillingServiceStub(channels["billing"])

    # A charge in USD for a EUR account, as a broken publisher would send it: balance and billing
    # must refuse it (never half-book it), whatever the retries.
    poison_id = uuid.uuid4()
    poison = events_pb2.ChargesCreated(
        currency_code="USD",
        charges=[
            usage_pb2.RatedCharge(
                charge_id=str(uuid.uuid4()),
                account_id=account_id,
                kind=usage_pb2.CHARGE_KIND_USAGE,
                event_id="poison",
                charge_offer_code="poison",
                charge_code="calls",
                quantity="1",
                amount=to_money(Decimal("9.99"), "USD"),
                event_time=to_timestamp(await clock_now(channels)),
                rate_time=to_timestamp(await clock_now(channels)),
            )
        ],
    )
    nc = await nats.connect(stack.nats_url)
    try:
        await nc.jetstream().publish(
            "evolutivo.charging.v1.charges.created",
            poison.SerializeToString(),
            headers={
                "Nats-Msg-Id": str(poison_id),
                "Evolutivo-Event-Id": str(poison_id),
                "Evolutivo-Event-Type": "evolutivo.charging.v1.ChargesCreated",
                "Evolutivo-Occurred-At": datetime.now(UTC).isoformat(),
            },
        )
    finally:
        await nc.close()

    # Usage after the poison is booked and billed while the poison is still being retried.
    event = usage_pb2.UsageEvent(
        event_id=f"after-poison-{uuid.uuid4().hex}",
        account_id=account_id,
        event_type="poison.call",
        event_time=to_timestamp(await clock_now(channels)),
        quantity="250",
    )
    (charge,) = (await charging.RecordUsage(charging_pb.RecordUsageRequest(event=event))).result.charges

    async def booked() -> bool | None:
        entries = await balance.ListLedgerEntries(
            balance_pb.ListLedgerEntriesRequest(account_id=account_id, types=[ledger_pb2.LEDGER_ENTRY_TYPE_CHARGE])
        )
        return True if any(e.source_id == charge.charge_id for e in entries.entries) else None

    async def unbilled() -> bool | None:
        items = (await billing.ListUnbilledItems(billing_pb.ListUnbilledItemsRequest(account_id=account_id))).items
        return True if any(i.charge_id == charge.charge_id for i in items) else None

    await eventually(booked, timeout=20, what="balance to book the charge after the poison")
    await eventually(unbilled, timeout=20, what="billing to take the charge after the poison")
    assert not [d for d in await dead_letters(channels["balance"]) if d.event_id == str(poison_id)], (
        "the poison was given up on before its retries"
    )

    # Then, its retries spent, the poison is a dead letter of each consumer that could not apply it.
    for service in ("balance", "billing"):

        async def given_up(service: str = service) -> dlq_pb.DeadLetter | None:
            found = [d for d in await dead_letters(channels[service]) if d.event_id == str(poison_id)]
            return found[0] if found else None

        letter = await eventually(given_up, timeout=60, what=f"{service} to dead-letter the poison")
        assert (letter.consumer, letter.original_subject, letter.attempts) == (
            service,
            "evolutivo.charging.v1.charges.created",
            3,
        )
        assert "USD" in letter.error or "currency" in letter.error.lower(), letter.error

    # Nothing of the poison was booked or billed, and the books agree.
    await reconciled(stack)


async def test_an_unusable_usage_message_is_dead_lettered_and_the_stream_keeps_flowing(
    stack: Stack, channels: dict[str, grpc.aio.Channel]
) -> None:
    account_id = await customer_with_usage_offer(channels, "subject.call")
    now = await clock_now(channels)
    good = [
        usage_pb2.UsageEvent(
            event_id=f"subject-{i}-{uuid.uuid4().hex}",
            account_id=account_id,
            event_type="subject.call",
            event_time=to_timestamp(now),
            quantity="3",
        )
        for i in range(20)
    ]
    bad = usage_pb2.UsageEvent(
        event_id=f"subject-bad-{uuid.uuid4().hex}",
        account_id=account_id,
        event_type="subject.call",
        event_time=to_timestamp(now),
        quantity="NaN",
    )
    nc = await nats.connect(stack.nats_url)
    try:
        js = nc.jetstream()
        for event in [*good[:10], bad, *good[10:]]:
            await js.publish(
                "evolutivo.usage.v1.events", event.SerializeToString(), headers={"Nats-Msg-Id": event.event_id}
            )
    finally:
        await nc.close()

    async def letter() -> dlq_pb.DeadLetter | None:
        found = [d for d in await dead_letters(channels["charging"]) if d.event_id == bad.event_id]
        return found[0] if found else None

    dead = await eventually(letter, timeout=30, what="charging to dead-letter the NaN quantity")
    assert (dead.consumer, dead.attempts) == ("charging-usage", 1)
    assert "event.quantity" in dead.error, dead.error
    await reconciled(stack, [e.event_id for e in good])


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError(f"no VmRSS for {pid}")


async def test_a_flood_of_ingest_calls_gets_resource_exhausted_not_a_fallen_service(
    stack: Stack, channels: dict[str, grpc.aio.Channel]
) -> None:
    account_id = await customer_with_usage_offer(channels, "flood.call")
    charging = charging_grpc.ChargingServiceStub(channels["charging"])
    (replica,) = stack.replicas("charging")
    assert replica.pid is not None
    now = await clock_now(channels)

    def batch(n: int) -> charging_pb.RecordUsageBatchRequest:
        return charging_pb.RecordUsageBatchRequest(
            events=[
                usage_pb2.UsageEvent(
                    event_id=f"flood-{uuid.uuid4().hex}",
                    account_id=account_id,
                    event_type="flood.call",
                    event_time=to_timestamp(now),
                    quantity="1",
                )
                for _ in range(n)
            ]
        )

    accepted: list[str] = []
    outcomes: Counter[str] = Counter()
    reasons: Counter[str] = Counter()
    peak = rss_mb(replica.pid)
    idle = peak

    async def one(request: charging_pb.RecordUsageBatchRequest) -> None:
        try:
            response = await charging.RecordUsageBatch(request, timeout=120)
        except grpc.aio.AioRpcError as error:
            outcomes[error.code().name] += 1
            reasons[error.details() or ""] += 1
            return
        outcomes["OK"] += 1
        accepted.extend(r.event_id for r in response.results if r.status == usage_pb2.USAGE_STATUS_RATED)

    async def watch(done: asyncio.Event) -> None:
        nonlocal peak
        while not done.is_set():
            peak = max(peak, rss_mb(replica.pid or 0))
            await asyncio.sleep(0.2)  # sampling interval of the memory watch

    # Three waves of 48 concurrent batches of 500 events: far more than the 4 RPCs it runs at once.
    done = asyncio.Event()
    watcher = asyncio.create_task(watch(done))
    for _ in range(3):
        await asyncio.gather(*(one(batch(500)) for _ in range(48)))
    done.set()
    await watcher
    print(f"flood outcomes {dict(outcomes)} {dict(reasons)}; charging RSS idle {idle:.0f} MB, peak {peak:.0f} MB")

    # Refused fast with RESOURCE_EXHAUSTED, never UNAVAILABLE or an internal error; some went through.
    assert set(outcomes) <= {"OK", "RESOURCE_EXHAUSTED"}, outcomes
    assert outcomes["RESOURCE_EXHAUSTED"] > 0 and outcomes["OK"] > 0, outcomes
    assert replica.is_running and stack.health("charging") == "SERVING"
    assert peak < RSS_LIMIT_MB, f"charging grew to {peak:.0f} MB"
    # A client that backs off is served, and every accepted event is in the books once.
    response = await charging.RecordUsageBatch(batch(10), timeout=60)
    accepted.extend(r.event_id for r in response.results)
    await reconciled(stack, accepted, timeout=120)
