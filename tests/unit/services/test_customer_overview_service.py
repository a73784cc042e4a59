"""The account overview's use case, with customer's repositories and the downstream readers faked:
sections from balance and billing read concurrently, each bounded by the deadline; a slow, failing
or unaware service leaves its sections empty and listed, never failing or holding up the call."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, date, datetime
from types import TracebackType
from typing import Any, cast

import pytest
from evolutivo.balance.v1 import balance_pb2, balance_service_pb2
from evolutivo.billing.v1 import bill_unit_pb2, billing_service_pb2, billing_summary_pb2
from evolutivo_customer.domain.contacts import Contact, ContactDetails, ContactRole
from evolutivo_customer.domain.model import (
    Account,
    AccountDetails,
    AccountType,
    ProvisionedService,
)
from evolutivo_customer.domain.payment_methods import PaymentMethod, SepaDirectDebitDetails
from evolutivo_customer.entrypoints.grpc_overview import overview_to_pb
from evolutivo_customer.service_layer import overview
from evolutivo_customer.service_layer.unit_of_work import CustomerUnitOfWork
from evolutivo_runtime.clock import FixedClock
from evolutivo_runtime.errors import NotFound, Unavailable
from google.type import date_pb2, money_pb2

NOW = datetime(2031, 5, 17, 9, 30, tzinfo=UTC)
DEADLINE = 0.3
IBAN = "ES9121000418450200051332"


def an_account() -> Account:
    details = AccountDetails(display_name="Vista SL", currency_code="EUR", time_zone="Europe/Madrid")
    return Account.open(AccountType.BUSINESS, details, None, "A-00000007", NOW)


class FakeRepo:
    def __init__(self, items: list[Any]) -> None:
        self.items = items

    async def for_account(self, account_id: uuid.UUID) -> list[Any]:
        return [i for i in self.items if i.account_id == account_id]


class FakePurchases:
    async def open_for_account(self, account_id: uuid.UUID, instant: datetime) -> list[Any]:
        return []


class FakeAccounts:
    def __init__(self, accounts: list[Account]) -> None:
        self._accounts = {a.account_id: a for a in accounts}

    async def get(self, account_id: uuid.UUID, for_update: bool = False) -> Account | None:
        return self._accounts.get(account_id)


class FakeUow:
    def __init__(
        self,
        account: Account,
        contacts: list[Contact] | None = None,
        services: list[ProvisionedService] | None = None,
        methods: list[PaymentMethod] | None = None,
    ) -> None:
        self.accounts = FakeAccounts([account])
        self.contacts = FakeRepo(contacts or [])
        self.services = FakeRepo(services or [])
        self.payment_methods = FakeRepo(methods or [])
        self.purchases = FakePurchases()
        self.clock = FixedClock(NOW)
        self.closed = False

    async def __aenter__(self) -> FakeUow:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.closed = True


def eur(units: int, nanos: int = 0) -> money_pb2.Money:
    return money_pb2.Money(currency_code="EUR", units=units, nanos=nanos)


def a_balance(account_id: uuid.UUID) -> balance_service_pb2.GetBalanceResponse:
    return balance_service_pb2.GetBalanceResponse(
        account_id=str(account_id),
        balance_groups=[
            balance_pb2.BalanceGroup(balance_group_id="g-1", name="default", is_default=True, balance=eur(12, 5)),
            balance_pb2.BalanceGroup(balance_group_id="g-2", name="site", balance=eur(-2)),
        ],
        total=eur(10, 5),
    )


def a_billing_summary(account_id: uuid.UUID) -> billing_service_pb2.GetBillingSummaryResponse:
    return billing_service_pb2.GetBillingSummaryResponse(
        bill_unit=bill_unit_pb2.BillUnit(account_id=str(account_id), currency_code="EUR"),
        open_bills=[
            billing_summary_pb2.BillSummary(
                bill_id="b-1",
                bill_number="F-2031-0001",
                total=eur(50),
                open_amount=eur(20),
                due_date=date_pb2.Date(year=2031, month=4, day=30),
                overdue=True,
            )
        ],
        overdue_total=eur(20),
        collections=billing_summary_pb2.CollectionsSummary(
            in_collections=True, case_id="case-1", stage="reminder", overdue_amount=eur(20), days_past_due=17
        ),
    )


class Balance:
    def __init__(self, answer: Any = None, delay: float = 0.0, error: Exception | None = None) -> None:
        self.answer, self.delay, self.error = answer, delay, error
        self.cancelled = False
        self.answered = False

    async def get_balance(self, account_id: uuid.UUID) -> balance_service_pb2.GetBalanceResponse | None:
        return cast(balance_service_pb2.GetBalanceResponse | None, await self._answer())

    async def get_billing_summary(self, account_id: uuid.UUID) -> billing_service_pb2.GetBillingSummaryResponse | None:
        return cast(billing_service_pb2.GetBillingSummaryResponse | None, await self._answer())

    async def _answer(self) -> Any:
        try:
            await asyncio.sleep(self.delay)
        except asyncio.CancelledError:
            self.cancelled = True
            raise
        self.answered = True
        if self.error is not None:
            raise self.error
        return self.answer


# Billing has the same shape of fake.
Billing = Balance


async def get(
    uow: FakeUow, balance: Balance, billing: Billing | None, account_id: uuid.UUID | None = None
) -> overview.AccountOverview:
    account_id = account_id or next(iter(uow.accounts._accounts))
    return await overview.get_overview(cast(CustomerUnitOfWork, uow), balance, billing, account_id, DEADLINE)


async def test_every_section_when_every_service_answers() -> None:
    account = an_account()
    uow = FakeUow(account)
    found = await get(uow, Balance(a_balance(account.account_id)), Billing(a_billing_summary(account.account_id)))
    assert found.account is account
    assert found.balance == a_balance(account.account_id)
    assert found.billing == a_billing_summary(account.account_id)
    assert found.unavailable == []
    assert found.purchases == []
    assert uow.closed


async def test_the_downstream_reads_run_concurrently_with_each_other() -> None:
    account = an_account()
    both_started = asyncio.Barrier(2)

    class Meeting(Balance):
        """Answers only once the other read has started too: read one after the other, the first
        would wait past the deadline and its section would be missing."""

        async def _answer(self) -> Any:
            await both_started.wait()
            return await super()._answer()

    found = await get(
        FakeUow(account), Meeting(a_balance(account.account_id)), Meeting(a_billing_summary(account.account_id))
    )
    assert found.unavailable == []


async def test_a_slow_service_is_cut_off_at_the_deadline_and_its_section_listed() -> None:
    account = an_account()
    # Far slower than the test may run: only the deadline lets get() return with this section missing.
    slow = Balance(a_balance(account.account_id), delay=600)
    found = await get(FakeUow(account), slow, Billing(a_billing_summary(account.account_id)))
    assert found.balance is None
    assert found.billing is not None
    assert found.unavailable == [
        overview.MissingSection("balance", f"the balance service did not answer within {DEADLINE:g} s")
    ]
    assert slow.cancelled, "the late read is abandoned, not left running"


async def test_billing_down_empties_bills_and_collections() -> None:
    account = an_account()
    down = Unavailable("BILLING_UNAVAILABLE", "the billing service did not answer: UNAVAILABLE")
    found = await get(FakeUow(account), Balance(a_balance(account.account_id)), Billing(error=down))
    assert found.billing is None and found.balance is not None
    assert found.unavailable == [
        overview.MissingSection("bills", "the billing service did not answer: UNAVAILABLE"),
        overview.MissingSection("collections", "the billing service did not answer: UNAVAILABLE"),
    ]


async def test_a_service_that_does_not_know_the_account_yet_is_listed_too() -> None:
    account = an_account()
    found = await get(FakeUow(account), Balance(None), Billing(None))
    assert [(m.section, m.reason) for m in found.unavailable] == [
        ("balance", "the balance service has no record of the account yet"),
        ("bills", "the billing service has no record of the account yet"),
        ("collections", "the billing service has no record of the account yet"),
    ]


async def test_an_unexpected_failure_is_a_missing_section_not_a_failed_call() -> None:
    account = an_account()
    found = await get(FakeUow(account), Balance(error=RuntimeError("boom")), Billing(error=KeyError("x")))
    assert [m.section for m in found.unavailable] == ["balance", "bills", "collections"]
    assert found.unavailable[0].reason == "reading from the balance service failed (RuntimeError)"


async def test_without_billing_wired_its_sections_are_listed() -> None:
    account = an_account()
    found = await get(FakeUow(account), Balance(a_balance(account.account_id)), None)
    assert [(m.section, m.reason) for m in found.unavailable] == [
        ("bills", "the billing service is not configured"),
        ("collections", "the billing service is not configured"),
    ]


async def test_an_unknown_account_is_not_found_and_the_reads_are_abandoned() -> None:
    balance, billing = Balance(delay=600), Billing(delay=600)
    with pytest.raises(NotFound) as missing:
        await get(FakeUow(an_account()), balance, billing, account_id=uuid.uuid4())
    assert missing.value.reason == "ACCOUNT_NOT_FOUND"
    await asyncio.sleep(0.05)
    assert not balance.answered and not billing.answered, "nothing waits for the reads"


# Translation.


def test_overview_to_pb_fills_every_section_and_masks_payment_methods() -> None:
    account = an_account()
    contact = Contact(
        uuid.uuid4(),
        account.account_id,
        ContactDetails(role=ContactRole.BILLING, name="Cuentas", email="facturas@vista.example"),
        NOW,
        NOW,
    )
    service = ProvisionedService.provision(account, "site", "vista.example", "", {}, NOW)
    sepa = PaymentMethod(
        uuid.uuid4(), account.account_id, SepaDirectDebitDetails(IBAN, "M-1", date(2031, 1, 2)), True, NOW
    )
    found = overview.AccountOverview(
        account=account,
        contacts=[contact],
        services=[service],
        payment_methods=[sepa],
        purchases=[],
        balance=a_balance(account.account_id),
        billing=a_billing_summary(account.account_id),
        as_of=NOW,
    )
    pb = overview_to_pb(found)
    assert pb.account.account_number == "A-00000007"
    assert [c.email for c in pb.contacts] == ["facturas@vista.example"]
    assert [s.identifier for s in pb.services] == ["vista.example"]
    (method,) = pb.payment_methods
    assert method.sepa_direct_debit.iban == "ES91****************1332"
    assert IBAN not in str(pb)
    assert [(g.balance_group_id, g.name, g.is_default, g.balance.units) for g in pb.balance_groups] == [
        ("g-1", "default", True, 12),
        ("g-2", "site", False, -2),
    ]
    assert (pb.balance_total.units, pb.balance_total.nanos) == (10, 5)
    (bill,) = pb.open_bills
    assert (bill.bill_id, bill.bill_number, bill.overdue, bill.open_amount.units) == ("b-1", "F-2031-0001", True, 20)
    assert (bill.due_date.year, bill.due_date.month, bill.due_date.day) == (2031, 4, 30)
    assert pb.overdue_total == eur(20)
    assert (pb.collections.in_collections, pb.collections.stage, pb.collections.days_past_due) == (
        True,
        "reminder",
        17,
    )
    assert list(pb.unavailable) == []


def test_overview_to_pb_leaves_missing_sections_unset_and_says_why() -> None:
    found = overview.AccountOverview(
        account=an_account(),
        contacts=[],
        services=[],
        payment_methods=[],
        purchases=[],
        balance=None,
        billing=None,
        as_of=NOW,
        unavailable=[overview.MissingSection("balance", "down"), overview.MissingSection("bills", "slow")],
    )
    pb = overview_to_pb(found)
    assert list(pb.balance_groups) == [] and not pb.HasField("balance_total")
    assert list(pb.open_bills) == [] and not pb.HasField("overdue_total") and not pb.HasField("collections")
    assert [(u.section, u.reason) for u in pb.unavailable] == [("balance", "down"), ("bills", "slow")]
