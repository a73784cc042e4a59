"""What the bad-input cases act on: real resources of every service, made once per module through
the public API (the cases then point valid ids at them, so a refusal is about the one bad field)."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import grpc
from evolutivo.admin.v1 import clock_admin_service_pb2 as clock_pb
from evolutivo.admin.v1 import clock_admin_service_pb2_grpc as clock_grpc
from evolutivo.balance.v1 import balance_service_pb2 as balance_pb
from evolutivo.balance.v1 import balance_service_pb2_grpc as balance_grpc
from evolutivo.balance.v1 import payment_pb2
from evolutivo.billing.v1 import billing_service_pb2 as billing_pb
from evolutivo.billing.v1 import billing_service_pb2_grpc as billing_grpc
from evolutivo.billing.v1 import collections_pb2
from evolutivo.billing.v1 import collections_service_pb2 as collections_pb
from evolutivo.billing.v1 import collections_service_pb2_grpc as collections_grpc
from evolutivo.charging.v1 import catalog_pb2, usage_pb2
from evolutivo.charging.v1 import charging_service_pb2 as charging_pb
from evolutivo.charging.v1 import charging_service_pb2_grpc as charging_grpc
from evolutivo.customer.v1 import (
    account_pb2,
    contact_pb2,
    payment_method_pb2,
    provisioned_service_pb2,
    purchase_pb2,
)
from evolutivo.customer.v1 import customer_service_pb2 as customer_pb
from evolutivo.customer.v1 import customer_service_pb2_grpc as customer_grpc
from evolutivo.erp_gateway.v1 import connection_pb2
from evolutivo.erp_gateway.v1 import erp_gateway_service_pb2 as erp_pb
from evolutivo.erp_gateway.v1 import erp_gateway_service_pb2_grpc as erp_grpc
from evolutivo_runtime.money import to_money
from evolutivo_runtime.testing import eventually
from google.protobuf.duration_pb2 import Duration

# An id of the right shape that names nothing.
UNKNOWN = "00000000-0000-4000-8000-000000000000"


@dataclass(frozen=True)
class World:
    now: datetime  # the shared clock when the world was made
    offer_code: str  # an ACTIVE EUR offer with a per-unit "api.call" charge
    offer_id: str
    draft_offer_id: str  # a DRAFT version of another code
    account_id: str  # ACTIVE, EUR, Europe/Madrid: the offer bought, usage rated, a bill issued
    usd_account_id: str  # ACTIVE, USD
    suspended_account_id: str
    closed_account_id: str
    contact_id: str
    payment_method_id: str
    service_id: str  # a provisioned service of account_id
    purchase_id: str
    event_id: str  # a rated usage event of account_id
    balance_group_id: str  # account_id's default group
    other_group_id: str  # a second open group of account_id
    closed_account_group_id: str  # closed_account_id's default group
    payment_id: str  # 10.00 EUR on account_id's default group
    payment_reference: str
    payment_request_id: str  # the request id RecordPayment was made with
    adjustment_request_id: str  # a CreateAdjustment's request id (5.00 GOODWILL credit)
    bill_id: str  # account_id's issued bill (one line)
    bill_unit_id: str
    scenario_id: str
    connection_id: str  # a GL file export connection
    account_request_id: str  # the request id account_id was created with


async def _followed(channels: dict[str, grpc.aio.Channel], before: datetime) -> datetime:
    """The new time, once every service has applied the clock's move."""
    for service in channels:
        stub = clock_grpc.ClockAdminServiceStub(channels[service])

        async def moved(stub: clock_grpc.ClockAdminServiceAsyncStub = stub) -> datetime | None:
            now = (await stub.GetClock(clock_pb.GetClockRequest())).now.ToDatetime(tzinfo=UTC)
            return now if now - before > timedelta(days=6) else None

        latest = await eventually(moved, timeout=10, what=f"{service} to follow the clock")
    return latest


def _account(name: str, currency: str = "EUR", time_zone: str = "Europe/Madrid") -> account_pb2.Account:
    return account_pb2.Account(
        type=account_pb2.ACCOUNT_TYPE_BUSINESS,
        display_name=name,
        currency_code=currency,
        time_zone=time_zone,
        billing_profile=account_pb2.BillingProfile(
            bill_cycle_day=1, frequency=account_pb2.BILLING_FREQUENCY_MONTHLY, payment_terms_days=14
        ),
    )


async def make_world(channels: dict[str, grpc.aio.Channel]) -> World:
    customer = customer_grpc.CustomerServiceStub(channels["customer"])
    charging = charging_grpc.ChargingServiceStub(channels["charging"])
    balance = balance_grpc.BalanceServiceStub(channels["balance"])
    billing = billing_grpc.BillingServiceStub(channels["billing"])
    collections = collections_grpc.CollectionsServiceStub(channels["billing"])
    erp = erp_grpc.ErpGatewayServiceStub(channels["erp_gateway"])
    clock = clock_grpc.ClockAdminServiceStub(channels["charging"])
    now = (await clock.GetClock(clock_pb.GetClockRequest())).now.ToDatetime(tzinfo=UTC)
    if now.day >= 27 or now.day <= 2:
        # Keep the run days away from the accounts' cycle ends (day 1, local): a cycle closing
        # mid-run would write bills between a case's two snapshots.
        await clock.AdvanceClock(clock_pb.AdvanceClockRequest(duration=Duration(seconds=7 * 86400)))
        now = await _followed(channels, now)

    code = f"bad_{uuid.uuid4().hex[:8]}"
    offer = (
        await charging.CreateChargeOffer(
            charging_pb.CreateChargeOfferRequest(
                charge_offer=catalog_pb2.ChargeOffer(
                    code=code,
                    name="API metered",
                    currency_code="EUR",
                    charges=[
                        catalog_pb2.Charge(
                            code="api_calls",
                            name="API calls",
                            event_type="api.call",
                            per_unit=catalog_pb2.PerUnitPrice(unit_price="0.01"),
                            tax_code="standard",
                        )
                    ],
                ),
                request_id=str(uuid.uuid4()),
            )
        )
    ).charge_offer
    await charging.ActivateChargeOffer(charging_pb.ActivateChargeOfferRequest(charge_offer_id=offer.charge_offer_id))
    draft = (
        await charging.CreateChargeOffer(
            charging_pb.CreateChargeOfferRequest(
                charge_offer=catalog_pb2.ChargeOffer(
                    code=f"{code}_draft",
                    name="Draft",
                    currency_code="EUR",
                    charges=[
                        catalog_pb2.Charge(
                            code="monthly",
                            name="Monthly",
                            recurring=catalog_pb2.RecurringFee(
                                amount="10.00", timing=catalog_pb2.RECURRING_TIMING_IN_ADVANCE
                            ),
                        )
                    ],
                )
            )
        )
    ).charge_offer

    account_request_id = str(uuid.uuid4())
    account_id = (
        await customer.CreateAccount(
            customer_pb.CreateAccountRequest(request_id=account_request_id, account=_account("Entrada Mala SL"))
        )
    ).account.account_id
    usd_account_id = (
        await customer.CreateAccount(
            customer_pb.CreateAccountRequest(account=_account("Dollar Inc", "USD", "America/New_York"))
        )
    ).account.account_id
    suspended_account_id = (
        await customer.CreateAccount(customer_pb.CreateAccountRequest(account=_account("Suspendida SL")))
    ).account.account_id
    closed_account_id = (
        await customer.CreateAccount(customer_pb.CreateAccountRequest(account=_account("Cerrada SL")))
    ).account.account_id
    contact_id = (
        await customer.AddContact(
            customer_pb.AddContactRequest(
                account_id=account_id,
                contact=contact_pb2.Contact(
                    role=contact_pb2.CONTACT_ROLE_BILLING, name="Cuentas", email="cuentas@example.com"
                ),
            )
        )
    ).contact.contact_id
    payment_method_id = (
        await customer.AddPaymentMethod(
            customer_pb.AddPaymentMethodRequest(
                account_id=account_id,
                payment_method=payment_method_pb2.PaymentMethod(
                    bank_transfer=payment_method_pb2.BankTransferDetails(payment_reference="A-ENTRADA")
                ),
            )
        )
    ).payment_method.payment_method_id
    service_id = (
        await customer.CreateProvisionedService(
            customer_pb.CreateProvisionedServiceRequest(
                account_id=account_id,
                service=provisioned_service_pb2.ProvisionedService(kind="mobile_line", identifier="+34600000001"),
            )
        )
    ).service.service_id
    purchase_id = (
        await customer.CreatePurchase(
            customer_pb.CreatePurchaseRequest(
                account_id=account_id, purchase=purchase_pb2.Purchase(charge_offer_code=code)
            )
        )
    ).purchase.purchase_id

    # Usage rated once charging has learnt the account and its purchase (they cross NATS); after
    # the purchase started.
    used_at = (await clock.GetClock(clock_pb.GetClockRequest())).now
    event = usage_pb2.UsageEvent(
        event_id=f"bad-{uuid.uuid4().hex}",
        account_id=account_id,
        event_type="api.call",
        event_time=used_at,
        quantity="150",
    )
    await charging.RecordUsage(charging_pb.RecordUsageRequest(event=event))

    async def rated() -> usage_pb2.UsageResult | None:
        (result,) = (await charging.ResubmitUsage(charging_pb.ResubmitUsageRequest(event_ids=[event.event_id]))).results
        return result if result.status == usage_pb2.USAGE_STATUS_RATED else None

    (charge,) = (await eventually(rated, what="the seed usage to be rated")).charges

    async def unbilled() -> bool | None:
        items = (await billing.ListUnbilledItems(billing_pb.ListUnbilledItemsRequest(account_id=account_id))).items
        return True if any(i.charge_id == charge.charge_id for i in items) else None

    await eventually(unbilled, what="billing to receive the seed charge")
    bill = (await billing.BillNow(billing_pb.BillNowRequest(account_id=account_id, request_id=str(uuid.uuid4())))).bill

    async def default_group(which: str) -> str | None:
        groups = (await balance.GetBalance(balance_pb.GetBalanceRequest(account_id=which))).balance_groups
        return groups[0].balance_group_id if groups else None

    balance_group_id = await eventually(lambda: default_group(account_id), what="balance to open the default group")
    closed_account_group_id = await eventually(
        lambda: default_group(closed_account_id), what="balance to open the closed account's group"
    )
    await eventually(lambda: default_group(usd_account_id), what="balance to open the USD account's group")
    other_group_id = (
        await balance.CreateBalanceGroup(balance_pb.CreateBalanceGroupRequest(account_id=account_id, name="project-x"))
    ).balance_group.balance_group_id
    payment_reference = f"BANK-{uuid.uuid4().hex[:10]}"
    payment_request_id = str(uuid.uuid4())
    payment = (
        await balance.RecordPayment(
            balance_pb.RecordPaymentRequest(
                account_id=account_id,
                amount=to_money(Decimal("10.00"), "EUR"),
                method=payment_pb2.PAYMENT_METHOD_TYPE_BANK_TRANSFER,
                reference=payment_reference,
                request_id=payment_request_id,
            )
        )
    ).payment
    adjustment_request_id = str(uuid.uuid4())
    await balance.CreateAdjustment(
        balance_pb.CreateAdjustmentRequest(
            account_id=account_id,
            amount=to_money(Decimal("-5.00"), "EUR"),
            reason_code="GOODWILL",
            actor="ops:bad-input",
            request_id=adjustment_request_id,
        )
    )

    await customer.SuspendAccount(
        customer_pb.SuspendAccountRequest(
            account_id=suspended_account_id, reason="fraud check", actor=account_pb2.STATUS_ACTOR_FRAUD
        )
    )
    await customer.CloseAccount(
        customer_pb.CloseAccountRequest(
            account_id=closed_account_id, reason="customer left", actor=account_pb2.STATUS_ACTOR_MANUAL
        )
    )

    scenario_id = (
        await collections.CreateCollectionsScenario(
            collections_pb.CreateCollectionsScenarioRequest(
                scenario=collections_pb2.CollectionsScenario(
                    display_name=f"Bad input {code}",
                    priority=900,
                    steps=[
                        collections_pb2.CollectionsStep(
                            days_past_due=5, action=collections_pb2.COLLECTIONS_ACTION_TYPE_REMINDER_EMAIL
                        )
                    ],
                ),
                request_id=str(uuid.uuid4()),
            )
        )
    ).scenario.scenario_id
    connection_id = (
        await erp.CreateConnection(
            erp_pb.CreateConnectionRequest(
                connection=connection_pb2.Connection(
                    display_name="GL export",
                    type=connection_pb2.CONNECTION_TYPE_GL_FILE_EXPORT,
                    mapping=connection_pb2.ConnectionMapping(
                        accounts={"receivable": "4300", "revenue": "7000", "tax": "4770", "cash": "5720"},
                        journals={"general": "GEN"},
                    ),
                    enabled=True,
                ),
                request_id=str(uuid.uuid4()),
            )
        )
    ).connection.connection_id

    return World(
        now=now,
        offer_code=code,
        offer_id=offer.charge_offer_id,
        draft_offer_id=draft.charge_offer_id,
        account_id=account_id,
        usd_account_id=usd_account_id,
        suspended_account_id=suspended_account_id,
        closed_account_id=closed_account_id,
        contact_id=contact_id,
        payment_method_id=payment_method_id,
        service_id=service_id,
        purchase_id=purchase_id,
        event_id=event.event_id,
        balance_group_id=balance_group_id,
        other_group_id=other_group_id,
        closed_account_group_id=closed_account_group_id,
        payment_id=payment.payment_id,
        payment_reference=payment_reference,
        payment_request_id=payment_request_id,
        adjustment_request_id=adjustment_request_id,
        bill_id=bill.bill_id,
        bill_unit_id=bill.bill_unit_id,
        scenario_id=scenario_id,
        connection_id=connection_id,
        account_request_id=account_request_id,
    )
