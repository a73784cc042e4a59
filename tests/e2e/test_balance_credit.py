"""Credit limits across processes: a limit set over gRPC, usage rated by charging booked by balance
over NATS until the group goes over its limit; the group then shows no available credit and
CreditLimitExceeded is on balance's stream, once. A temporary raise brings it back within (restored)
and, when the shared clock passes its expiry, balance's expiry loop publishes the limit exceeded
again. (Charging's refusal of usage over the limit is charging's to test.)"""

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
from evolutivo.balance.v1 import balance_pb2, events_pb2, ledger_pb2
from evolutivo.balance.v1 import balance_service_pb2 as balance_pb
from evolutivo.balance.v1 import balance_service_pb2_grpc as balance_grpc
from evolutivo.charging.v1 import catalog_pb2, usage_pb2
from evolutivo.charging.v1 import charging_service_pb2 as charging_pb
from evolutivo.charging.v1 import charging_service_pb2_grpc as charging_grpc
from evolutivo.customer.v1 import account_pb2, purchase_pb2
from evolutivo.customer.v1 import customer_service_pb2 as customer_pb
from evolutivo.customer.v1 import customer_service_pb2_grpc as customer_grpc
from evolutivo_runtime.money import from_money, to_money
from evolutivo_runtime.testing import eventually
from evolutivo_runtime.timestamps import to_timestamp
from evolutivo_stack.embedded import scratch_dir
from evolutivo_stack.stack import Stack
from google.protobuf import field_mask_pb2
from google.protobuf.duration_pb2 import Duration
from google.protobuf.message import Message

pytestmark = pytest.mark.e2e

EXCEEDED = "evolutivo.balance.v1.credit_limit.exceeded"
RESTORED = "evolutivo.balance.v1.credit_limit.restored"


@pytest.fixture(scope="module")
def stack() -> Iterator[Stack]:
    # The expiry loop checks twice a second, so a passed expiry is published soon after.
    with scratch_dir("stack") as data_dir:
        with Stack(
            data_dir, base_port=None, clock_mode="controllable", env={"BALANCE_CREDIT_EXPIRY_CHECK_SECONDS": "0.5"}
        ) as running:
            yield running


async def balance_clock(channels: dict[str, grpc.aio.Channel]) -> datetime:
    admin = clock_grpc.ClockAdminServiceStub(channels["balance"])
    return (await admin.GetClock(clock_pb.GetClockRequest())).now.ToDatetime(tzinfo=UTC)


async def advance(channels: dict[str, grpc.aio.Channel], by: timedelta) -> None:
    """Moves the shared clock and waits until balance has applied it."""
    admin = clock_grpc.ClockAdminServiceStub(channels["balance"])
    moved = await admin.AdvanceClock(clock_pb.AdvanceClockRequest(duration=Duration(seconds=int(by.total_seconds()))))

    async def followed() -> bool | None:
        return True if (await admin.GetClock(clock_pb.GetClockRequest())).revision >= moved.revision else None

    await eventually(followed, timeout=10, what="balance to follow the clock")


async def published(stack: Stack, subject: str, group_id: str, count: int) -> list[Message]:
    """The events of `subject` for the group on balance's stream, once `count` are there."""
    message_type = events_pb2.CreditLimitExceeded if subject == EXCEEDED else events_pb2.CreditLimitRestored
    nc = await nats.connect(stack.nats_url)
    try:

        async def collect() -> list[Message] | None:
            sub = await nc.jetstream().subscribe(subject, ordered_consumer=True)
            found: list[Message] = []
            try:
                while True:
                    try:
                        msg = await sub.next_msg(timeout=0.5)
                    except nats.errors.TimeoutError:
                        break
                    event = message_type.FromString(msg.data)
                    if event.balance_group.balance_group_id == group_id:
                        found.append(event)
            finally:
                await sub.unsubscribe()
            return found if len(found) >= count else None

        return await eventually(collect, timeout=30, what=f"{count} {subject} for the group")
    finally:
        await nc.close()


async def test_usage_over_the_limit_shows_no_available_credit_and_publishes_exceeded_once(
    stack: Stack, channels: dict[str, grpc.aio.Channel]
) -> None:
    charging = charging_grpc.ChargingServiceStub(channels["charging"])
    customer = customer_grpc.CustomerServiceStub(channels["customer"])
    balance = balance_grpc.BalanceServiceStub(channels["balance"])

    code = f"calls_{uuid.uuid4().hex[:8]}"
    draft = await charging.CreateChargeOffer(
        charging_pb.CreateChargeOfferRequest(
            charge_offer=catalog_pb2.ChargeOffer(
                code=code,
                name="Calls",
                currency_code="EUR",
                charges=[
                    catalog_pb2.Charge(
                        code="call", name="Call", event_type="call.made", flat=catalog_pb2.FlatPrice(amount="0.70")
                    )
                ],
            )
        )
    )
    await charging.ActivateChargeOffer(
        charging_pb.ActivateChargeOfferRequest(charge_offer_id=draft.charge_offer.charge_offer_id)
    )
    created = await customer.CreateAccount(
        customer_pb.CreateAccountRequest(
            request_id=str(uuid.uuid4()),
            account=account_pb2.Account(
                type=account_pb2.ACCOUNT_TYPE_BUSINESS,
                display_name="Crédito Limitado SL",
                currency_code="EUR",
                time_zone="Europe/Madrid",
            ),
        )
    )
    account_id = created.account.account_id
    await customer.CreatePurchase(
        customer_pb.CreatePurchaseRequest(account_id=account_id, purchase=purchase_pb2.Purchase(charge_offer_code=code))
    )

    async def known() -> balance_pb.GetBalanceResponse:
        return await balance.GetBalance(balance_pb.GetBalanceRequest(account_id=account_id))

    (group,) = (await eventually(known, what="balance to know the account")).balance_groups
    group_id = group.balance_group_id
    limited = await balance.SetCreditLimit(
        balance_pb.SetCreditLimitRequest(
            balance_group_id=group_id,
            credit_policy=balance_pb2.CreditPolicy(credit_limit=to_money(Decimal("1.00"), "EUR")),
            request_id=str(uuid.uuid4()),
        )
    )
    assert from_money(limited.balance_group.available_credit) == Decimal("1.00")

    async def rated(event: usage_pb2.UsageEvent) -> usage_pb2.UsageResult:
        async def attempt() -> usage_pb2.UsageResult | None:
            first = await charging.RecordUsage(charging_pb.RecordUsageRequest(event=event))
            if first.result.status == usage_pb2.USAGE_STATUS_RATED:
                return first.result
            (again,) = (
                await charging.ResubmitUsage(charging_pb.ResubmitUsageRequest(event_ids=[event.event_id]))
            ).results
            return again if again.status == usage_pb2.USAGE_STATUS_RATED else None

        return await eventually(attempt, what="the usage to be rated")

    async def booked(count: int) -> balance_pb2.BalanceGroup:
        async def probe() -> balance_pb2.BalanceGroup | None:
            listed = await balance.ListLedgerEntries(
                balance_pb.ListLedgerEntriesRequest(account_id=account_id, types=[ledger_pb2.LEDGER_ENTRY_TYPE_CHARGE])
            )
            if len(listed.entries) < count:
                return None
            return (
                await balance.GetBalanceGroup(balance_pb.GetBalanceGroupRequest(balance_group_id=group_id))
            ).balance_group

        return await eventually(probe, what=f"balance to book {count} charges")

    # Usage until the group is over its limit: 0.70 is within, 1.40 is over.
    for n in (1, 2):
        now = await balance_clock(channels)
        event = usage_pb2.UsageEvent(
            event_id=f"e2e-{uuid.uuid4().hex}",
            account_id=account_id,
            event_type="call.made",
            event_time=to_timestamp(now),
            quantity="1",
        )
        await rated(event)
        shown = await booked(n)
        assert shown.credit_limit_exceeded == (n == 2)
    assert (from_money(shown.balance), from_money(shown.available_credit)) == (Decimal("1.40"), Decimal(0))
    assert shown.credit_state_version == 1
    (exceeded,) = await published(stack, EXCEEDED, group_id, 1)
    assert isinstance(exceeded, events_pb2.CreditLimitExceeded)
    assert (from_money(exceeded.credit_limit), exceeded.credit_state_version) == (Decimal("1.00"), 1)
    assert from_money(exceeded.balance_group.balance) == Decimal("1.40")

    # A temporary raise for an hour: back within the limit at once; over it again when it expires.
    now = await balance_clock(channels)
    raised = await balance.SetCreditLimit(
        balance_pb.SetCreditLimitRequest(
            balance_group_id=group_id,
            credit_policy=balance_pb2.CreditPolicy(
                temporary_credit_limit=to_money(Decimal("5.00"), "EUR"),
                temporary_limit_expire_time=to_timestamp(now + timedelta(hours=1)),
            ),
            update_mask=field_mask_pb2.FieldMask(paths=["temporary_credit_limit"]),
        )
    )
    assert not raised.balance_group.credit_limit_exceeded
    assert from_money(raised.balance_group.available_credit) == Decimal("3.60")
    (restored,) = await published(stack, RESTORED, group_id, 1)
    assert isinstance(restored, events_pb2.CreditLimitRestored) and restored.credit_state_version == 2

    await advance(channels, timedelta(hours=1, seconds=1))
    again = await published(stack, EXCEEDED, group_id, 2)
    assert [e.credit_state_version for e in again if isinstance(e, events_pb2.CreditLimitExceeded)] == [1, 3]
    after = (await balance.GetBalanceGroup(balance_pb.GetBalanceGroupRequest(balance_group_id=group_id))).balance_group
    assert not after.credit_policy.HasField("temporary_credit_limit"), "the loop dropped the expired limit"
    assert after.credit_limit_exceeded and after.credit_state_version == 3
