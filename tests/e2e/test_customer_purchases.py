"""Buying charge offers: checked against the charging catalog over gRPC, idempotent, with states
over time, and refused (changing nothing) when the catalog cannot be asked."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import grpc
import pytest
from evolutivo.charging.v1 import catalog_pb2, charging_service_pb2, charging_service_pb2_grpc
from evolutivo.customer.v1 import account_pb2, purchase_pb2
from evolutivo.customer.v1 import customer_service_pb2 as pb
from evolutivo.customer.v1 import customer_service_pb2_grpc as pb_grpc
from evolutivo_runtime.timestamps import to_timestamp
from evolutivo_stack.stack import Stack
from google.protobuf.field_mask_pb2 import FieldMask
from google.type import money_pb2

pytestmark = pytest.mark.e2e


@dataclass
class Stubs:
    customer: pb_grpc.CustomerServiceStub
    charging: charging_service_pb2_grpc.ChargingServiceStub


@pytest.fixture
async def stubs(stack: Stack) -> AsyncIterator[Stubs]:
    async with (
        stack.channel("customer") as customer,
        stack.channel("charging") as charging,
    ):
        yield Stubs(pb_grpc.CustomerServiceStub(customer), charging_service_pb2_grpc.ChargingServiceStub(charging))


async def active_offer(stubs: Stubs, currency: str = "EUR") -> catalog_pb2.ChargeOffer:
    code = f"api_{uuid.uuid4().hex[:8]}"
    draft = await stubs.charging.CreateChargeOffer(
        charging_service_pb2.CreateChargeOfferRequest(
            charge_offer=catalog_pb2.ChargeOffer(
                code=code,
                name="API Pro",
                currency_code=currency,
                charges=[
                    catalog_pb2.Charge(
                        code="api_calls",
                        name="API calls",
                        event_type="api.call",
                        per_unit=catalog_pb2.PerUnitPrice(unit_price="0.0004"),
                    ),
                    catalog_pb2.Charge(
                        code="monthly_fee",
                        name="Monthly fee",
                        recurring=catalog_pb2.RecurringFee(
                            amount="49.00", timing=catalog_pb2.RECURRING_TIMING_IN_ADVANCE, prorate=True
                        ),
                    ),
                ],
            )
        )
    )
    activated = await stubs.charging.ActivateChargeOffer(
        charging_service_pb2.ActivateChargeOfferRequest(charge_offer_id=draft.charge_offer.charge_offer_id)
    )
    return activated.charge_offer


async def new_account(stubs: Stubs, currency: str = "EUR") -> account_pb2.Account:
    created = await stubs.customer.CreateAccount(
        pb.CreateAccountRequest(
            account=account_pb2.Account(
                type=account_pb2.ACCOUNT_TYPE_BUSINESS,
                display_name="Compradora SL",
                currency_code=currency,
                time_zone="Europe/Madrid",
            )
        )
    )
    return created.account


async def test_buy_end_cancel_and_list(stubs: Stubs) -> None:
    offer = await active_offer(stubs)
    account = await new_account(stubs)
    request = pb.CreatePurchaseRequest(
        account_id=account.account_id,
        request_id=str(uuid.uuid4()),
        purchase=purchase_pb2.Purchase(
            charge_offer_code=offer.code,
            quantity="2",
            price_overrides=[
                purchase_pb2.PriceOverride(
                    charge_code="monthly_fee", price=money_pb2.Money(currency_code="EUR", units=39)
                )
            ],
        ),
    )
    bought = (await stubs.customer.CreatePurchase(request)).purchase
    assert bought.state == purchase_pb2.PURCHASE_STATE_ACTIVE
    assert bought.charge_offer_version == offer.version == 1
    assert bought.quantity == "2"
    assert (await stubs.customer.CreatePurchase(request)).purchase == bought, "a retry buys nothing twice"

    later = (
        await stubs.customer.CreatePurchase(
            pb.CreatePurchaseRequest(
                account_id=account.account_id,
                purchase=purchase_pb2.Purchase(
                    charge_offer_code=offer.code,
                    start_time=to_timestamp(datetime.now(UTC) + timedelta(days=400)),
                ),
            )
        )
    ).purchase
    assert later.state == purchase_pb2.PURCHASE_STATE_PENDING
    cancelled = (
        await stubs.customer.CancelPurchase(
            pb.CancelPurchaseRequest(account_id=account.account_id, purchase_id=later.purchase_id)
        )
    ).purchase
    assert cancelled.state == purchase_pb2.PURCHASE_STATE_CANCELLED

    end_at = datetime.now(UTC) + timedelta(days=800)
    ended = (
        await stubs.customer.EndPurchase(
            pb.EndPurchaseRequest(
                account_id=account.account_id, purchase_id=bought.purchase_id, end_time=to_timestamp(end_at)
            )
        )
    ).purchase
    assert ended.end_time.ToDatetime(tzinfo=UTC) == end_at.replace(microsecond=end_at.microsecond)

    listed = await stubs.customer.ListPurchases(
        pb.ListPurchasesRequest(account_id=account.account_id, at_time=to_timestamp(end_at + timedelta(days=1)))
    )
    states = {p.purchase_id: p.state for p in listed.purchases}
    assert states == {
        bought.purchase_id: purchase_pb2.PURCHASE_STATE_ENDED,
        later.purchase_id: purchase_pb2.PURCHASE_STATE_CANCELLED,
    }
    overview = (
        await stubs.customer.GetAccountOverview(pb.GetAccountOverviewRequest(account_id=account.account_id))
    ).overview
    assert [p.purchase_id for p in overview.purchases] == [bought.purchase_id]


async def test_what_the_catalog_does_not_sell_is_refused(stubs: Stubs) -> None:
    offer = await active_offer(stubs)
    account = await new_account(stubs)
    usd_account = await new_account(stubs, "USD")

    async def refused(account_id: str, purchase: purchase_pb2.Purchase) -> grpc.aio.AioRpcError:
        with pytest.raises(grpc.aio.AioRpcError) as error:
            await stubs.customer.CreatePurchase(pb.CreatePurchaseRequest(account_id=account_id, purchase=purchase))
        return error.value

    unknown = await refused(account.account_id, purchase_pb2.Purchase(charge_offer_code="no_such_offer"))
    assert unknown.code() == grpc.StatusCode.FAILED_PRECONDITION
    currency = await refused(usd_account.account_id, purchase_pb2.Purchase(charge_offer_code=offer.code))
    assert currency.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "USD" in (currency.details() or "")
    bad_override = await refused(
        account.account_id,
        purchase_pb2.Purchase(
            charge_offer_code=offer.code,
            price_overrides=[
                purchase_pb2.PriceOverride(charge_code="nope", price=money_pb2.Money(currency_code="EUR"))
            ],
        ),
    )
    assert bad_override.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "purchase.price_overrides[0].charge_code" in (bad_override.details() or "")
    negative = await refused(account.account_id, purchase_pb2.Purchase(charge_offer_code=offer.code, quantity="-1"))
    assert negative.code() == grpc.StatusCode.INVALID_ARGUMENT
    listed = await stubs.customer.ListPurchases(pb.ListPurchasesRequest(account_id=account.account_id))
    assert list(listed.purchases) == []


async def test_nothing_is_sold_when_the_catalog_cannot_be_asked(stack: Stack, stubs: Stubs) -> None:
    offer = await active_offer(stubs)
    account = await new_account(stubs)
    stack.stop_service("charging")
    try:
        with pytest.raises(grpc.aio.AioRpcError) as unavailable:
            await stubs.customer.CreatePurchase(
                pb.CreatePurchaseRequest(
                    account_id=account.account_id, purchase=purchase_pb2.Purchase(charge_offer_code=offer.code)
                )
            )
        assert unavailable.value.code() == grpc.StatusCode.UNAVAILABLE
    finally:
        stack.start_service("charging")
    listed = await stubs.customer.ListPurchases(pb.ListPurchasesRequest(account_id=account.account_id))
    assert list(listed.purchases) == []


async def test_the_currency_is_fixed_while_the_account_has_purchases(stubs: Stubs) -> None:
    offer = await active_offer(stubs)
    account = await new_account(stubs)
    change = pb.UpdateAccountRequest(
        account=account_pb2.Account(account_id=account.account_id, currency_code="USD"),
        update_mask=FieldMask(paths=["currency_code"]),
    )
    bought = (
        await stubs.customer.CreatePurchase(
            pb.CreatePurchaseRequest(
                account_id=account.account_id, purchase=purchase_pb2.Purchase(charge_offer_code=offer.code)
            )
        )
    ).purchase
    with pytest.raises(grpc.aio.AioRpcError) as fixed:
        await stubs.customer.UpdateAccount(change)
    assert fixed.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    unchanged = (await stubs.customer.GetAccount(pb.GetAccountRequest(account_id=account.account_id))).account
    assert unchanged.currency_code == "EUR"
    # Without purchases (a fresh account) the currency may still change.
    other = await new_account(stubs)
    change.account.account_id = other.account_id
    assert (await stubs.customer.UpdateAccount(change)).account.currency_code == "USD"
    assert bought.state == purchase_pb2.PURCHASE_STATE_ACTIVE
