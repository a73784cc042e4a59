"""GetAccountOverview over real gRPC, against a real, migrated customer database and stand-in
balance and billing services (real gRPC servers, read through customer's own clients): every
section filled, masked payment methods, and a slow, failing or stopped downstream service that
leaves its sections empty and listed while the overview answers within its deadline."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Any

import grpc
import pytest
from evolutivo.balance.v1 import balance_pb2, balance_service_pb2, balance_service_pb2_grpc
from evolutivo.billing.v1 import bill_unit_pb2, billing_service_pb2, billing_service_pb2_grpc, billing_summary_pb2
from evolutivo.customer.v1 import account_pb2, provisioned_service_pb2
from evolutivo.customer.v1 import customer_service_pb2 as pb
from evolutivo.customer.v1 import customer_service_pb2_grpc as pb_grpc
from evolutivo_customer.adapters.balance_client import GrpcBalanceReader
from evolutivo_customer.adapters.billing_client import GrpcBillingReader
from evolutivo_customer.domain.contacts import Contact, ContactDetails, ContactRole
from evolutivo_customer.domain.payment_methods import AccountPaymentMethods, SepaDirectDebitDetails
from evolutivo_customer.entrypoints.app import MIGRATIONS
from evolutivo_customer.entrypoints.grpc_api import CustomerServicer
from evolutivo_customer.service_layer.unit_of_work import CustomerUnitOfWork
from evolutivo_runtime.clients import service_channel
from evolutivo_runtime.server.interceptors import ServiceInterceptor
from evolutivo_runtime.testing import eventually
from google.type import money_pb2
from support.customer import CustomerServiceDb
from support.databases import MigratedDatabase

NOW = datetime(2031, 5, 17, 9, 30, tzinfo=UTC)
DEADLINE = 0.5
IBAN = "ES9121000418450200051332"


def eur(units: int) -> money_pb2.Money:
    return money_pb2.Money(currency_code="EUR", units=units)


class Behaviour:
    """How a stand-in service answers: after `delay` seconds, with `code` (an error) or its answer."""

    def __init__(self) -> None:
        self.delay = 0.0
        self.code: grpc.StatusCode | None = None
        self.calls = 0

    async def answer(self, context: grpc.aio.ServicerContext[Any, Any]) -> None:
        self.calls += 1
        await asyncio.sleep(self.delay)
        if self.code is not None:
            await context.abort(self.code, "stand-in failure")


class FakeBalance(balance_service_pb2_grpc.BalanceServiceServicer):
    def __init__(self) -> None:
        self.behaviour = Behaviour()

    async def GetBalance(
        self, request: balance_service_pb2.GetBalanceRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> balance_service_pb2.GetBalanceResponse:
        await self.behaviour.answer(context)
        group = balance_pb2.BalanceGroup(
            balance_group_id="g-1", account_id=request.account_id, name="default", is_default=True, balance=eur(42)
        )
        return balance_service_pb2.GetBalanceResponse(
            account_id=request.account_id, balance_groups=[group], total=eur(42)
        )


class FakeBilling(billing_service_pb2_grpc.BillingServiceServicer):
    def __init__(self) -> None:
        self.behaviour = Behaviour()

    async def GetBillingSummary(
        self, request: billing_service_pb2.GetBillingSummaryRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> billing_service_pb2.GetBillingSummaryResponse:
        await self.behaviour.answer(context)
        return billing_service_pb2.GetBillingSummaryResponse(
            bill_unit=bill_unit_pb2.BillUnit(account_id=request.account_id, currency_code="EUR"),
            open_bills=[
                billing_summary_pb2.BillSummary(bill_id="b-1", bill_number="F-1", open_amount=eur(42), overdue=True)
            ],
            overdue_total=eur(42),
            collections=billing_summary_pb2.CollectionsSummary(in_collections=True, stage="reminder"),
        )


async def serve(register: Callable[[grpc.aio.Server], None], port: int = 0) -> tuple[grpc.aio.Server, int]:
    server = grpc.aio.server(interceptors=[ServiceInterceptor("test.evolutivo.io")])
    register(server)
    bound = server.add_insecure_port(f"127.0.0.1:{port}")
    await server.start()
    return server, bound


@dataclass
class Setting:
    uow: Callable[[], CustomerUnitOfWork]
    customer: pb_grpc.CustomerServiceAsyncStub
    balance: FakeBalance
    billing: FakeBilling
    servers: dict[str, grpc.aio.Server]
    billing_port: int


@pytest.fixture
async def db(migrated_database: MigratedDatabase) -> AsyncIterator[CustomerServiceDb]:
    async with CustomerServiceDb.open(await migrated_database("customer", MIGRATIONS), NOW) as database:
        yield database


@pytest.fixture
async def setting(db: CustomerServiceDb) -> AsyncIterator[Setting]:
    # The stand-in billing serves only what the overview reads.
    balance, billing = FakeBalance(), FakeBilling()  # type: ignore[abstract]
    balance_server, balance_port = await serve(
        lambda s: balance_service_pb2_grpc.add_BalanceServiceServicer_to_server(balance, s)
    )
    billing_server, billing_port = await serve(
        lambda s: billing_service_pb2_grpc.add_BillingServiceServicer_to_server(billing, s)
    )
    balance_channel = service_channel(f"127.0.0.1:{balance_port}")
    billing_channel = service_channel(f"127.0.0.1:{billing_port}")
    servicer = CustomerServicer(
        db.uow,
        GrpcBalanceReader(balance_channel, DEADLINE),
        GrpcBillingReader(billing_channel, DEADLINE),
        DEADLINE,
    )
    customer_server, customer_port = await serve(lambda s: pb_grpc.add_CustomerServiceServicer_to_server(servicer, s))
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{customer_port}")
    servers = {"customer": customer_server, "balance": balance_server, "billing": billing_server}
    try:
        yield Setting(db.uow, pb_grpc.CustomerServiceStub(channel), balance, billing, servers, billing_port)
    finally:
        await channel.close(None)
        for ch in (balance_channel, billing_channel):
            await ch.close(None)
        for server in servers.values():
            await server.stop(None)


async def new_account(setting: Setting) -> account_pb2.Account:
    created = await setting.customer.CreateAccount(
        pb.CreateAccountRequest(
            request_id=str(uuid.uuid4()),
            account=account_pb2.Account(
                type=account_pb2.ACCOUNT_TYPE_BUSINESS,
                display_name="Vista General SL",
                currency_code="EUR",
                time_zone="Europe/Madrid",
                country_code="ES",
            ),
        )
    )
    return created.account


async def overview(setting: Setting, account_id: str) -> pb.GetAccountOverviewResponse:
    return await setting.customer.GetAccountOverview(pb.GetAccountOverviewRequest(account_id=account_id), timeout=5)


async def test_every_section_with_masked_payment_methods(setting: Setting) -> None:
    account = await new_account(setting)
    account_id = uuid.UUID(account.account_id)
    service = await setting.customer.CreateProvisionedService(
        pb.CreateProvisionedServiceRequest(
            account_id=account.account_id,
            request_id=str(uuid.uuid4()),
            service=provisioned_service_pb2.ProvisionedService(kind="site", identifier="vista.example"),
        )
    )
    async with setting.uow() as uow:
        stored = await uow.accounts.get(account_id)
        assert stored is not None
        contact = Contact.add(
            stored, ContactDetails(role=ContactRole.BILLING, name="Cuentas", email="facturas@vista.example"), NOW
        )
        await uow.contacts.add(contact)
        methods = AccountPaymentMethods(stored, [])
        methods.add(SepaDirectDebitDetails(IBAN, "M-0001", date(2031, 1, 2)), True, NOW)
        await uow.payment_methods.save(methods)
        await uow.commit()

    found = (await overview(setting, account.account_id)).overview
    assert found.account == account
    assert [c.contact_id for c in found.contacts] == [str(contact.contact_id)]
    assert [s.service_id for s in found.services] == [service.service.service_id]
    (method,) = found.payment_methods
    assert method.is_default and method.sepa_direct_debit.iban == "ES91****************1332"
    assert IBAN not in str(found), "the full IBAN never leaves the service"
    assert list(found.purchases) == []
    assert [(g.name, g.balance.units) for g in found.balance_groups] == [("default", 42)]
    assert found.balance_total == eur(42)
    assert [(b.bill_number, b.overdue) for b in found.open_bills] == [("F-1", True)]
    assert found.overdue_total == eur(42)
    assert (found.collections.in_collections, found.collections.stage) == (True, "reminder")
    assert list(found.unavailable) == []


async def test_slow_balance_and_failing_billing_leave_their_sections_listed(setting: Setting) -> None:
    account = await new_account(setting)
    # Far slower than the call's own 5 s client deadline: only customer's deadline lets it answer.
    setting.balance.behaviour.delay = 600
    setting.billing.behaviour.code = grpc.StatusCode.INTERNAL
    found = (await overview(setting, account.account_id)).overview
    assert found.account.account_id == account.account_id
    assert [(u.section, u.reason) for u in found.unavailable] == [
        ("balance", "the balance service did not answer: DEADLINE_EXCEEDED"),
        ("bills", "the billing service did not answer: INTERNAL"),
        ("collections", "the billing service did not answer: INTERNAL"),
    ]
    assert list(found.balance_groups) == [] and not found.HasField("balance_total")
    assert list(found.open_bills) == [] and not found.HasField("collections")


async def test_a_stopped_billing_costs_one_deadline_and_is_back_when_it_is(setting: Setting) -> None:
    account = await new_account(setting)
    assert list((await overview(setting, account.account_id)).overview.unavailable) == []
    await setting.servers["billing"].stop(None)
    found = (await overview(setting, account.account_id)).overview
    assert [u.section for u in found.unavailable] == ["bills", "collections"]
    assert found.balance_total == eur(42)

    # Billing comes back on its address: the next overviews find it again.
    setting.servers["billing"], _ = await serve(
        lambda s: billing_service_pb2_grpc.add_BillingServiceServicer_to_server(setting.billing, s),
        setting.billing_port,
    )

    async def complete() -> pb.GetAccountOverviewResponse | None:
        answer = await overview(setting, account.account_id)
        return answer if not answer.overview.unavailable else None

    back = await eventually(complete, timeout=10, what="billing's sections after its restart")
    assert back.overview.overdue_total == eur(42)


async def test_services_that_do_not_know_the_account_yet(setting: Setting) -> None:
    account = await new_account(setting)
    setting.balance.behaviour.code = grpc.StatusCode.NOT_FOUND
    setting.billing.behaviour.code = grpc.StatusCode.NOT_FOUND
    found = (await overview(setting, account.account_id)).overview
    assert [(u.section, u.reason) for u in found.unavailable] == [
        ("balance", "the balance service has no record of the account yet"),
        ("bills", "the billing service has no record of the account yet"),
        ("collections", "the billing service has no record of the account yet"),
    ]


async def test_unknown_and_bad_account_ids(setting: Setting) -> None:
    for bad in ("", "not-a-uuid"):
        with pytest.raises(grpc.aio.AioRpcError) as invalid:
            await overview(setting, bad)
        assert invalid.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "account_id" in (invalid.value.details() or "")
    assert setting.balance.behaviour.calls == 0, "a bad id is refused before anything is read"
    with pytest.raises(grpc.aio.AioRpcError) as unknown:
        await overview(setting, str(uuid.uuid4()))
    assert unknown.value.code() == grpc.StatusCode.NOT_FOUND
