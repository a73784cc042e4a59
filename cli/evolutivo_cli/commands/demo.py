"""`evolutivo demo`: a small company's lifecycle on the running local stack, step by step.

It seeds a catalog, a dunning scenario and three customers in three time zones, records three
weeks of usage while moving the shared clock a week at a time, moves it past the cycles' end so
billing issues the bills, then: Rome pays on time, New York pays late, Kolkata goes through
dunning (reminder, late fee, suspension). Every name carries a run id, so the demo can run again on
the same stack (the clock only moves forward: each run starts from where the last one left it).
"""

from __future__ import annotations

import random
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from functools import partial
from typing import Annotated, TypeVar
from zoneinfo import ZoneInfo

import grpc
import typer
from evolutivo.admin.v1 import clock_admin_service_pb2 as clock_pb
from evolutivo.balance.v1 import balance_service_pb2 as balance_pb
from evolutivo.balance.v1 import payment_pb2
from evolutivo.billing.v1 import bill_cycle_pb2, bill_pb2
from evolutivo.billing.v1 import billing_service_pb2 as billing_pb
from evolutivo.billing.v1 import collections_pb2 as cpb
from evolutivo.billing.v1 import collections_service_pb2 as collections_pb
from evolutivo.charging.v1 import catalog_pb2, usage_pb2
from evolutivo.charging.v1 import charging_service_pb2 as charging_pb
from evolutivo.customer.v1 import account_pb2, purchase_pb2
from evolutivo.customer.v1 import customer_service_pb2 as customer_pb
from google.protobuf.duration_pb2 import Duration
from rich.rule import Rule

from evolutivo_cli.app import State, state
from evolutivo_cli.charts import sparkline
from evolutivo_cli.commands.balances import history_points
from evolutivo_cli.commands.bills import show_bill
from evolutivo_cli.commands.clock import wait_followed
from evolutivo_cli.commands.collections import aging_bars
from evolutivo_cli.errors import CliError, ExitCode
from evolutivo_cli.render import Output, amount, day, decimal, enum, money, table, to_date, to_datetime, to_money
from evolutivo_cli.settings import SERVICES

T = TypeVar("T")

CURRENCY = "EUR"
PAYMENT_TERMS_DAYS = 14
# The first cycle ends on this local day after today: three weeks of usage fit in it.
FIRST_CYCLE_DAYS = 22
LATE_FEE = Decimal("15.00")
# Billing's default late-usage delay (BILLING_LATE_USAGE_DELAY_SECONDS): a cycle closes after it.
LATE_USAGE_DELAY = timedelta(hours=1)


@dataclass
class Customer:
    key: str
    name: str
    time_zone: str
    offers: list[str]
    fate: str
    account_id: str = ""
    bills: list[bill_pb2.Bill] = field(default_factory=list)


class Demo:
    def __init__(self, cli: State, wait: float) -> None:
        self.cli = cli
        # With -o json, stdout carries only the final summary: the narration goes to stderr.
        self.out = cli.output if not cli.output.json else Output("table", console=cli.output.err)
        self.wait = wait
        self.run = uuid.uuid4().hex[:6]
        self.random = random.Random(self.run)
        self.started = time.monotonic()
        self.step_number = 0

    # ----------------------------------------------------------------------------- helpers

    def say(self, text: str) -> None:
        self.out.note(text)

    def step(self, title: str) -> None:
        self.step_number += 1
        elapsed = time.monotonic() - self.started
        self.out.print(Rule(f"[bold]{self.step_number}. {title}[/]  [dim]{elapsed:.0f}s[/]", align="left"))

    def poll(self, probe: Callable[[], T | None], what: str, timeout: float | None = None) -> T:
        deadline = time.monotonic() + (timeout or self.wait)
        while True:
            try:
                found = probe()
            except grpc.RpcError as exc:
                # NOT_FOUND while an event crosses NATS is expected; anything else is not.
                if exc.code() != grpc.StatusCode.NOT_FOUND:
                    raise
                found = None
            if found is not None:
                return found
            if time.monotonic() > deadline:
                raise CliError(
                    f"gave up waiting for {what} after {timeout or self.wait:.0f}s",
                    ExitCode.TIMEOUT,
                    "See the services' logs (.data/logs with `make up`); `evolutivo demo --wait 600` waits longer.",
                )
            time.sleep(0.5)

    def now(self) -> datetime:
        return to_datetime(self.cli.clients.clock("billing").GetClock(clock_pb.GetClockRequest()).now)

    def advance_to(self, target: datetime, why: str) -> datetime:
        now = self.now()
        if target > now:
            seconds = int((target - now).total_seconds()) + 1
            moved = self.cli.clients.clock("billing").AdvanceClock(
                clock_pb.AdvanceClockRequest(duration=Duration(seconds=seconds))
            )
            wait_followed(self.cli, moved.revision)
            now = to_datetime(moved.now)
        self.say(f"[cyan]⏩ clock → {now:%Y-%m-%d %H:%M} UTC[/] ({why})")
        return now

    # ------------------------------------------------------------------------------- steps

    def preflight(self) -> None:
        for service in SERVICES:
            try:
                self.cli.clients.clock(service).GetClock(clock_pb.GetClockRequest(), timeout=5)
            except grpc.RpcError as exc:
                code = exc.code()
                if code == grpc.StatusCode.UNIMPLEMENTED:
                    raise CliError(
                        f"{service} runs with the system clock: the demo moves time forward.",
                        ExitCode.UNIMPLEMENTED,
                        "Run the local stack with its default controllable clock (`make up`, without --clock system).",
                    ) from None
                raise
        self.say(f"Demo run [bold]{self.run}[/] on {', '.join(SERVICES)}; clock at {self.now():%Y-%m-%d %H:%M} UTC.")

    def catalog(self) -> tuple[str, str]:
        self.step("A catalog: two charge offers")
        charging = self.cli.clients.charging
        api = catalog_pb2.ChargeOffer(
            code=f"api_{self.run}",
            name="API Metered",
            currency_code=CURRENCY,
            charges=[
                catalog_pb2.Charge(
                    code="api_calls",
                    name="API calls",
                    event_type="api.call",
                    per_unit=catalog_pb2.PerUnitPrice(unit_price="0.01"),
                    tax_code="standard",
                )
            ],
        )
        storage = catalog_pb2.ChargeOffer(
            code=f"storage_{self.run}",
            name="Storage Pro",
            currency_code=CURRENCY,
            charges=[
                catalog_pb2.Charge(
                    code="plan",
                    name="Storage Pro plan",
                    recurring=catalog_pb2.RecurringFee(
                        amount="29.00", timing=catalog_pb2.RECURRING_TIMING_IN_ADVANCE, prorate=True
                    ),
                    tax_code="standard",
                ),
                catalog_pb2.Charge(
                    code="storage",
                    name="Storage (GB-days)",
                    event_type="storage.gb_day",
                    per_unit=catalog_pb2.PerUnitPrice(unit_price="0.02"),
                    tax_code="standard",
                ),
            ],
        )
        rows = []
        for offer in (api, storage):
            draft = charging.CreateChargeOffer(
                charging_pb.CreateChargeOfferRequest(charge_offer=offer, request_id=str(uuid.uuid4()))
            )
            active = charging.ActivateChargeOffer(
                charging_pb.ActivateChargeOfferRequest(charge_offer_id=draft.charge_offer.charge_offer_id)
            ).charge_offer
            prices = "; ".join(
                f"{c.name}: {c.per_unit.unit_price} per unit"
                if c.HasField("per_unit")
                else f"{c.name}: {c.recurring.amount} a month"
                for c in active.charges
            )
            rows.append([active.code, active.name, enum(active, "status"), prices])
        self.out.print(table(None, ["code", "name", "status", "prices (EUR)"], rows))
        return api.code, storage.code

    def scenario(self) -> str:
        self.step("A dunning scenario")
        created = self.cli.clients.collections.CreateCollectionsScenario(
            collections_pb.CreateCollectionsScenarioRequest(
                scenario=cpb.CollectionsScenario(
                    display_name=f"Demo dunning {self.run}",
                    priority=1000,
                    # Only this run's customers enter it (they also name it).
                    entry_criteria=cpb.EntryCriteria(labels={"evolutivo_demo": self.run}),
                    steps=[
                        cpb.CollectionsStep(days_past_due=3, action=cpb.COLLECTIONS_ACTION_TYPE_REMINDER_EMAIL),
                        cpb.CollectionsStep(
                            days_past_due=10,
                            action=cpb.COLLECTIONS_ACTION_TYPE_LATE_FEE,
                            late_fee=cpb.LateFeeRule(fixed_amounts=[to_money(LATE_FEE, CURRENCY)]),
                        ),
                        cpb.CollectionsStep(days_past_due=20, action=cpb.COLLECTIONS_ACTION_TYPE_SUSPEND),
                        cpb.CollectionsStep(days_past_due=90, action=cpb.COLLECTIONS_ACTION_TYPE_WRITE_OFF),
                    ],
                ),
                request_id=str(uuid.uuid4()),
            )
        ).scenario
        self.say(
            f"{created.display_name}: reminder at 3 days past due, {amount(LATE_FEE, CURRENCY)} late fee at 10, "
            "suspension at 20, write-off at 90."
        )
        return created.scenario_id

    def customers(self, api: str, storage: str, scenario_id: str) -> list[Customer]:
        self.step("Three customers in three time zones, and what they bought")
        people = [
            Customer("rome", f"Trattoria Roma {self.run}", "Europe/Rome", [api], "pays on time"),
            Customer("new_york", f"Hudson Analytics {self.run}", "America/New_York", [api, storage], "pays late"),
            Customer("kolkata", f"Bangalore Devices {self.run}", "Asia/Kolkata", [storage], "goes through dunning"),
        ]
        now = self.now()
        customer = self.cli.clients.customer
        rows = []
        for person in people:
            bill_day = (now.astimezone(ZoneInfo(person.time_zone)).date() + timedelta(days=FIRST_CYCLE_DAYS)).day
            account = customer.CreateAccount(
                customer_pb.CreateAccountRequest(
                    request_id=str(uuid.uuid4()),
                    account=account_pb2.Account(
                        type=account_pb2.ACCOUNT_TYPE_BUSINESS,
                        display_name=person.name,
                        currency_code=CURRENCY,
                        time_zone=person.time_zone,
                        labels={"evolutivo_demo": self.run},
                        billing_profile=account_pb2.BillingProfile(
                            bill_cycle_day=bill_day,
                            frequency=account_pb2.BILLING_FREQUENCY_MONTHLY,
                            payment_terms_days=PAYMENT_TERMS_DAYS,
                            collections_scenario_id=scenario_id,
                        ),
                    ),
                )
            ).account
            person.account_id = account.account_id
            for code in person.offers:
                customer.CreatePurchase(
                    customer_pb.CreatePurchaseRequest(
                        account_id=account.account_id,
                        purchase=purchase_pb2.Purchase(charge_offer_code=code),
                        request_id=str(uuid.uuid4()),
                    )
                )
            rows.append(
                [
                    person.name,
                    person.time_zone,
                    account.account_number,
                    f"day {bill_day}",
                    ", ".join(person.offers),
                    person.fate,
                ]
            )
        self.out.print(table(None, ["customer", "time zone", "number", "billed on", "bought", "will"], rows))
        for person in people:
            # Billing opens the first cycle from customer's AccountCreated (over NATS).
            self.poll(partial(self._open_cycle, person.account_id), f"{person.name}'s first bill cycle")
        return people

    def _open_cycle(self, account_id: str) -> bill_cycle_pb2.BillCycle | None:
        cycles = self.cli.clients.billing.ListBillCycles(
            billing_pb.ListBillCyclesRequest(account_id=account_id, page_size=1)
        ).bill_cycles
        return cycles[0] if cycles and cycles[0].status == bill_cycle_pb2.BILL_CYCLE_STATUS_OPEN else None

    def usage(self, people: list[Customer]) -> None:
        self.step("Three weeks of usage, a week at a time")
        charging = self.cli.clients.charging
        rows = []
        since = self.now() + timedelta(minutes=1)
        for week in (1, 2, 3):
            until = self.advance_to(since + timedelta(days=7), f"week {week}")
            events = []
            for person in people:
                for offset in range(7):
                    moment = since + timedelta(days=offset, hours=self.random.randint(1, 20))
                    if moment >= until:
                        continue
                    if any(code.startswith("api_") for code in person.offers):
                        events.append(self._event(person, "api.call", moment, str(self.random.randint(50, 400))))
                    if any(code.startswith("storage_") for code in person.offers):
                        events.append(self._event(person, "storage.gb_day", moment, str(self.random.randint(20, 120))))
            results = list(charging.RecordUsageBatch(charging_pb.RecordUsageBatchRequest(events=events)).results)
            waiting = [r.event_id for r in results if r.status == usage_pb2.USAGE_STATUS_UNRATED]
            if waiting:
                # Charging learns accounts and purchases over NATS: rate what came too early again.
                def rated(ids: list[str] = waiting) -> list[usage_pb2.UsageResult] | None:
                    again = list(charging.ResubmitUsage(charging_pb.ResubmitUsageRequest(event_ids=ids)).results)
                    return again if all(r.status != usage_pb2.USAGE_STATUS_UNRATED for r in again) else None

                again = {r.event_id: r for r in self.poll(rated, "charging to rate the usage")}
                results = [again.get(r.event_id, r) for r in results]
            charged = sum((decimal(c.amount) for r in results for c in r.charges), Decimal(0))
            rated_count = sum(r.status == usage_pb2.USAGE_STATUS_RATED for r in results)
            rows.append([f"week {week}", len(events), rated_count, amount(charged, CURRENCY)])
            since = until
        self.out.print(table(None, ["", "events", "rated", "charged"], rows))

    def _event(self, person: Customer, event_type: str, moment: datetime, quantity: str) -> usage_pb2.UsageEvent:
        event = usage_pb2.UsageEvent(
            event_id=f"demo-{self.run}-{uuid.uuid4().hex[:12]}",
            account_id=person.account_id,
            event_type=event_type,
            quantity=quantity,
            properties={"region": "eu"},
        )
        event.event_time.FromDatetime(moment)
        return event

    def bill_run(self, people: list[Customer]) -> None:
        self.step("The cycles end: billing issues the bills")
        ends = {
            p.key: to_datetime(self.poll(partial(self._open_cycle, p.account_id), "open cycles").end_time)
            for p in people
        }
        for p in people:
            local = ends[p.key].astimezone(ZoneInfo(p.time_zone))
            self.say(f"{p.name}: cycle ends {local:%Y-%m-%d %H:%M} {p.time_zone} = {ends[p.key]:%Y-%m-%d %H:%M} UTC")
        self.advance_to(
            max(ends.values()) + LATE_USAGE_DELAY + timedelta(minutes=2),
            "past every cycle's end and the late-usage delay",
        )
        billing = self.cli.clients.billing
        for p in people:

            def issued(p: Customer = p) -> list[bill_pb2.Bill] | None:
                found = list(billing.ListBills(billing_pb.ListBillsRequest(account_id=p.account_id)).bills)
                return found or None

            p.bills = self.poll(issued, f"{p.name}'s bill")
        rows = [
            [
                p.name,
                b.bill_number,
                f"{day(b.period_start_date)} → {day(b.period_end_date)}",
                money(b.subtotal),
                money(b.tax_total),
                money(b.total),
                day(b.due_date),
            ]
            for p in people
            for b in p.bills[:1]
        ]
        self.out.print(table(None, ["customer", "bill", "period (local)", "subtotal", "tax", "total", "due"], rows))
        sample = people[1].bills[0]
        show_bill(
            self.out,
            billing.GetBill(billing_pb.GetBillRequest(bill_id=sample.bill_id)).bill,
            f"{people[1].name}'s bill",
        )

    def pay(self, person: Customer, when: str) -> None:
        bill = person.bills[0]
        self.cli.clients.balance.RecordPayment(
            balance_pb.RecordPaymentRequest(
                account_id=person.account_id,
                amount=bill.total,
                method=payment_pb2.PAYMENT_METHOD_TYPE_BANK_TRANSFER,
                reference=f"demo-{self.run}-{person.key}",
                request_id=str(uuid.uuid4()),
            )
        )
        paid = self.poll(lambda: self._bill_in(person, bill_pb2.BILL_STATUS_PAID), f"{person.name}'s bill to be paid")
        self.say(
            f"💶 {person.name} paid {money(bill.total)} {when}: bill {paid.bill_number} is {enum(paid, 'status')}."
        )

    def _bill_in(self, person: Customer, status: int) -> bill_pb2.Bill | None:
        bill = self.cli.clients.billing.GetBill(billing_pb.GetBillRequest(bill_id=person.bills[0].bill_id)).bill
        return bill if bill.status == status else None

    def payments(self, people: list[Customer]) -> None:
        rome, new_york, kolkata = people
        self.step("Rome pays on time")
        self.pay(rome, "before the due date")
        self.step("The due dates pass: New York and Kolkata are overdue")
        due = max(to_date(p.bills[0].due_date) for p in people)
        self.advance_to(_local_noon(due + timedelta(days=5), "UTC"), "five days past the due date")
        for p in (new_york, kolkata):
            bill = self.poll(partial(self._bill_in, p, bill_pb2.BILL_STATUS_OVERDUE), f"{p.name}'s bill to go overdue")
            self.say(
                f"⚠️  {p.name}: bill {bill.bill_number} overdue since {day(bill.due_date)}, "
                f"{money(bill.open_amount)} open."
            )
        self.step("New York pays late")
        self.pay(new_york, "five days late")

    def dunning(self, people: list[Customer]) -> None:
        kolkata = people[2]
        self.step("Kolkata does not pay: dunning")
        due = to_date(kolkata.bills[0].due_date)
        self.advance_to(_local_noon(due + timedelta(days=21), kolkata.time_zone), "21 days past due")
        self.say(
            "Billing's collections processor opens the case and runs the steps due "
            "(it checks every minute on the local stack)..."
        )
        collections = self.cli.clients.collections

        def suspended() -> cpb.CollectionsCase | None:
            listed = collections.ListCollectionsCases(
                collections_pb.ListCollectionsCasesRequest(account_id=kolkata.account_id)
            ).collections_cases
            if not listed:
                return None
            case = collections.GetCollectionsCase(
                collections_pb.GetCollectionsCaseRequest(case_id=listed[0].case_id)
            ).collections_case
            done = [a for a in case.actions if a.state == cpb.COLLECTIONS_ACTION_STATE_DONE]
            return case if len(done) >= 3 else None

        case = self.poll(suspended, "the dunning steps", timeout=max(self.wait, 150))
        rows = [
            [
                a.sequence,
                enum(a, "type").replace("_", " "),
                f"{a.due_time.ToDatetime(tzinfo=UTC):%Y-%m-%d}",
                enum(a, "state"),
                money(a.amount),
                a.outcome,
            ]
            for a in case.actions
        ]
        self.out.print(
            table(
                f"Case {case.case_id} ({case.days_past_due} days past due)",
                ["#", "action", "due", "state", "amount", "outcome"],
                rows,
            )
        )
        account = self.cli.clients.customer.GetAccount(
            customer_pb.GetAccountRequest(account_id=kolkata.account_id)
        ).account
        self.say(
            f"🔒 {kolkata.name} is {enum(account, 'status')} (by collections); its usage is refused until it pays."
        )

    def collections_unavailable(self) -> bool:
        try:
            self.cli.clients.collections.ListCollectionsScenarios(
                collections_pb.ListCollectionsScenariosRequest(page_size=1)
            )
        except grpc.RpcError as exc:
            if exc.code() == grpc.StatusCode.UNIMPLEMENTED:
                return True
            raise
        return False

    def pictures(self, people: list[Customer], aging: bool) -> None:
        self.step("Where things stand")
        today = self.now().date()
        if aging:
            report = self.cli.clients.collections.GetAging(collections_pb.GetAgingRequest(currency_code=CURRENCY))
            for totals in report.totals:
                aging_bars(self.out, totals, f"Receivables by days past due, as of {today} (all accounts)")
        self.say("Balances over the demo (ledger history):")
        balance = self.cli.clients.balance
        for person in people:
            entries = list(
                balance.ListLedgerEntries(
                    balance_pb.ListLedgerEntriesRequest(account_id=person.account_id, page_size=1000)
                ).entries
            )
            total = decimal(balance.GetBalance(balance_pb.GetBalanceRequest(account_id=person.account_id)).total)
            line = sparkline([v for _, v in history_points(total, entries)], width=40)
            self.out.print(f"  {person.name:<28} [cyan]{line}[/]  owes {amount(total, CURRENCY)}")

    def next_steps(self, people: list[Customer]) -> None:
        rome, new_york, kolkata = people
        elapsed = time.monotonic() - self.started
        self.out.print(Rule(f"[bold]Done in {elapsed:.0f}s[/]", align="left"))
        self.say("Where to look next:")
        tips = [
            f"evolutivo accounts get {kolkata.account_id}",
            f"evolutivo bills list {new_york.account_id}",
            f"evolutivo bills get {new_york.bills[0].bill_id} --pdf .",
            f"evolutivo balances history {kolkata.account_id}",
            f"evolutivo collections list --account {kolkata.account_id}",
            "evolutivo collections aging",
            f"evolutivo usage charges {rome.account_id}",
            "evolutivo clock get",
        ]
        for tip in tips:
            self.say(f"  [green]{tip}[/]")


def _local_noon(day_: date, time_zone: str) -> datetime:
    return datetime(day_.year, day_.month, day_.day, 12, tzinfo=ZoneInfo(time_zone)).astimezone(UTC)


def demo(
    ctx: typer.Context,
    wait: Annotated[float, typer.Option(help="seconds to wait for each step before giving up")] = 120.0,
) -> None:
    """Seed a small company on the local stack and play its billing and collection lifecycle.

    Needs the stack's controllable clock (the default of `make up`): the demo moves time forward
    by about two months. Safe to run again: every name carries a new run id.
    """
    cli = state(ctx)
    run = Demo(cli, wait)
    run.preflight()
    api, storage = run.catalog()
    no_collections = run.collections_unavailable()
    scenario_id = "" if no_collections else run.scenario()
    people = run.customers(api, storage, scenario_id)
    run.usage(people)
    run.bill_run(people)
    run.payments(people)
    if no_collections:
        run.say("[yellow]This billing service has no CollectionsService: the demo stops at overdue.[/]")
    else:
        run.dunning(people)
    run.pictures(people, aging=not no_collections)
    run.next_steps(people)
    cli.output.emit_data(
        {
            "run": run.run,
            "offers": [api, storage],
            "scenario_id": scenario_id,
            "customers": [
                {
                    "name": p.name,
                    "time_zone": p.time_zone,
                    "account_id": p.account_id,
                    "bill_ids": [b.bill_id for b in p.bills],
                    "fate": p.fate,
                }
                for p in people
            ],
            "seconds": round(time.monotonic() - run.started, 1),
        },
        lambda: None,
    )
