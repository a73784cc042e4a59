"""Bill now, threshold bills and credit notes across processes (docs/billing.md, "Other triggers",
"Credit notes"): usage rated by charging reaches billing over NATS; BillNow issues a bill at once
(a retry returns it) while the cycle goes on; usage reaching the account's threshold is billed at
once by one of two billing replicas; a trial bill changes nothing; a credit note against a bill
reaches balance as a credit of its total."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from decimal import Decimal

import grpc
import pytest
from evolutivo.admin.v1 import clock_admin_service_pb2 as clock_pb
from evolutivo.admin.v1 import clock_admin_service_pb2_grpc as clock_grpc
from evolutivo.balance.v1 import balance_service_pb2 as balance_pb
from evolutivo.balance.v1 import balance_service_pb2_grpc as balance_grpc
from evolutivo.balance.v1 import ledger_pb2
from evolutivo.billing.v1 import bill_pb2
from evolutivo.billing.v1 import billing_service_pb2 as billing_pb
from evolutivo.billing.v1 import billing_service_pb2_grpc as billing_grpc
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

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def stack() -> Iterator[Stack]:
    # Two billing replicas race for every threshold bill. The closer's periodic check is slow on
    # purpose: a threshold bill must come from the notification, not from waiting for the check.
    with scratch_dir("stack") as data_dir:
        with Stack(
            data_dir,
            base_port=None,
            clock_mode="controllable",
            env={
                "BILLING_CYCLE_CHECK_SECONDS": "30",
                "BILLING_TAX_RATES": '{"standard": "0.21", "exempt": "0"}',
            },
            replicas={"billing": 2},
        ) as running:
            yield running


async def clock_now(channels: dict[str, grpc.aio.Channel]) -> datetime:
    admin = clock_grpc.ClockAdminServiceStub(channels["charging"])
    return (await admin.GetClock(clock_pb.GetClockRequest())).now.ToDatetime(tzinfo=UTC)


async def account_with_offer(channels: dict[str, grpc.aio.Channel], threshold: str | None = None) -> str:
    """An account in Europe/Madrid buying an API offer at 0.10 a call; its threshold when given."""
    charging = charging_grpc.ChargingServiceStub(channels["charging"])
    customer = customer_grpc.CustomerServiceStub(channels["customer"])
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
    profile = account_pb2.BillingProfile(
        bill_cycle_day=1, frequency=account_pb2.BILLING_FREQUENCY_MONTHLY, payment_terms_days=14
    )
    if threshold is not None:
        profile.threshold_amount.CopyFrom(to_money(Decimal(threshold), "EUR"))
    account = (
        await customer.CreateAccount(
            customer_pb.CreateAccountRequest(
                request_id=str(uuid.uuid4()),
                account=account_pb2.Account(
                    type=account_pb2.ACCOUNT_TYPE_BUSINESS,
                    display_name="Disparadores SL",
                    currency_code="EUR",
                    time_zone="Europe/Madrid",
                    billing_profile=profile,
                ),
            )
        )
    ).account
    await customer.CreatePurchase(
        customer_pb.CreatePurchaseRequest(
            account_id=account.account_id, purchase=purchase_pb2.Purchase(charge_offer_code=code)
        )
    )
    return account.account_id


async def rate(channels: dict[str, grpc.aio.Channel], account_id: str, quantity: str) -> usage_pb2.RatedCharge:
    """Records a usage event now and re-submits it until charging has learnt the account, the
    purchase and the cycle; its one charge, once billing has received it as an unbilled item or
    billed it."""
    charging = charging_grpc.ChargingServiceStub(channels["charging"])
    event = usage_pb2.UsageEvent(
        event_id=f"e2e-{uuid.uuid4().hex}",
        account_id=account_id,
        event_type="api.call",
        event_time=to_timestamp(await clock_now(channels)),
        quantity=quantity,
    )
    await charging.RecordUsage(charging_pb.RecordUsageRequest(event=event))

    async def attempt() -> usage_pb2.UsageResult | None:
        (result,) = (await charging.ResubmitUsage(charging_pb.ResubmitUsageRequest(event_ids=[event.event_id]))).results
        return result if result.status == usage_pb2.USAGE_STATUS_RATED else None

    (charge,) = (await eventually(attempt, what=f"{event.event_id} to be rated")).charges
    return charge


async def received(billing: billing_grpc.BillingServiceAsyncStub, account_id: str, charge_id: str) -> None:
    async def unbilled() -> bool | None:
        items = (await billing.ListUnbilledItems(billing_pb.ListUnbilledItemsRequest(account_id=account_id))).items
        return True if any(i.charge_id == charge_id for i in items) else None

    await eventually(unbilled, what=f"billing to receive charge {charge_id}")


async def bills(billing: billing_grpc.BillingServiceAsyncStub, account_id: str, count: int) -> list[bill_pb2.Bill]:
    async def listed() -> list[bill_pb2.Bill] | None:
        found = (await billing.ListBills(billing_pb.ListBillsRequest(account_id=account_id))).bills
        return list(found) if len(found) >= count else None

    return await eventually(listed, what=f"{count} bills")


async def test_bill_now_and_a_trial_bill(stack: Stack, channels: dict[str, grpc.aio.Channel]) -> None:
    billing = billing_grpc.BillingServiceStub(channels["billing"])
    account_id = await account_with_offer(channels)
    charge = await rate(channels, account_id, "25")
    await received(billing, account_id, charge.charge_id)

    preview = (await billing.PreviewBill(billing_pb.PreviewBillRequest(account_id=account_id))).bill
    assert (preview.status, preview.bill_number, from_money(preview.total)) == (
        bill_pb2.BILL_STATUS_DRAFT,
        "",
        Decimal("3.03"),
    )
    assert (await billing.ListBills(billing_pb.ListBillsRequest(account_id=account_id))).bills == []

    request_id = str(uuid.uuid4())
    bill = (await billing.BillNow(billing_pb.BillNowRequest(account_id=account_id, request_id=request_id))).bill
    again = (await billing.BillNow(billing_pb.BillNowRequest(account_id=account_id, request_id=request_id))).bill
    assert again.bill_id == bill.bill_id
    assert (bill.status, bill.trigger, from_money(bill.total), from_money(bill.amount_due)) == (
        bill_pb2.BILL_STATUS_ISSUED,
        bill_pb2.BILL_TRIGGER_ON_DEMAND,
        Decimal("3.03"),
        Decimal("3.03"),
    )
    assert bill.bill_number.startswith("F-")
    (line,) = bill.lines
    assert (line.quantity, line.unit_price, list(line.charge_ids)) == ("25", "0.1", [charge.charge_id])
    assert (await billing.ListUnbilledItems(billing_pb.ListUnbilledItemsRequest(account_id=account_id))).items == []
    with pytest.raises(grpc.aio.AioRpcError) as nothing:
        await billing.BillNow(billing_pb.BillNowRequest(account_id=account_id, request_id=str(uuid.uuid4())))
    assert nothing.value.code() == grpc.StatusCode.FAILED_PRECONDITION


async def test_reaching_the_threshold_bills_at_once(stack: Stack, channels: dict[str, grpc.aio.Channel]) -> None:
    billing = billing_grpc.BillingServiceStub(channels["billing"])
    account_id = await account_with_offer(channels, threshold="10")
    below = await rate(channels, account_id, "60")  # 6.00: below 10
    await received(billing, account_id, below.charge_id)
    assert (await billing.ListBills(billing_pb.ListBillsRequest(account_id=account_id))).bills == []

    await rate(channels, account_id, "50")  # 11.00 unbilled: over the threshold
    (bill,) = await bills(billing, account_id, 1)
    assert (bill.trigger, from_money(bill.subtotal), bill.status) == (
        bill_pb2.BILL_TRIGGER_THRESHOLD,
        Decimal("11.00"),
        bill_pb2.BILL_STATUS_ISSUED,
    )
    unit = (await billing.GetBillingSummary(billing_pb.GetBillingSummaryRequest(account_id=account_id))).bill_unit
    assert from_money(unit.threshold_amount) == Decimal("10")
    # Once per crossing: below it again, nothing more is billed.
    after = await rate(channels, account_id, "10")
    await received(billing, account_id, after.charge_id)
    assert len((await billing.ListBills(billing_pb.ListBillsRequest(account_id=account_id))).bills) == 1


async def test_a_credit_note_reaches_balance_as_a_credit(stack: Stack, channels: dict[str, grpc.aio.Channel]) -> None:
    billing = billing_grpc.BillingServiceStub(channels["billing"])
    balance = balance_grpc.BalanceServiceStub(channels["balance"])
    account_id = await account_with_offer(channels)
    charge = await rate(channels, account_id, "100")  # 10.00 + 2.10 tax
    await received(billing, account_id, charge.charge_id)
    bill = (await billing.BillNow(billing_pb.BillNowRequest(account_id=account_id, request_id=str(uuid.uuid4())))).bill

    with pytest.raises(grpc.aio.AioRpcError) as too_much:
        await billing.CreateCreditNote(
            billing_pb.CreateCreditNoteRequest(
                bill_id=bill.bill_id,
                lines=[billing_pb.CreditNoteLineRequest(bill_line_number=1, amount=to_money(Decimal("10.01"), "EUR"))],
                reason="goodwill",
                actor="ops@example.com",
                request_id=str(uuid.uuid4()),
            )
        )
    assert too_much.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "lines[0].amount" in (too_much.value.details() or "")

    note = (
        await billing.CreateCreditNote(
            billing_pb.CreateCreditNoteRequest(
                bill_id=bill.bill_id,
                lines=[billing_pb.CreditNoteLineRequest(bill_line_number=1, amount=to_money(Decimal("4.00"), "EUR"))],
                reason="goodwill",
                actor="ops@example.com",
                request_id=str(uuid.uuid4()),
            )
        )
    ).credit_note
    assert (from_money(note.total), note.voids_bill, note.credit_note_number[:3]) == (Decimal("4.84"), False, "CN-")
    credited = (await billing.GetBill(billing_pb.GetBillRequest(bill_id=bill.bill_id))).bill
    assert from_money(credited.open_amount) == Decimal("7.26")
    listed = (await billing.ListCreditNotes(billing_pb.ListCreditNotesRequest(account_id=account_id))).credit_notes
    assert [n.credit_note_id for n in listed] == [note.credit_note_id]

    async def booked() -> ledger_pb2.LedgerEntry | None:
        entries = (
            await balance.ListLedgerEntries(
                balance_pb.ListLedgerEntriesRequest(
                    account_id=account_id,
                    types=[ledger_pb2.LEDGER_ENTRY_TYPE_CREDIT_NOTE],
                    source_id=note.credit_note_id,
                )
            )
        ).entries
        return entries[0] if entries else None

    entry = await eventually(booked, what="balance to book the credit note")
    assert from_money(entry.amount) == -Decimal("4.84")

    # The rest of the bill voids it (nothing paid it).
    rest = (
        await billing.CreateCreditNote(
            billing_pb.CreateCreditNoteRequest(
                bill_id=bill.bill_id,
                whole_bill=True,
                reason="cancelled",
                actor="ops@example.com",
                request_id=str(uuid.uuid4()),
            )
        )
    ).credit_note
    assert (rest.voids_bill, from_money(rest.total)) == (True, Decimal("7.26"))
    void = (await billing.GetBill(billing_pb.GetBillRequest(bill_id=bill.bill_id))).bill
    assert void.status == bill_pb2.BILL_STATUS_VOID
