"""The customer lifecycle end to end (issue 9, item 1): the five services as separate processes over
gRPC, a real SMTP server and the session's real Tryton, the shared clock moved forward four times.

Three accounts open on 20 January of next year — Rome billed on the 1st, New York on the 15th,
Kolkata on the 31st (28 February in between) — and buy the same offer (a setup fee, a monthly fee
in advance, metered API calls in graduated tiers, SMS at a reduced tax rate); usage streams in.
Rome takes a bill now, New York crosses its threshold and is billed at once. The clock moves:

1. to 20 Feb: every first cycle closes and is billed; Kolkata's bill is ten days overdue, its
   case opens (it alone is labelled for the scenario), emails the reminder and posts the late fee
   at once; Rome pays in full, New York in part; Rome buys an add-on, prorated over February's days;
2. to 2 Mar: Rome's February and Kolkata's clamped February cycles are billed, the late fee on
   Kolkata's; Kolkata is suspended (charging refuses its usage), pays everything and is reinstated;
3. to 1 Apr: the cycles across the DST changes (New York's on 2nd Sunday of March, Rome's on
   the last) are billed; New York's part-paid bill is overdue.

Every figure is computed in the test from the catalog's prices (tests/e2e/lifecycle_support.py),
never read back from a service, and asserted to the cent: charges, bill lines, taxes, totals,
statements, payments and their allocation, balances, late fee, each bill's emailed PDF, the
reminder email, and the Tryton invoices and payments. The books then reconcile with no difference.
"""

from __future__ import annotations

import calendar
import uuid
from collections.abc import Iterator, Sequence
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from email.message import EmailMessage
from typing import cast
from zoneinfo import ZoneInfo

import grpc
import pytest
from e2e_support import (
    MailServer,
    advance_to,
    at,
    case_when,
    clock_now,
    mail_server,
    money_text,
    pdf_text,
    tryton_connection,
)
from evolutivo.balance.v1 import balance_service_pb2 as balance_pb
from evolutivo.balance.v1 import balance_service_pb2_grpc as balance_grpc
from evolutivo.balance.v1 import ledger_pb2, payment_pb2
from evolutivo.billing.v1 import bill_cycle_pb2, bill_pb2
from evolutivo.billing.v1 import billing_service_pb2 as billing_pb
from evolutivo.billing.v1 import billing_service_pb2_grpc as billing_grpc
from evolutivo.billing.v1 import collections_pb2 as cpb
from evolutivo.billing.v1 import collections_service_pb2 as collections_pb
from evolutivo.billing.v1 import collections_service_pb2_grpc as collections_grpc
from evolutivo.charging.v1 import catalog_pb2, charging_account_pb2, usage_pb2
from evolutivo.charging.v1 import charging_service_pb2 as charging_pb
from evolutivo.charging.v1 import charging_service_pb2_grpc as charging_grpc
from evolutivo.customer.v1 import account_pb2, contact_pb2, purchase_pb2
from evolutivo.customer.v1 import customer_service_pb2 as customer_pb
from evolutivo.customer.v1 import customer_service_pb2_grpc as customer_grpc
from evolutivo.erp_gateway.v1 import erp_gateway_service_pb2 as erp_pb
from evolutivo.erp_gateway.v1 import erp_gateway_service_pb2_grpc as erp_grpc
from evolutivo.erp_gateway.v1 import sync_job_pb2, sync_state_pb2
from evolutivo_erp_gateway.adapters.crypto import generate_key
from evolutivo_erp_gateway.adapters.tryton import TrytonClient
from evolutivo_runtime.money import from_money, to_money
from evolutivo_runtime.testing import eventually
from evolutivo_runtime.timestamps import to_timestamp
from evolutivo_stack.embedded import scratch_dir
from evolutivo_stack.stack import Stack
from google.type import date_pb2, money_pb2
from lifecycle_support import (
    ZERO,
    Book,
    ExpectedBill,
    Line,
    Meter,
    graduated,
    local_midnight,
    monthly_cycles,
    per_unit,
    prorated,
)
from reconciliation import reconciled
from support.tryton import ADMIN, ADMIN_PASSWORD, Tryton, fresh_tryton

pytestmark = pytest.mark.e2e

SENDER = "billing@evolutivo.test"
RATES = {"standard": Decimal("0.21"), "reduced": Decimal("0.10"), "exempt": Decimal(0)}

# The catalog, as the test prices it.
SETUP_FEE = Decimal("49.00")
MONTHLY_FEE = Decimal("29.90")
SUPPORT_FEE = Decimal("12.00")
API_TIERS = ((Decimal(1000), Decimal(0)), (None, Decimal("0.0015")))
SMS_PRICE = Decimal("0.07")
LATE_FEE = Decimal("5.00")
THRESHOLD = Decimal("100.00")

SUCCEEDED = sync_job_pb2.SYNC_JOB_STATE_SUCCEEDED
DONE = cpb.COLLECTIONS_ACTION_STATE_DONE
SCHEDULED = cpb.COLLECTIONS_ACTION_STATE_SCHEDULED


@pytest.fixture(scope="module")
def smtp() -> Iterator[MailServer]:
    with mail_server() as server:
        yield server


@pytest.fixture(scope="module")
def tryton(pg_server_url: str) -> Iterator[Tryton]:
    """A Tryton of the module's own: the test checks that it holds these bills and payments and
    nothing else (the session's is shared with modules whose accounts and bills number alike)."""
    server = fresh_tryton(pg_server_url)
    try:
        yield server
    finally:
        server.close()


@pytest.fixture(scope="module")
def stack(smtp: MailServer) -> Iterator[Stack]:
    # Every loop that reacts to the clock runs often, so each clock move settles in seconds.
    with scratch_dir("stack") as data_dir:
        with Stack(
            data_dir,
            base_port=None,
            clock_mode="controllable",
            env={
                "BILLING_CYCLE_CHECK_SECONDS": "0.5",
                "BILLING_LATE_USAGE_DELAY_SECONDS": "0",
                "BILLING_COLLECTIONS_CHECK_SECONDS": "0.5",
                "BILLING_COLLECTIONS_RETRY_SECONDS": "1",
                "BILLING_TAX_RATES": '{"standard": "0.21", "reduced": "0.10", "exempt": "0"}',
                "BILLING_SMTP_HOST": "127.0.0.1",
                "BILLING_SMTP_PORT": str(smtp.port),
                "BILLING_SMTP_STARTTLS": "false",
                "BILLING_SMTP_FROM": SENDER,
                "BILLING_DELIVERY_CHECK_SECONDS": "0.5",
                "BILLING_SELLER_NAME": "Evolutivo Telecom S.L.",
                "CHARGING_FEE_CHECK_SECONDS": "1",
                # Customer asks the charging catalog for each purchase: room for a loaded machine.
                "CUSTOMER_DOWNSTREAM_TIMEOUT_SECONDS": "5",
                "ERP_GATEWAY_CREDENTIAL_KEYS": generate_key(),
                "ERP_GATEWAY_SYNC_POLL_SECONDS": "0.5",
            },
        ) as running:
            yield running


class Customer:
    """One of the three accounts: where it lives, how it is billed, and the test's book of it."""

    def __init__(self, name: str, zone: str, billing_day: int, terms: int, email: str) -> None:
        self.name, self.zone, self.billing_day, self.terms, self.email = name, ZoneInfo(zone), billing_day, terms, email
        self.account_id = ""
        self.book = Book()
        self.cycles: list[tuple[date, date]] = []
        self.payment_ids: list[str] = []
        self.api = Meter(graduated(API_TIERS))
        self.sms = Meter(per_unit(SMS_PRICE))

    def cycle(self, n: int) -> tuple[date, date]:
        """Its n-th cycle (from 1), local dates [start, end)."""
        return self.cycles[n - 1]

    def new_cycle(self) -> None:
        """Tiers count per cycle: the meters start again."""
        self.api = Meter(graduated(API_TIERS))
        self.sms = Meter(per_unit(SMS_PRICE))

    def usage_lines(self, offer: str, period: tuple[date, date]) -> list[Line]:
        lines = []
        for charge, tax_code, meter in (("api_calls", "standard", self.api), ("sms", "reduced", self.sms)):
            quantity, amount = meter.bill()
            if amount:
                lines.append(Line(offer, charge, tax_code, quantity, amount, period))
        return lines


def pb_date(value: date_pb2.Date) -> date:
    return date(value.year, value.month, value.day)


def money(value: money_pb2.Money) -> Decimal:
    return from_money(value)


async def unbilled(billing: billing_grpc.BillingServiceAsyncStub, who: Customer, expected: Decimal, what: str) -> None:
    """Waits until billing holds exactly `expected` unbilled for the account (charges cross NATS)."""

    async def probe() -> bool | None:
        items = (await billing.ListUnbilledItems(billing_pb.ListUnbilledItemsRequest(account_id=who.account_id))).items
        return True if sum((money(i.amount) for i in items), ZERO) == expected else None

    await eventually(probe, timeout=60, what=f"{who.name}: {what} ({expected} unbilled)")


async def bills(billing: billing_grpc.BillingServiceAsyncStub, who: Customer, count: int) -> list[bill_pb2.Bill]:
    """The account's bills in issue order (their numbers), once there are `count`, read whole."""

    async def listed() -> list[bill_pb2.Bill] | None:
        found = (await billing.ListBills(billing_pb.ListBillsRequest(account_id=who.account_id))).bills
        return list(found) if len(found) >= count else None

    found = await eventually(listed, timeout=60, what=f"{who.name}: {count} bills")
    assert len(found) == count, f"{who.name} has {len(found)} bills, expected {count}"
    whole = [(await billing.GetBill(billing_pb.GetBillRequest(bill_id=b.bill_id))).bill for b in found]
    return sorted(whole, key=lambda b: b.bill_number)


def assert_bill(
    bill: bill_pb2.Bill,
    expected: ExpectedBill,
    trigger: int,
    status: int,
    period: tuple[date, date],
) -> None:
    """Every figure of the bill is the test's own."""
    assert (bill.trigger, bill.status, bill.currency_code) == (trigger, status, "EUR"), bill.bill_number
    assert (pb_date(bill.issue_date), pb_date(bill.due_date)) == (expected.issue_date, expected.due_date)
    assert (pb_date(bill.period_start_date), pb_date(bill.period_end_date)) == period
    assert [
        (
            line.line_number,
            line.charge_offer_code,
            line.charge_code,
            line.tax_code,
            Decimal(line.quantity),
            money(line.amount),
            (pb_date(line.period_start_date), pb_date(line.period_end_date)),
        )
        for line in bill.lines
    ] == [
        (n, x.offer, x.charge, x.tax_code, x.quantity, x.amount, x.period) for n, x in enumerate(expected.lines, 1)
    ], bill.bill_number
    assert {t.tax_code: (Decimal(t.rate), money(t.taxable_amount), money(t.tax_amount)) for t in bill.taxes} == {
        code: (RATES[code], base, tax) for code, (base, tax) in expected.taxes.items()
    }
    assert (money(bill.subtotal), money(bill.tax_total), money(bill.total)) == (
        expected.subtotal,
        expected.tax_total,
        expected.total,
    ), bill.bill_number
    assert (
        money(bill.previous_balance),
        money(bill.payments_received),
        money(bill.credits),
        money(bill.credit_applied),
        money(bill.amount_due),
    ) == (expected.previous_balance, expected.payments_received, ZERO, ZERO, expected.amount_due), bill.bill_number
    assert (money(bill.paid_amount), money(bill.open_amount)) == (expected.paid, expected.open_amount)


async def bill_reads(
    billing: billing_grpc.BillingServiceAsyncStub, bill_id: str, status: int, paid: Decimal, open_amount: Decimal
) -> None:
    """Waits until the bill's payment state is the test's (payments cross NATS to billing)."""

    async def probe() -> bool | None:
        bill = (await billing.GetBill(billing_pb.GetBillRequest(bill_id=bill_id))).bill
        return (
            True
            if (bill.status, money(bill.paid_amount), money(bill.open_amount)) == (status, paid, open_amount)
            else None
        )

    await eventually(probe, timeout=60, what=f"bill {bill_id} to read {status}, paid {paid}, open {open_amount}")


async def bills_read(
    billing: billing_grpc.BillingServiceAsyncStub,
    who: Customer,
    found: Sequence[bill_pb2.Bill],
    statuses: Sequence[int],
) -> None:
    for bill, expected, status in zip(found, who.book.bills, statuses, strict=True):
        await bill_reads(billing, bill.bill_id, status, expected.paid, expected.open_amount)


async def stream(
    charging: charging_grpc.ChargingServiceAsyncStub, slices: Sequence[Sequence[usage_pb2.UsageEvent]]
) -> list[usage_pb2.UsageResult]:
    """Streams the slices in one StreamUsage call; its results, in stream order."""
    response = await charging.StreamUsage(iter([charging_pb.StreamUsageRequest(events=s) for s in slices]), timeout=60)
    return list(response.results)


class Usage:
    """Usage events the test sends now, each with the charge it expects (zero: none, it is free)."""

    def __init__(self, now: datetime) -> None:
        self.now = now
        self.events: list[usage_pb2.UsageEvent] = []
        self.expected: list[Decimal] = []

    def add(self, who: Customer, event_type: str, quantity: int) -> usage_pb2.UsageEvent:
        meter = who.api if event_type == "api.call" else who.sms
        self.expected.append(meter.rate(quantity))
        event = usage_pb2.UsageEvent(
            event_id=f"life-{uuid.uuid4().hex}",
            account_id=who.account_id,
            event_type=event_type,
            event_time=to_timestamp(self.now),
            quantity=str(quantity),
        )
        self.events.append(event)
        return event

    def check(self, results: Sequence[usage_pb2.UsageResult], accepted: list[str]) -> None:
        """Each event rated, with exactly the test's charge; its id remembered for the reconciliation."""
        assert [r.event_id for r in results] == [e.event_id for e in self.events]
        assert [r.status for r in results] == [usage_pb2.USAGE_STATUS_RATED] * len(results), [r.reason for r in results]
        assert [sum((money(c.amount) for c in r.charges), ZERO) for r in results] == self.expected
        assert [len(r.charges) for r in results] == [1 if x else 0 for x in self.expected]
        accepted.extend(e.event_id for e in self.events)


async def pay(balance: balance_grpc.BalanceServiceAsyncStub, who: Customer, amount: Decimal) -> None:
    """The customer pays, whether or not its bills are in the ERP yet: the gateway books the payment
    in Tryton as billing allocated it, once those bills' invoices are there."""
    paid = await balance.RecordPayment(
        balance_pb.RecordPaymentRequest(
            account_id=who.account_id,
            amount=to_money(amount, "EUR"),
            method=payment_pb2.PAYMENT_METHOD_TYPE_BANK_TRANSFER,
            reference=f"life-{uuid.uuid4().hex[:12]}",
            request_id=str(uuid.uuid4()),
        )
    )
    assert money(paid.payment.amount) == amount
    who.payment_ids.append(paid.payment.payment_id)
    who.book.pay(amount)


async def buy(customer: customer_grpc.CustomerServiceAsyncStub, who: Customer, code: str) -> None:
    """Buys the offer now, retried with the same request id while customer cannot reach the
    charging catalog (UNAVAILABLE, nothing stored), as a client would on a loaded machine."""
    request = customer_pb.CreatePurchaseRequest(
        account_id=who.account_id,
        purchase=purchase_pb2.Purchase(charge_offer_code=code),
        request_id=str(uuid.uuid4()),
    )

    async def attempt() -> bool | None:
        try:
            await customer.CreatePurchase(request)
        except grpc.aio.AioRpcError as exc:
            if exc.code() != grpc.StatusCode.UNAVAILABLE:
                raise
            return None
        return True

    await eventually(attempt, what=f"{who.name} to buy {code}")


async def charging_status(charging: charging_grpc.ChargingServiceAsyncStub, who: Customer, status: int) -> None:
    async def probe() -> bool | None:
        got = await charging.GetChargingAccount(charging_pb.GetChargingAccountRequest(account_id=who.account_id))
        return True if got.charging_account.status == status else None

    await eventually(probe, what=f"charging to see {who.name} in status {status}")


async def account_status(
    customer: customer_grpc.CustomerServiceAsyncStub, who: Customer, status: int
) -> account_pb2.Account:
    async def probe() -> account_pb2.Account | None:
        got = (await customer.GetAccount(customer_pb.GetAccountRequest(account_id=who.account_id))).account
        return got if got.status == status else None

    return await eventually(probe, what=f"{who.name} in status {status}")


async def balance_total(balance: balance_grpc.BalanceServiceAsyncStub, who: Customer, expected: Decimal) -> None:
    async def probe() -> bool | None:
        got = await balance.GetBalance(balance_pb.GetBalanceRequest(account_id=who.account_id))
        return True if money(got.total) == expected else None

    await eventually(probe, timeout=60, what=f"{who.name}'s balance to be {expected}")


async def synced(erp: erp_grpc.ErpGatewayServiceAsyncStub, entity_type: int, entity_id: str) -> str:
    """The ERP id of a record once its job on the (one) Tryton connection succeeded."""

    async def probe() -> str | None:
        state = await erp.GetSyncState(erp_pb.GetSyncStateRequest(entity_type=entity_type, entity_id=entity_id))  # type: ignore[arg-type]
        (job,) = state.jobs
        return job.erp_id if job.state == SUCCEEDED else None

    return await eventually(probe, timeout=180, what=f"{entity_id} ({entity_type}) in Tryton")


async def test_three_customers_from_purchase_to_the_erp(
    stack: Stack,
    smtp: MailServer,
    channels: dict[str, grpc.aio.Channel],
    tryton: Tryton,
) -> None:
    customer = customer_grpc.CustomerServiceStub(channels["customer"])
    charging = charging_grpc.ChargingServiceStub(channels["charging"])
    balance = balance_grpc.BalanceServiceStub(channels["balance"])
    billing = billing_grpc.BillingServiceStub(channels["billing"])
    collections = collections_grpc.CollectionsServiceStub(channels["billing"])
    erp = erp_grpc.ErpGatewayServiceStub(channels["erp_gateway"])
    everyone = ("billing", "charging", "customer", "balance", "erp_gateway")
    accepted: list[str] = []

    # -- 20 January, next year (inside Tryton's fiscal years) ------------------------------------
    year = (await clock_now(channels)).year + 1
    await advance_to(channels, datetime(year, 1, 20, 9, tzinfo=UTC), services=everyone, timeout=30)
    await tryton_connection(erp, tryton)

    suffix = uuid.uuid4().hex[:6]
    pro, addon = f"pro_{suffix}", f"addon_{suffix}"
    for code, name, charges in (
        (
            pro,
            "Lifecycle Pro",
            [
                catalog_pb2.Charge(
                    code="setup",
                    name="Setup",
                    one_time=catalog_pb2.OneTimeFee(amount=str(SETUP_FEE)),
                    tax_code="standard",
                ),
                catalog_pb2.Charge(
                    code="monthly",
                    name="Monthly fee",
                    recurring=catalog_pb2.RecurringFee(
                        amount=str(MONTHLY_FEE), timing=catalog_pb2.RECURRING_TIMING_IN_ADVANCE, prorate=True
                    ),
                    tax_code="standard",
                ),
                catalog_pb2.Charge(
                    code="api_calls",
                    name="API calls",
                    event_type="api.call",
                    graduated=catalog_pb2.TieredPrice(
                        tiers=[
                            catalog_pb2.Tier(up_to=str(up_to), unit_price=str(price))
                            if up_to is not None
                            else catalog_pb2.Tier(unit_price=str(price))
                            for up_to, price in API_TIERS
                        ]
                    ),
                    tax_code="standard",
                ),
                catalog_pb2.Charge(
                    code="sms",
                    name="SMS",
                    event_type="sms.sent",
                    per_unit=catalog_pb2.PerUnitPrice(unit_price=str(SMS_PRICE)),
                    tax_code="reduced",
                ),
            ],
        ),
        (
            addon,
            "Priority support",
            [
                catalog_pb2.Charge(
                    code="support",
                    name="Priority support",
                    recurring=catalog_pb2.RecurringFee(
                        amount=str(SUPPORT_FEE), timing=catalog_pb2.RECURRING_TIMING_IN_ADVANCE, prorate=True
                    ),
                    tax_code="standard",
                )
            ],
        ),
    ):
        draft = await charging.CreateChargeOffer(
            charging_pb.CreateChargeOfferRequest(
                charge_offer=catalog_pb2.ChargeOffer(code=code, name=name, currency_code="EUR", charges=charges)
            )
        )
        await charging.ActivateChargeOffer(
            charging_pb.ActivateChargeOfferRequest(charge_offer_id=draft.charge_offer.charge_offer_id)
        )

    # Dunning for the accounts labelled high risk: reminder at +3, late fee at +10, suspension at
    # +20, write-off at +90 days past due. The others enter no scenario.
    await collections.CreateCollectionsScenario(
        collections_pb.CreateCollectionsScenarioRequest(
            scenario=cpb.CollectionsScenario(
                display_name="High risk",
                entry_criteria=cpb.EntryCriteria(labels={"risk": "high"}),
                steps=[
                    cpb.CollectionsStep(days_past_due=3, action=cpb.COLLECTIONS_ACTION_TYPE_REMINDER_EMAIL),
                    cpb.CollectionsStep(
                        days_past_due=10,
                        action=cpb.COLLECTIONS_ACTION_TYPE_LATE_FEE,
                        late_fee=cpb.LateFeeRule(fixed_amounts=[to_money(LATE_FEE, "EUR")]),
                    ),
                    cpb.CollectionsStep(days_past_due=20, action=cpb.COLLECTIONS_ACTION_TYPE_SUSPEND),
                    cpb.CollectionsStep(days_past_due=90, action=cpb.COLLECTIONS_ACTION_TYPE_WRITE_OFF),
                ],
            ),
            request_id=str(uuid.uuid4()),
        )
    )

    rome = Customer("Rome", "Europe/Rome", 1, 30, "ap@roma.example")
    york = Customer("New York", "America/New_York", 15, 30, "ap@nyc.example")
    kolkata = Customer("Kolkata", "Asia/Kolkata", 31, 10, "ap@kolkata.example")
    customers = (rome, york, kolkata)
    opened = await clock_now(channels)
    for who in customers:
        profile = account_pb2.BillingProfile(
            bill_cycle_day=who.billing_day,
            frequency=account_pb2.BILLING_FREQUENCY_MONTHLY,
            payment_terms_days=who.terms,
        )
        if who is york:
            profile.threshold_amount.CopyFrom(to_money(THRESHOLD, "EUR"))
        account = (
            await customer.CreateAccount(
                customer_pb.CreateAccountRequest(
                    request_id=str(uuid.uuid4()),
                    account=account_pb2.Account(
                        type=account_pb2.ACCOUNT_TYPE_BUSINESS,
                        display_name=f"Lifecycle {who.name} Ltd",
                        currency_code="EUR",
                        time_zone=who.zone.key,
                        billing_profile=profile,
                        labels={"risk": "high"} if who is kolkata else {},
                    ),
                )
            )
        ).account
        who.account_id = account.account_id
        first_day = opened.astimezone(who.zone).date()
        assert first_day == date(year, 1, 20)
        cycles = monthly_cycles(first_day, who.billing_day)
        who.cycles = [next(cycles) for _ in range(4)]
        await customer.AddContact(
            customer_pb.AddContactRequest(
                account_id=who.account_id,
                request_id=str(uuid.uuid4()),
                contact=contact_pb2.Contact(
                    role=contact_pb2.CONTACT_ROLE_BILLING, name="Accounts payable", email=who.email
                ),
            )
        )
        await buy(customer, who, pro)
    # The calendar, by hand: Kolkata's billing day, the 31st, is the last of February.
    end_of_february = date(year, 2, calendar.monthrange(year, 2)[1])
    assert rome.cycles == [
        (date(year, 1, 20), date(year, 2, 1)),
        (date(year, 2, 1), date(year, 3, 1)),
        (date(year, 3, 1), date(year, 4, 1)),
        (date(year, 4, 1), date(year, 5, 1)),
    ]
    assert york.cycles == [
        (date(year, 1, 20), date(year, 2, 15)),
        (date(year, 2, 15), date(year, 3, 15)),
        (date(year, 3, 15), date(year, 4, 15)),
        (date(year, 4, 15), date(year, 5, 15)),
    ]
    assert kolkata.cycles == [
        (date(year, 1, 20), date(year, 1, 31)),
        (date(year, 1, 31), end_of_february),
        (end_of_february, date(year, 3, 31)),
        (date(year, 3, 31), date(year, 4, 30)),
    ]
    # The fees of the first cycle (whole: the purchase starts on the cycle's first day) tell that
    # charging knows the account, its purchase and its cycle.
    for who in customers:
        await unbilled(billing, who, SETUP_FEE + MONTHLY_FEE, "the first fees")
        await charging_status(charging, who, charging_account_pb2.CHARGING_ACCOUNT_STATUS_ACTIVE)

    def fees(who: Customer, n: int, *, setup: bool = False) -> list[Line]:
        lines = [Line(pro, "monthly", "standard", Decimal(1), MONTHLY_FEE, who.cycle(n))]
        if setup:
            lines.append(Line(pro, "setup", "standard", Decimal(1), SETUP_FEE, who.cycle(n)))
        return lines

    # Usage streams in, in two slices; every event's charge is the test's (tiers round cumulatively).
    usage = Usage(await clock_now(channels))
    first = [
        usage.add(rome, "api.call", 400),  # inside the free 1000: no charge
        usage.add(rome, "api.call", 700),
        usage.add(york, "sms.sent", 300),
        usage.add(kolkata, "api.call", 3000),
        usage.add(rome, "sms.sent", 120),
    ]
    second = [usage.add(rome, "api.call", 650), usage.add(kolkata, "sms.sent", 40)]
    usage.check(await stream(charging, [first, second]), accepted)
    await unbilled(
        billing, rome, SETUP_FEE + MONTHLY_FEE + rome.api.unbilled_amount + rome.sms.unbilled_amount, "usage"
    )
    await unbilled(billing, york, SETUP_FEE + MONTHLY_FEE + york.sms.unbilled_amount, "usage below the threshold")
    assert SETUP_FEE + MONTHLY_FEE + york.sms.unbilled_amount < THRESHOLD

    # New York's next SMS crosses its threshold: billed at once, everything unbilled.
    usage = Usage(await clock_now(channels))
    crossing = usage.add(york, "sms.sent", 10)
    usage.check([(await charging.RecordUsage(charging_pb.RecordUsageRequest(event=crossing))).result], accepted)
    today = date(year, 1, 20)
    threshold_bill = york.book.issue(
        ExpectedBill(
            fees(york, 1, setup=True) + york.usage_lines(pro, york.cycle(1)),
            RATES,
            issue_date=today,
            due_date=today + timedelta(days=york.terms),
        )
    )
    assert threshold_bill.subtotal >= THRESHOLD
    (bill,) = await bills(billing, york, 1)
    # A bill on demand or at the threshold covers its cycle up to its issue date, inclusive.
    so_far = (york.cycle(1)[0], today + timedelta(days=1))
    assert_bill(bill, threshold_bill, bill_pb2.BILL_TRIGGER_THRESHOLD, bill_pb2.BILL_STATUS_ISSUED, so_far)

    # Rome asks for its bill now; a retry returns the same bill.
    request_id = str(uuid.uuid4())
    bill = (await billing.BillNow(billing_pb.BillNowRequest(account_id=rome.account_id, request_id=request_id))).bill
    again = (await billing.BillNow(billing_pb.BillNowRequest(account_id=rome.account_id, request_id=request_id))).bill
    assert again.bill_id == bill.bill_id
    bill_now = rome.book.issue(
        ExpectedBill(
            fees(rome, 1, setup=True) + rome.usage_lines(pro, rome.cycle(1)),
            RATES,
            issue_date=today,
            due_date=today + timedelta(days=rome.terms),
        )
    )
    assert_bill(bill, bill_now, bill_pb2.BILL_TRIGGER_ON_DEMAND, bill_pb2.BILL_STATUS_ISSUED, so_far)
    await pay(balance, rome, bill_now.total)
    await bill_reads(billing, bill.bill_id, bill_pb2.BILL_STATUS_PAID, bill_now.total, ZERO)

    # The rest of January's usage, for the cycle bills.
    usage = Usage(await clock_now(channels))
    third = [
        usage.add(rome, "api.call", 900),
        usage.add(rome, "sms.sent", 30),
        usage.add(york, "api.call", 1200),
        usage.add(york, "api.call", 800),
        usage.add(york, "sms.sent", 150),
    ]
    usage.check(await stream(charging, [third]), accepted)
    await unbilled(billing, rome, rome.api.unbilled_amount + rome.sms.unbilled_amount, "usage after the bill now")
    await unbilled(billing, york, york.api.unbilled_amount + york.sms.unbilled_amount, "usage after the threshold")
    await unbilled(
        billing, kolkata, SETUP_FEE + MONTHLY_FEE + kolkata.api.unbilled_amount + kolkata.sms.unbilled_amount, "usage"
    )
    for who in customers:
        await balance_total(
            balance,
            who,
            who.book.balance(
                (SETUP_FEE + MONTHLY_FEE if who is kolkata else ZERO)
                + who.api.unbilled_amount
                + who.sms.unbilled_amount
            ),
        )

    # -- Move 1: to 20 February ------------------------------------------------------------------
    await advance_to(channels, datetime(year, 2, 20, tzinfo=UTC))
    for who in customers:
        end = who.cycle(1)[1]
        lines = fees(who, 1, setup=True) if who is kolkata else []
        who.book.issue(
            ExpectedBill(
                lines + who.usage_lines(pro, who.cycle(1)),
                RATES,
                issue_date=end,
                due_date=end + timedelta(days=who.terms),
            )
        )
        who.new_cycle()
    rome_bills = await bills(billing, rome, 2)
    york_bills = await bills(billing, york, 2)
    (kolkata_c1,) = await bills(billing, kolkata, 1)
    assert_bill(
        rome_bills[1], rome.book.bills[1], bill_pb2.BILL_TRIGGER_CYCLE, bill_pb2.BILL_STATUS_ISSUED, rome.cycle(1)
    )
    assert_bill(
        york_bills[1], york.book.bills[1], bill_pb2.BILL_TRIGGER_CYCLE, bill_pb2.BILL_STATUS_ISSUED, york.cycle(1)
    )
    # Kolkata's: due 10 February, overdue since the 11th.
    assert_bill(
        kolkata_c1, kolkata.book.bills[0], bill_pb2.BILL_TRIGGER_CYCLE, bill_pb2.BILL_STATUS_OVERDUE, kolkata.cycle(1)
    )

    # Kolkata's case opened late (day 10) and ran the reminder (day 3) and the late fee (day 10), in order.
    case = await case_when(collections, kolkata.account_id, "the reminder and the late fee", 2)
    due = kolkata.book.bills[0].due_date
    assert (case.state, case.scenario_display_name, pb_date(case.past_due_since)) == (
        cpb.COLLECTIONS_CASE_STATE_OPEN,
        "High risk",
        due,
    )
    assert money(case.overdue_amount) == kolkata.book.bills[0].total
    assert [(a.type, a.state) for a in case.actions] == [
        (cpb.COLLECTIONS_ACTION_TYPE_REMINDER_EMAIL, DONE),
        (cpb.COLLECTIONS_ACTION_TYPE_LATE_FEE, DONE),
        (cpb.COLLECTIONS_ACTION_TYPE_SUSPEND, SCHEDULED),
        (cpb.COLLECTIONS_ACTION_TYPE_WRITE_OFF, SCHEDULED),
    ]
    assert [at(a.due_time) for a in case.actions] == [
        local_midnight(due + timedelta(days=days), kolkata.zone) for days in (3, 10, 20, 90)
    ]
    assert money(case.actions[1].amount) == LATE_FEE

    # The reminder went by email, once, to the billing contact (Kolkata has no collections contact).
    reminder_id = f"<notice-{case.actions[0].notice_id}@evolutivo.test>"

    async def reminded() -> list[tuple[list[str], EmailMessage]] | None:
        return smtp.with_message_id(reminder_id) or None

    ((recipients, reminder),) = await eventually(reminded, timeout=60, what="the reminder email")
    assert recipients == [kolkata.email]
    overdue = money_text(kolkata.book.bills[0].total)
    assert reminder["Subject"] == f"Payment reminder: {overdue} overdue from Evolutivo Telecom S.L."
    body = cast(EmailMessage, reminder.get_body(("plain",))).get_content()
    assert kolkata_c1.bill_number in body
    assert f"Overdue amount: {overdue}, 10 days past due." in body
    assert at(case.actions[0].finish_time) <= at(case.actions[1].finish_time)
    for who in (rome, york):
        listed = await collections.ListCollectionsCases(
            collections_pb.ListCollectionsCasesRequest(account_id=who.account_id)
        )
        assert list(listed.collections_cases) == [], f"{who.name} is in no scenario"

    async def late_fee_entry() -> list[Decimal] | None:
        found = await balance.ListLedgerEntries(
            balance_pb.ListLedgerEntriesRequest(
                account_id=kolkata.account_id, types=[ledger_pb2.LEDGER_ENTRY_TYPE_ADJUSTMENT]
            )
        )
        amounts = [money(e.amount) for e in found.entries if e.reason_code == "LATE_FEE"]
        return amounts or None

    assert await eventually(late_fee_entry, what="the late fee in balance") == [LATE_FEE]
    late_fee_line = Line("collections", "late_fee", "exempt", Decimal(1), LATE_FEE, kolkata.cycle(2))
    await unbilled(billing, kolkata, MONTHLY_FEE + LATE_FEE, "February's fee and the late fee")

    # Rome pays in full; New York in part: its payment pays the threshold bill, then part of the cycle bill.
    await pay(balance, rome, rome.book.bills[1].total)
    york_payment = Decimal("125.00")
    assert york.book.bills[0].total < york_payment < york.book.bills[0].total + york.book.bills[1].total
    await pay(balance, york, york_payment)
    await bills_read(billing, rome, rome_bills, [bill_pb2.BILL_STATUS_PAID] * 2)
    await bills_read(billing, york, york_bills, [bill_pb2.BILL_STATUS_PAID, bill_pb2.BILL_STATUS_PARTIALLY_PAID])

    # Rome adds priority support today: prorated over February's remaining days.
    await buy(customer, rome, addon)
    bought = (await clock_now(channels)).astimezone(rome.zone).date()
    support_february = prorated(SUPPORT_FEE, bought, rome.cycle(2))
    await unbilled(billing, rome, MONTHLY_FEE + support_february, "February's fees")

    # February's usage: the tiers start again.
    usage = Usage(await clock_now(channels))
    fourth = [
        usage.add(rome, "api.call", 500),
        usage.add(rome, "api.call", 1500),
        usage.add(york, "api.call", 2500),
        usage.add(kolkata, "api.call", 1000),  # all free: no charge, no line
        usage.add(kolkata, "sms.sent", 20),
    ]
    usage.check(await stream(charging, [fourth]), accepted)
    await unbilled(billing, rome, MONTHLY_FEE + support_february + rome.api.unbilled_amount, "February's usage")
    await unbilled(billing, york, MONTHLY_FEE + york.api.unbilled_amount, "February's usage")
    await unbilled(billing, kolkata, MONTHLY_FEE + LATE_FEE + kolkata.sms.unbilled_amount, "February's usage")

    # -- Move 2: to 2 March ----------------------------------------------------------------------
    await advance_to(channels, datetime(year, 3, 2, tzinfo=UTC))
    # Rome's February, and Kolkata's cycle to 28 February (its billing day, the 31st, clamped), with the late fee.
    for who, extra in (
        (rome, [Line(addon, "support", "standard", Decimal(1), support_february, rome.cycle(2))]),
        (kolkata, [late_fee_line]),
    ):
        end = who.cycle(2)[1]
        who.book.issue(
            ExpectedBill(
                fees(who, 2) + extra + who.usage_lines(pro, who.cycle(2)),
                RATES,
                issue_date=end,
                due_date=end + timedelta(days=who.terms),
            )
        )
        who.new_cycle()
    rome_bills = await bills(billing, rome, 3)
    kolkata_bills = await bills(billing, kolkata, 2)
    assert_bill(
        rome_bills[2], rome.book.bills[2], bill_pb2.BILL_TRIGGER_CYCLE, bill_pb2.BILL_STATUS_ISSUED, rome.cycle(2)
    )
    assert_bill(
        kolkata_bills[1],
        kolkata.book.bills[1],
        bill_pb2.BILL_TRIGGER_CYCLE,
        bill_pb2.BILL_STATUS_ISSUED,
        kolkata.cycle(2),
    )
    assert kolkata.book.bills[1].previous_balance == kolkata.book.bills[0].total

    # Day 20: Kolkata is suspended through customer, and charging refuses its usage.
    await case_when(collections, kolkata.account_id, "the suspension", 3)
    suspended = await account_status(customer, kolkata, account_pb2.ACCOUNT_STATUS_SUSPENDED)
    assert suspended.last_status_change.actor == account_pb2.STATUS_ACTOR_COLLECTIONS
    await charging_status(charging, kolkata, charging_account_pb2.CHARGING_ACCOUNT_STATUS_SUSPENDED)
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await charging.RecordUsage(
            charging_pb.RecordUsageRequest(
                event=usage_pb2.UsageEvent(
                    event_id=f"life-{uuid.uuid4().hex}",
                    account_id=kolkata.account_id,
                    event_type="api.call",
                    event_time=to_timestamp(await clock_now(channels)),
                    quantity="100",
                )
            )
        )
    assert refused.value.code() == grpc.StatusCode.FAILED_PRECONDITION

    # Kolkata pays everything it owes: both bills are paid, the case closes and it is reinstated.
    kolkata_owes = kolkata.book.bills[1].amount_due
    await pay(balance, kolkata, kolkata_owes)
    await bills_read(billing, kolkata, kolkata_bills, [bill_pb2.BILL_STATUS_PAID] * 2)
    case = await case_when(collections, kolkata.account_id, "the reinstatement", 4)
    assert (case.state, case.close_reason) == (cpb.COLLECTIONS_CASE_STATE_CLOSED, cpb.CASE_CLOSE_REASON_PAID)
    assert [(a.type, a.state) for a in case.actions] == [
        (cpb.COLLECTIONS_ACTION_TYPE_REMINDER_EMAIL, DONE),
        (cpb.COLLECTIONS_ACTION_TYPE_LATE_FEE, DONE),
        (cpb.COLLECTIONS_ACTION_TYPE_SUSPEND, DONE),
        (cpb.COLLECTIONS_ACTION_TYPE_WRITE_OFF, cpb.COLLECTIONS_ACTION_STATE_CANCELLED),
        (cpb.COLLECTIONS_ACTION_TYPE_REINSTATE, DONE),
    ]
    assert all(a.attempts <= 1 for a in case.actions)
    await account_status(customer, kolkata, account_pb2.ACCOUNT_STATUS_ACTIVE)
    await charging_status(charging, kolkata, charging_account_pb2.CHARGING_ACCOUNT_STATUS_ACTIVE)
    await pay(balance, rome, rome.book.bills[2].total)
    await bills_read(billing, rome, rome_bills, [bill_pb2.BILL_STATUS_PAID] * 3)

    usage = Usage(await clock_now(channels))
    fifth = [usage.add(kolkata, "api.call", 1500)]
    usage.check(await stream(charging, [fifth]), accepted)
    await unbilled(billing, rome, MONTHLY_FEE + SUPPORT_FEE, "March's fees, support in full")
    await unbilled(billing, kolkata, MONTHLY_FEE + kolkata.api.unbilled_amount, "March's fee and usage")

    # -- Move 3: to 1 April ----------------------------------------------------------------------
    await advance_to(channels, datetime(year, 4, 1, tzinfo=UTC))
    for who, n, extra in (
        (york, 2, []),
        (rome, 3, [Line(addon, "support", "standard", Decimal(1), SUPPORT_FEE, rome.cycle(3))]),
        (kolkata, 3, []),
    ):
        end = who.cycle(n)[1]
        who.book.issue(
            ExpectedBill(
                fees(who, n) + extra + who.usage_lines(pro, who.cycle(n)),
                RATES,
                issue_date=end,
                due_date=end + timedelta(days=who.terms),
            )
        )
        who.new_cycle()
    rome_bills = await bills(billing, rome, 4)
    york_bills = await bills(billing, york, 3)
    kolkata_bills = await bills(billing, kolkata, 3)
    assert_bill(
        rome_bills[3], rome.book.bills[3], bill_pb2.BILL_TRIGGER_CYCLE, bill_pb2.BILL_STATUS_ISSUED, rome.cycle(3)
    )
    assert_bill(
        york_bills[2], york.book.bills[2], bill_pb2.BILL_TRIGGER_CYCLE, bill_pb2.BILL_STATUS_ISSUED, york.cycle(2)
    )
    assert_bill(
        kolkata_bills[2],
        kolkata.book.bills[2],
        bill_pb2.BILL_TRIGGER_CYCLE,
        bill_pb2.BILL_STATUS_ISSUED,
        kolkata.cycle(3),
    )
    await pay(balance, rome, rome.book.bills[3].total)
    await bills_read(billing, rome, rome_bills, [bill_pb2.BILL_STATUS_PAID] * 4)
    # New York's part-paid bill went overdue on its due date; its other bills are paid or not due.
    await bills_read(
        billing,
        york,
        york_bills,
        [bill_pb2.BILL_STATUS_PAID, bill_pb2.BILL_STATUS_OVERDUE, bill_pb2.BILL_STATUS_ISSUED],
    )
    await bills_read(
        billing,
        kolkata,
        kolkata_bills,
        [bill_pb2.BILL_STATUS_PAID, bill_pb2.BILL_STATUS_PAID, bill_pb2.BILL_STATUS_ISSUED],
    )

    # -- Where everything stands -----------------------------------------------------------------
    # Each account's cycles, in its own time zone; New York's across February and its DST change
    # (second Sunday of March), Rome's across Europe's (last Sunday of March): an hour short.
    for who, closed in ((rome, 3), (york, 2), (kolkata, 3)):
        found = (await billing.ListBillCycles(billing_pb.ListBillCyclesRequest(account_id=who.account_id))).bill_cycles
        assert [
            (
                c.sequence,
                c.status,
                c.time_zone,
                at(c.start_time),
                at(c.end_time),
                pb_date(c.start_date),
                pb_date(c.end_date),
            )
            for c in reversed(found)
        ] == [
            (
                n,
                bill_cycle_pb2.BILL_CYCLE_STATUS_CLOSED if n <= closed else bill_cycle_pb2.BILL_CYCLE_STATUS_OPEN,
                who.zone.key,
                local_midnight(start, who.zone),
                local_midnight(end, who.zone),
                start,
                end,
            )
            for n, (start, end) in enumerate(who.cycles[: closed + 1], 1)
        ], who.name
    for who, n in ((york, 2), (rome, 3)):
        start, end = who.cycle(n)
        assert local_midnight(end, who.zone) - local_midnight(start, who.zone) == timedelta(
            days=(end - start).days, hours=-1
        )

    # What is charged for the next cycles is not billed yet; balance holds all of it, to the cent.
    next_fees = {rome.name: MONTHLY_FEE + SUPPORT_FEE, york.name: MONTHLY_FEE, kolkata.name: MONTHLY_FEE}
    for who in customers:
        await unbilled(billing, who, next_fees[who.name], "the next cycle's fees")
        await balance_total(balance, who, who.book.balance(next_fees[who.name]))
    assert [who.book.balance(next_fees[who.name]) for who in customers] == [
        next_fees[rome.name],  # paid in full
        york.book.bills[1].open_amount + york.book.bills[2].total + next_fees[york.name],  # paid in part
        kolkata.book.bills[2].total + next_fees[kolkata.name],  # paid up after its suspension
    ]

    # Ten bills, numbered without a gap in the order they were issued.
    everything = [
        (who, bill, expected)
        for who, found in ((rome, rome_bills), (york, york_bills), (kolkata, kolkata_bills))
        for bill, expected in zip(found, who.book.bills, strict=True)
    ]
    numbers = sorted(bill.bill_number for _, bill, _ in everything)
    assert numbers == [f"F-{year}-{n:06d}" for n in range(1, 11)]

    # Every bill was emailed once to its account's billing contact, its PDF attached, with its figures.
    for who, bill, expected in everything:

        async def emailed(bill_id: str = bill.bill_id) -> list[object] | None:
            mine = smtp.with_message_id(f"<bill-{bill_id}@evolutivo.test>")
            return cast(list[object], mine) if mine else None

        await eventually(emailed, timeout=60, what=f"the email of {bill.bill_number}")
        ((recipients, message),) = smtp.with_message_id(f"<bill-{bill.bill_id}@evolutivo.test>")
        assert recipients == [who.email]
        assert bill.bill_number in message["Subject"]
        (attached,) = list(message.iter_attachments())
        assert attached.get_filename() == f"{bill.bill_number}.pdf"
        text = pdf_text(cast(bytes, attached.get_content()))
        for figure in (bill.bill_number, money_text(expected.total), money_text(expected.amount_due)):
            assert figure in text, f"{figure!r} on the PDF of {bill.bill_number}"

    assert len(smtp.with_message_id(reminder_id)) == 1, "the reminder went once"

    # Tryton holds every bill as a posted invoice with the bill's totals, and every payment,
    # reconciled against the invoices it paid: what each invoice still owes is what billing says.
    client = TrytonClient(tryton.url, ADMIN, ADMIN_PASSWORD, 60.0)
    all_invoices: list[int] = []
    all_payments: list[int] = []
    try:
        for who in customers:
            party = int(await synced(erp, sync_state_pb2.ENTITY_TYPE_CUSTOMER, who.account_id))
            for payment_id, amount in zip(who.payment_ids, who.book.payments, strict=True):
                move = int(await synced(erp, sync_state_pb2.ENTITY_TYPE_PAYMENT, payment_id))
                all_payments.append(move)
                moved = await client.read(
                    "account.move.line",
                    await client.search("account.move.line", [("move", "=", move)]),
                    ["account", "party", "debit", "credit"],
                )
                assert [x["debit"] for x in moved if x["account"] == tryton.accounts["cash"]] == [amount]
                assert sum((x["credit"] for x in moved if x["party"] == party), ZERO) == amount
            invoice_ids = []
            for _, bill, expected in (x for x in everything if x[0] is who):
                invoice = int(await synced(erp, sync_state_pb2.ENTITY_TYPE_INVOICE, bill.bill_id))
                invoice_ids.append(invoice)
                (row,) = await client.read(
                    "account.invoice",
                    [invoice],
                    [
                        "reference",
                        "party",
                        "state",
                        "untaxed_amount",
                        "tax_amount",
                        "total_amount",
                        "amount_to_pay",
                        "invoice_date",
                    ],
                )
                assert (row["reference"], row["party"], row["invoice_date"]) == (
                    bill.bill_number,
                    party,
                    expected.issue_date,
                )
                assert (row["untaxed_amount"], row["tax_amount"], row["total_amount"]) == (
                    expected.subtotal,
                    expected.tax_total,
                    expected.total,
                ), bill.bill_number
                assert (row["state"], row["amount_to_pay"]) == (
                    "paid" if expected.open_amount == 0 else "posted",
                    expected.open_amount,
                ), bill.bill_number
            assert sorted(await client.search("account.invoice", [("party", "=", party)])) == sorted(invoice_ids)
            # The party's receivable: debited by its invoices, credited by its payments, nothing else
            # (a transfer of a payment's credit onto a later invoice debits and credits it alike).
            receivable = await client.read(
                "account.move.line",
                await client.search(
                    "account.move.line", [("party", "=", party), ("account", "=", tryton.accounts["receivable"])]
                ),
                ["debit", "credit", "move"],
            )
            transfers = set(
                await client.search("account.move", [("description", "like", "evolutivo:payment_allocation:%")])
            )
            moved = [x for x in receivable if x["move"] in transfers]
            assert sum((x["debit"] for x in moved), ZERO) == sum((x["credit"] for x in moved), ZERO)
            booked = [x for x in receivable if x["move"] not in transfers]
            assert sum((x["debit"] for x in booked), ZERO) == sum((b.total for b in who.book.bills), ZERO)
            assert sum((x["credit"] for x in booked), ZERO) == sum(who.book.payments, ZERO)
            all_invoices += invoice_ids
        # And nothing else: no invoice or payment twice, none of anybody else.
        assert sorted(await client.search("account.invoice", [])) == sorted(all_invoices)
        payments = await client.search("account.move", [("description", "like", "evolutivo:payment:%")])
        assert sorted(payments) == sorted(all_payments)
    finally:
        await client.aclose()

    # The five books agree: every usage event, charge, payment, late fee and bill.
    await reconciled(stack, accepted, timeout=120)
