"""Collections across processes, with the shared clock moved forward four times: a bill goes
overdue and its account enters the scenario (reminder at +3), the late fee at +10 is debited in
balance and appears on the next bill, the suspension at +20 suspends the account in customer (and
charging refuses its usage), and a payment in balance closes the case and reinstates the account.
Billing runs two replicas: each action happens once."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from zoneinfo import ZoneInfo

import grpc
import pytest
from e2e_support import advance_to, at, case_when, clock_now
from evolutivo.balance.v1 import balance_service_pb2 as balance_pb
from evolutivo.balance.v1 import balance_service_pb2_grpc as balance_grpc
from evolutivo.balance.v1 import payment_pb2
from evolutivo.billing.v1 import bill_pb2
from evolutivo.billing.v1 import billing_service_pb2 as billing_pb
from evolutivo.billing.v1 import billing_service_pb2_grpc as billing_grpc
from evolutivo.billing.v1 import collections_pb2 as cpb
from evolutivo.billing.v1 import collections_service_pb2 as collections_pb
from evolutivo.billing.v1 import collections_service_pb2_grpc as collections_grpc
from evolutivo.charging.v1 import catalog_pb2, charging_account_pb2, usage_pb2
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
from reconciliation import reconciled

pytestmark = pytest.mark.e2e

MADRID = ZoneInfo("Europe/Madrid")
DONE = cpb.COLLECTIONS_ACTION_STATE_DONE
SCHEDULED = cpb.COLLECTIONS_ACTION_STATE_SCHEDULED


@pytest.fixture(scope="module")
def stack() -> Iterator[Stack]:
    # Billing closes cycles and runs collections twice a second, in two replicas. Untaxed (the
    # default rates), so balance's total and the bills agree to the cent.
    with scratch_dir("stack") as data_dir:
        with Stack(
            data_dir,
            base_port=None,
            clock_mode="controllable",
            env={
                "BILLING_CYCLE_CHECK_SECONDS": "0.5",
                "BILLING_LATE_USAGE_DELAY_SECONDS": "0",
                "BILLING_COLLECTIONS_CHECK_SECONDS": "0.5",
            },
            replicas={"billing": 2},
        ) as running:
            yield running


def madrid(day: date, hour: int = 9) -> datetime:
    return datetime(day.year, day.month, day.day, hour, tzinfo=MADRID).astimezone(UTC)


async def test_dunning_from_overdue_bill_to_reinstatement(stack: Stack, channels: dict[str, grpc.aio.Channel]) -> None:
    customer = customer_grpc.CustomerServiceStub(channels["customer"])
    charging = charging_grpc.ChargingServiceStub(channels["charging"])
    balance = balance_grpc.BalanceServiceStub(channels["balance"])
    billing = billing_grpc.BillingServiceStub(channels["billing"])
    collections = collections_grpc.CollectionsServiceStub(channels["billing"])

    # The scenario of the issue: reminder at +3, late fee at +10, suspension at +20, write-off at +90.
    await collections.CreateCollectionsScenario(
        collections_pb.CreateCollectionsScenarioRequest(
            scenario=cpb.CollectionsScenario(
                display_name="Standard",
                steps=[
                    cpb.CollectionsStep(days_past_due=3, action=cpb.COLLECTIONS_ACTION_TYPE_REMINDER_EMAIL),
                    cpb.CollectionsStep(
                        days_past_due=10,
                        action=cpb.COLLECTIONS_ACTION_TYPE_LATE_FEE,
                        late_fee=cpb.LateFeeRule(fixed_amounts=[to_money(Decimal("5.00"), "EUR")]),
                    ),
                    cpb.CollectionsStep(days_past_due=20, action=cpb.COLLECTIONS_ACTION_TYPE_SUSPEND),
                    cpb.CollectionsStep(days_past_due=90, action=cpb.COLLECTIONS_ACTION_TYPE_WRITE_OFF),
                ],
            ),
            request_id=str(uuid.uuid4()),
        )
    )

    code = f"api_{uuid.uuid4().hex[:8]}"
    draft = await charging.CreateChargeOffer(
        charging_pb.CreateChargeOfferRequest(
            charge_offer=catalog_pb2.ChargeOffer(
                code=code,
                name="API Metered",
                currency_code="EUR",
                charges=[
                    catalog_pb2.Charge(
                        code="api_calls",
                        name="API calls",
                        event_type="api.call",
                        per_unit=catalog_pb2.PerUnitPrice(unit_price="0.10"),
                        tax_code="standard",
                    )
                ],
            )
        )
    )
    await charging.ActivateChargeOffer(
        charging_pb.ActivateChargeOfferRequest(charge_offer_id=draft.charge_offer.charge_offer_id)
    )
    # Billed on tomorrow's day of month (a short first cycle), 14 days to pay.
    tomorrow = (await clock_now(channels)).astimezone(MADRID).date() + timedelta(days=1)
    account_id = (
        await customer.CreateAccount(
            customer_pb.CreateAccountRequest(
                request_id=str(uuid.uuid4()),
                account=account_pb2.Account(
                    type=account_pb2.ACCOUNT_TYPE_BUSINESS,
                    display_name="Morosos SL",
                    currency_code="EUR",
                    time_zone="Europe/Madrid",
                    billing_profile=account_pb2.BillingProfile(
                        bill_cycle_day=tomorrow.day,
                        frequency=account_pb2.BILLING_FREQUENCY_MONTHLY,
                        payment_terms_days=14,
                    ),
                ),
            )
        )
    ).account.account_id
    await customer.CreatePurchase(
        customer_pb.CreatePurchaseRequest(account_id=account_id, purchase=purchase_pb2.Purchase(charge_offer_code=code))
    )

    async def record(quantity: str) -> usage_pb2.UsageResult:
        event = usage_pb2.UsageEvent(
            event_id=f"e2e-{uuid.uuid4().hex}",
            account_id=account_id,
            event_type="api.call",
            event_time=to_timestamp(await clock_now(channels)),
            quantity=quantity,
        )
        await charging.RecordUsage(charging_pb.RecordUsageRequest(event=event))

        async def attempt() -> usage_pb2.UsageResult | None:
            (result,) = (
                await charging.ResubmitUsage(charging_pb.ResubmitUsageRequest(event_ids=[event.event_id]))
            ).results
            return result if result.status != usage_pb2.USAGE_STATUS_UNRATED else None

        return await eventually(attempt, what=f"{event.event_id} to be rated or refused")

    rated = await record("100")  # 10.00
    assert rated.status == usage_pb2.USAGE_STATUS_RATED

    async def first_cycle() -> billing_pb.ListBillCyclesResponse | None:
        found = await billing.ListBillCycles(billing_pb.ListBillCyclesRequest(account_id=account_id))
        return found if found.bill_cycles else None

    (cycle,) = (await eventually(first_cycle, what="the first cycle")).bill_cycles
    issue = date(cycle.end_date.year, cycle.end_date.month, cycle.end_date.day)
    due = issue + timedelta(days=14)

    async def balance_total() -> Decimal:
        return from_money((await balance.GetBalance(balance_pb.GetBalanceRequest(account_id=account_id))).total)

    async def charged() -> bool | None:
        return True if await balance_total() == Decimal("10.00") else None

    await eventually(charged, what="balance to book the charge")

    # Billing too must hold the charge before the clock jumps past the cycle's end: one reaching it
    # after the cycle closed goes, late, into the next cycle, and the first bill is an empty one.
    async def billed_later() -> bool | None:
        found = await billing.ListUnbilledItems(billing_pb.ListUnbilledItemsRequest(account_id=account_id))
        return True if {i.charge_id for i in found.items} >= {c.charge_id for c in rated.charges} else None

    await eventually(billed_later, what="billing to receive the charge")

    # Move 1, to day 3 past due: the bill was issued and went overdue, the case opened, the reminder went.
    await advance_to(channels, madrid(due + timedelta(days=3)))
    case = await case_when(collections, account_id, "the reminder", 1)
    assert case.state == cpb.COLLECTIONS_CASE_STATE_OPEN
    assert from_money(case.overdue_amount) == Decimal("10.00")
    assert [a.state for a in case.actions] == [DONE, SCHEDULED, SCHEDULED, SCHEDULED]

    # Move 2, to day 10: the late fee, a LATE_FEE debit in balance and an unbilled item in billing.
    await advance_to(channels, madrid(due + timedelta(days=10)))
    case = await case_when(collections, account_id, "the late fee", 2)
    assert from_money(case.actions[1].amount) == Decimal("5.00")

    async def fee_entry() -> balance_pb.ListLedgerEntriesResponse | None:
        found = await balance.ListLedgerEntries(balance_pb.ListLedgerEntriesRequest(account_id=account_id))
        return found if any(e.reason_code == "LATE_FEE" for e in found.entries) else None

    entries = (await eventually(fee_entry, what="the late fee in balance")).entries
    assert [from_money(e.amount) for e in entries if e.reason_code == "LATE_FEE"] == [Decimal("5.00")]

    # Move 3, past the next cycle's end: the next bill carries the late fee.
    cycles = (await billing.ListBillCycles(billing_pb.ListBillCyclesRequest(account_id=account_id))).bill_cycles
    await advance_to(channels, at(cycles[0].end_time) + timedelta(minutes=1))

    async def two_bills() -> list[bill_pb2.Bill] | None:
        found = (await billing.ListBills(billing_pb.ListBillsRequest(account_id=account_id))).bills
        return list(found) if len(found) >= 2 else None

    newest, oldest = await eventually(two_bills, what="the next bill")
    (line,) = newest.lines
    assert (line.charge_code, from_money(line.amount), from_money(newest.total)) == (
        "late_fee",
        Decimal("5.00"),
        Decimal("5.00"),
    )

    # Move 4, to day 20: suspended through customer; charging refuses the account's usage.
    await advance_to(channels, madrid(due + timedelta(days=20)))
    await case_when(collections, account_id, "the suspension", 3)
    account = (await customer.GetAccount(customer_pb.GetAccountRequest(account_id=account_id))).account
    assert account.status == account_pb2.ACCOUNT_STATUS_SUSPENDED
    assert account.last_status_change.actor == account_pb2.STATUS_ACTOR_COLLECTIONS

    async def charging_knows() -> bool | None:
        got = await charging.GetChargingAccount(charging_pb.GetChargingAccountRequest(account_id=account_id))
        suspended = charging_account_pb2.CHARGING_ACCOUNT_STATUS_SUSPENDED
        return True if got.charging_account.status == suspended else None

    await eventually(charging_knows, what="charging to learn of the suspension")
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await record("1")
    assert refused.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "suspended" in (refused.value.details() or "")

    # Paid in full (both bills): the case closes and the account is reinstated.
    paid = from_money(oldest.total) + from_money(newest.total)
    await balance.RecordPayment(
        balance_pb.RecordPaymentRequest(
            account_id=account_id,
            amount=to_money(paid, "EUR"),
            method=payment_pb2.PAYMENT_METHOD_TYPE_BANK_TRANSFER,
            reference=f"e2e-{uuid.uuid4().hex[:10]}",
            request_id=str(uuid.uuid4()),
        )
    )
    case = await case_when(collections, account_id, "the reinstatement", 4)
    assert (case.state, case.close_reason) == (cpb.COLLECTIONS_CASE_STATE_CLOSED, cpb.CASE_CLOSE_REASON_PAID)
    assert [(a.type, a.state) for a in case.actions] == [
        (cpb.COLLECTIONS_ACTION_TYPE_REMINDER_EMAIL, DONE),
        (cpb.COLLECTIONS_ACTION_TYPE_LATE_FEE, DONE),
        (cpb.COLLECTIONS_ACTION_TYPE_SUSPEND, DONE),
        (cpb.COLLECTIONS_ACTION_TYPE_WRITE_OFF, cpb.COLLECTIONS_ACTION_STATE_CANCELLED),
        (cpb.COLLECTIONS_ACTION_TYPE_REINSTATE, DONE),
    ]
    assert all(a.attempts <= 1 for a in case.actions)

    async def active() -> account_pb2.Account | None:
        got = (await customer.GetAccount(customer_pb.GetAccountRequest(account_id=account_id))).account
        return got if got.status == account_pb2.ACCOUNT_STATUS_ACTIVE else None

    await eventually(active, what="the account to be reinstated")
    listed = await collections.ListCollectionsCases(collections_pb.ListCollectionsCasesRequest(account_id=account_id))
    assert len(listed.collections_cases) == 1, "one case, opened once by two replicas"
    assert await balance_total() == 0

    # The five books agree once the scenario's events have landed (docs/reconciliation.md).
    await reconciled(stack)
