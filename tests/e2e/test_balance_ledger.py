"""The balance ledger across processes: balance learns the account from customer over NATS; a
payment recorded through gRPC and retried credits once; a bad payment is refused naming the field;
usage rated by charging lands in the ledger as a debit, and customer then refuses to change the
account's currency."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from decimal import Decimal

import grpc
import pytest
from e2e_support import metric_sum
from evolutivo.balance.v1 import balance_service_pb2 as balance_pb
from evolutivo.balance.v1 import balance_service_pb2_grpc as balance_grpc
from evolutivo.balance.v1 import ledger_pb2, payment_pb2
from evolutivo.charging.v1 import catalog_pb2, usage_pb2
from evolutivo.charging.v1 import charging_service_pb2 as charging_pb
from evolutivo.charging.v1 import charging_service_pb2_grpc as charging_grpc
from evolutivo.customer.v1 import account_pb2, purchase_pb2
from evolutivo.customer.v1 import customer_service_pb2 as customer_pb
from evolutivo.customer.v1 import customer_service_pb2_grpc as customer_grpc
from evolutivo_runtime.money import from_money, to_money
from evolutivo_runtime.testing import eventually
from evolutivo_runtime.timestamps import to_timestamp
from evolutivo_stack.stack import Stack
from google.protobuf import field_mask_pb2
from google.rpc import error_details_pb2
from grpc_status import rpc_status

pytestmark = pytest.mark.e2e

CHARGES_CREATED_TYPE = "evolutivo.charging.v1.ChargesCreated"


def applied_by(metrics_url: str, durable: str, event_type: str) -> float:
    """evolutivo_consumer_applied_total of one replica's consumer for one event type."""
    return metric_sum(
        metrics_url, f'evolutivo_consumer_applied_total{{consumer="{durable}",event_type="{event_type}"}}'
    )


async def new_account(customer: customer_grpc.CustomerServiceAsyncStub) -> str:
    created = await customer.CreateAccount(
        customer_pb.CreateAccountRequest(
            request_id=str(uuid.uuid4()),
            account=account_pb2.Account(
                type=account_pb2.ACCOUNT_TYPE_BUSINESS,
                display_name="Libro Mayor SL",
                currency_code="EUR",
                time_zone="Europe/Madrid",
            ),
        )
    )
    return created.account.account_id


async def known_balance(
    balance: balance_grpc.BalanceServiceAsyncStub, account_id: str
) -> balance_pb.GetBalanceResponse:
    """Balance learns the account from customer's AccountCreated, over NATS."""

    async def probe() -> balance_pb.GetBalanceResponse:
        return await balance.GetBalance(balance_pb.GetBalanceRequest(account_id=account_id))

    return await eventually(probe, what="balance to know the account")


def bad_request_fields(error: grpc.aio.AioRpcError) -> list[str]:
    status = rpc_status.from_call(error)  # type: ignore[arg-type]
    assert status is not None
    fields: list[str] = []
    for detail in status.details:
        if detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
            bad = error_details_pb2.BadRequest()
            detail.Unpack(bad)
            fields += [v.field for v in bad.field_violations]
    return fields


async def test_a_payment_recorded_and_retried_credits_once(stack: Stack, channels: dict[str, grpc.aio.Channel]) -> None:
    customer = customer_grpc.CustomerServiceStub(channels["customer"])
    balance = balance_grpc.BalanceServiceStub(channels["balance"])
    account_id = await new_account(customer)
    assert from_money((await known_balance(balance, account_id)).total) == 0

    request = balance_pb.RecordPaymentRequest(
        account_id=account_id,
        amount=to_money(Decimal("125.40"), "EUR"),
        method=payment_pb2.PAYMENT_METHOD_TYPE_SEPA_DIRECT_DEBIT,
        reference=f"e2e-{uuid.uuid4().hex}",
        request_id=str(uuid.uuid4()),
    )
    first = await balance.RecordPayment(request)
    assert first.payment.state == payment_pb2.PAYMENT_STATE_RECORDED
    assert await balance.RecordPayment(request) == first, "the same request id"
    request.request_id = str(uuid.uuid4())
    assert (await balance.RecordPayment(request)).payment == first.payment, "the same reference"

    answered = await balance.GetBalance(balance_pb.GetBalanceRequest(account_id=account_id))
    assert from_money(answered.total) == Decimal("-125.40"), "in credit by the payment, once"
    listed = await balance.ListLedgerEntries(balance_pb.ListLedgerEntriesRequest(account_id=account_id))
    assert [e.entry_id for e in listed.entries] == [first.entry.entry_id]

    request.reference, request.request_id = f"e2e-{uuid.uuid4().hex}", ""
    request.amount.CopyFrom(to_money(Decimal("10.00"), "USD"))
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await balance.RecordPayment(request)
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert bad_request_fields(refused.value) == ["amount.currency_code"]
    assert from_money((await balance.GetBalance(balance_pb.GetBalanceRequest(account_id=account_id))).total) == Decimal(
        "-125.40"
    )


async def test_usage_rated_by_charging_lands_in_the_ledger_and_fixes_the_currency(
    stack: Stack, channels: dict[str, grpc.aio.Channel]
) -> None:
    charging = charging_grpc.ChargingServiceStub(channels["charging"])
    customer = customer_grpc.CustomerServiceStub(channels["customer"])
    balance = balance_grpc.BalanceServiceStub(channels["balance"])

    code = f"sms_{uuid.uuid4().hex[:8]}"
    draft = await charging.CreateChargeOffer(
        charging_pb.CreateChargeOfferRequest(
            charge_offer=catalog_pb2.ChargeOffer(
                code=code,
                name="SMS",
                currency_code="EUR",
                charges=[
                    catalog_pb2.Charge(
                        code="sms",
                        name="SMS",
                        event_type="sms.sent",
                        flat=catalog_pb2.FlatPrice(amount="0.07"),
                    )
                ],
            )
        )
    )
    await charging.ActivateChargeOffer(
        charging_pb.ActivateChargeOfferRequest(charge_offer_id=draft.charge_offer.charge_offer_id)
    )
    account_id = await new_account(customer)
    await customer.CreatePurchase(
        customer_pb.CreatePurchaseRequest(account_id=account_id, purchase=purchase_pb2.Purchase(charge_offer_code=code))
    )
    await known_balance(balance, account_id)
    event = usage_pb2.UsageEvent(
        event_id=f"e2e-{uuid.uuid4().hex}",
        account_id=account_id,
        event_type="sms.sent",
        event_time=to_timestamp(datetime.now(UTC)),
        quantity="3",
    )

    async def rated() -> usage_pb2.UsageResult | None:
        # Charging learns the purchase and the cycle over NATS: resubmit until it has.
        first = await charging.RecordUsage(charging_pb.RecordUsageRequest(event=event))
        if first.result.status == usage_pb2.USAGE_STATUS_RATED:
            return first.result
        (again,) = (await charging.ResubmitUsage(charging_pb.ResubmitUsageRequest(event_ids=[event.event_id]))).results
        return again if again.status == usage_pb2.USAGE_STATUS_RATED else None

    result = await eventually(rated, what="the usage to be rated")
    (charge,) = result.charges
    assert from_money(charge.amount) == Decimal("0.07")

    async def booked() -> ledger_pb2.LedgerEntry | None:
        listed = await balance.ListLedgerEntries(
            balance_pb.ListLedgerEntriesRequest(account_id=account_id, source_type="charge", source_id=charge.charge_id)
        )
        return listed.entries[0] if listed.entries else None

    entry = await eventually(booked, what="balance to book the charge")
    assert (entry.type, from_money(entry.amount)) == (ledger_pb2.LEDGER_ENTRY_TYPE_CHARGE, Decimal("0.07"))
    total = (await balance.GetBalance(balance_pb.GetBalanceRequest(account_id=account_id))).total
    assert from_money(total) == Decimal("0.07")

    # Customer applies the same ChargesCreated (its own durable consumer): once it has, the
    # account's currency is fixed. Only this test makes charges on this module's stack.
    metrics_url = stack.replicas("customer")[0].metrics_url

    async def customer_applied() -> bool | None:
        return True if applied_by(metrics_url, "customer", CHARGES_CREATED_TYPE) >= 1 else None

    await eventually(customer_applied, what="customer to apply ChargesCreated")
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await customer.UpdateAccount(
            customer_pb.UpdateAccountRequest(
                account=account_pb2.Account(account_id=account_id, currency_code="USD"),
                update_mask=field_mask_pb2.FieldMask(paths=["currency_code"]),
            )
        )
    assert refused.value.code() == grpc.StatusCode.FAILED_PRECONDITION


async def test_a_running_service_measures_its_event_loop_lag(stack: Stack) -> None:
    """evolutivo_event_loop_lag_seconds (runtime server/loop_lag.py) is served and keeps counting
    while the service is up: the watch runs beside the RPCs and consumers."""
    metrics_url = stack.replicas("balance")[0].metrics_url

    def wake_ups() -> float:
        return metric_sum(metrics_url, "evolutivo_event_loop_lag_seconds_count")

    first = wake_ups()

    async def counting() -> bool | None:
        return True if wake_ups() >= first + 10 else None

    await eventually(counting, what="balance's loop lag watch to record more wake-ups")
