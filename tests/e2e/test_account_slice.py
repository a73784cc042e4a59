"""The foundation's vertical slice, over real gRPC against the five services as processes:
CreateAccount -> AccountCreated -> a default balance group, a bill unit, charging's and the ERP
gateway's records, each exactly once, also across a SIGKILL of the balance service."""

from __future__ import annotations

import asyncio
import uuid
from datetime import timedelta

import asyncpg
import grpc
import pytest
from evolutivo.admin.v1 import clock_admin_service_pb2 as clock_pb
from evolutivo.admin.v1 import clock_admin_service_pb2_grpc as clock_grpc
from evolutivo.admin.v1 import dead_letter_admin_service_pb2 as dlq_pb
from evolutivo.admin.v1 import dead_letter_admin_service_pb2_grpc as dlq_grpc
from evolutivo.balance.v1 import balance_service_pb2 as balance_pb
from evolutivo.balance.v1 import balance_service_pb2_grpc as balance_grpc
from evolutivo.billing.v1 import billing_service_pb2 as billing_pb
from evolutivo.billing.v1 import billing_service_pb2_grpc as billing_grpc
from evolutivo.charging.v1 import charging_account_pb2, charging_service_pb2, charging_service_pb2_grpc
from evolutivo.customer.v1 import account_pb2
from evolutivo.customer.v1 import customer_service_pb2 as customer_pb
from evolutivo.customer.v1 import customer_service_pb2_grpc as customer_grpc
from evolutivo.erp_gateway.v1 import erp_gateway_service_pb2, erp_gateway_service_pb2_grpc, sync_state_pb2
from evolutivo_runtime.testing import eventually
from evolutivo_stack.stack import SERVICES, Stack
from google.protobuf.duration_pb2 import Duration
from google.rpc import error_details_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from grpc_status import rpc_status

pytestmark = pytest.mark.e2e

EXPECTED_SERVICES = {
    "customer": "evolutivo.customer.v1.CustomerService",
    "charging": "evolutivo.charging.v1.ChargingService",
    "balance": "evolutivo.balance.v1.BalanceService",
    "billing": "evolutivo.billing.v1.BillingService",
    "erp_gateway": "evolutivo.erp_gateway.v1.ErpGatewayService",
}


def new_account(**overrides: object) -> account_pb2.Account:
    fields: dict[str, object] = {
        "type": account_pb2.ACCOUNT_TYPE_BUSINESS,
        "display_name": "Acme Distribuciones SL",
        "currency_code": "EUR",
        "time_zone": "Europe/Madrid",
        "locale": "es-ES",
        "billing_profile": account_pb2.BillingProfile(
            bill_cycle_day=31, frequency=account_pb2.BILLING_FREQUENCY_MONTHLY, payment_terms_days=15
        ),
    }
    fields.update(overrides)
    return account_pb2.Account(**fields)  # type: ignore[arg-type]


async def create(
    channels: dict[str, grpc.aio.Channel], request_id: str = "", **overrides: object
) -> account_pb2.Account:
    stub = customer_grpc.CustomerServiceStub(channels["customer"])
    response = await stub.CreateAccount(
        customer_pb.CreateAccountRequest(request_id=request_id, account=new_account(**overrides))
    )
    return response.account


async def test_every_service_serving_with_reflection(channels: dict[str, grpc.aio.Channel]) -> None:
    for service, channel in channels.items():
        health = await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(service=""))
        assert health.status == health_pb2.HealthCheckResponse.SERVING, service
        stub = reflection_pb2_grpc.ServerReflectionStub(channel)
        listed: set[str] = set()
        async for response in stub.ServerReflectionInfo(
            iter([reflection_pb2.ServerReflectionRequest(list_services="")])
        ):
            listed |= {s.name for s in response.list_services_response.service}
        assert EXPECTED_SERVICES[service] in listed, (service, listed)
        assert "grpc.health.v1.Health" in listed
        assert "evolutivo.admin.v1.ClockAdminService" in listed


async def test_created_account_reaches_every_service_once(channels: dict[str, grpc.aio.Channel]) -> None:
    request_id = str(uuid.uuid4())
    account = await create(channels, request_id)
    again = await create(channels, request_id)
    assert again.account_id == account.account_id, "a retried CreateAccount must return the first account"
    assert account.account_number.startswith("A-")
    assert account.status == account_pb2.ACCOUNT_STATUS_ACTIVE

    balance_stub = balance_grpc.BalanceServiceStub(channels["balance"])
    balance = await eventually(
        lambda: balance_stub.GetBalance(balance_pb.GetBalanceRequest(account_id=account.account_id)),
        what="the default balance group",
    )
    assert len(balance.balance_groups) == 1
    group = balance.balance_groups[0]
    assert group.is_default and group.name == "default"
    assert (group.balance.currency_code, group.balance.units, group.balance.nanos) == ("EUR", 0, 0)
    assert (balance.total.currency_code, balance.total.units, balance.total.nanos) == ("EUR", 0, 0)

    billing_stub = billing_grpc.BillingServiceStub(channels["billing"])

    async def bill_units() -> billing_pb.ListBillUnitsResponse | None:
        found = await billing_stub.ListBillUnits(billing_pb.ListBillUnitsRequest(account_id=account.account_id))
        return found if found.bill_units else None

    units = (await eventually(bill_units, what="the bill unit")).bill_units
    assert len(units) == 1
    assert (units[0].currency_code, units[0].time_zone, units[0].bill_cycle_day, units[0].payment_terms_days) == (
        "EUR",
        "Europe/Madrid",
        31,
        15,
    )

    charging_stub = charging_service_pb2_grpc.ChargingServiceStub(channels["charging"])
    charging_account = await eventually(
        lambda: charging_stub.GetChargingAccount(
            charging_service_pb2.GetChargingAccountRequest(account_id=account.account_id)
        ),
        what="charging's account",
    )
    assert charging_account.charging_account.status == charging_account_pb2.CHARGING_ACCOUNT_STATUS_ACTIVE
    assert charging_account.charging_account.currency_code == "EUR"

    erp_stub = erp_gateway_service_pb2_grpc.ErpGatewayServiceStub(channels["erp_gateway"])
    sync = await eventually(
        lambda: erp_stub.GetSyncState(
            erp_gateway_service_pb2.GetSyncStateRequest(
                entity_type=sync_state_pb2.ENTITY_TYPE_CUSTOMER, entity_id=account.account_id
            )
        ),
        what="the ERP sync state",
    )
    assert sync.sync_state.status == sync_state_pb2.SYNC_STATUS_PENDING


async def test_bad_input_is_refused_naming_the_field_and_changes_nothing(
    stack: Stack, channels: dict[str, grpc.aio.Channel]
) -> None:
    conn = await asyncpg.connect(stack.database_url("customer"))
    try:
        before = await conn.fetchval("select count(*) from accounts")
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await create(channels, time_zone="Mars/Olympus_Mons")
        assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        status = rpc_status.from_call(refused.value)  # type: ignore[arg-type]
        assert status is not None
        violations = []
        reasons = []
        for detail in status.details:
            if detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
                bad = error_details_pb2.BadRequest()
                detail.Unpack(bad)
                violations += [v.field for v in bad.field_violations]
            if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
                info = error_details_pb2.ErrorInfo()
                detail.Unpack(info)
                reasons.append((info.domain, info.metadata["field"]))
        assert violations == ["account.time_zone"]
        assert reasons == [("customer.evolutivo.io", "account.time_zone")]
        with pytest.raises(grpc.aio.AioRpcError) as missing:
            await balance_grpc.BalanceServiceStub(channels["balance"]).GetBalance(
                balance_pb.GetBalanceRequest(account_id="not-a-uuid")
            )
        assert missing.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "account_id" in (missing.value.details() or "")
        assert await conn.fetchval("select count(*) from accounts") == before
    finally:
        await conn.close()


async def test_accounts_survive_a_sigkill_of_balance_exactly_once(
    stack: Stack, channels: dict[str, grpc.aio.Channel]
) -> None:
    count = 150
    balance_db = await asyncpg.connect(stack.database_url("balance"))
    try:
        before = await balance_db.fetchval("select count(*) from balance_groups")
        inbox_before = await balance_db.fetchval("select count(*) from inbox")
        # A burst, kept under customer's concurrent-RPC limit (`<SVC>_MAX_CONCURRENT_RPCS`, 100):
        # past it the overload protection refuses calls (RESOURCE_EXHAUSTED, seen once in CI with
        # 150 at once), which is not what this test is about.
        in_flight = asyncio.Semaphore(50)

        async def create_one() -> account_pb2.Account:
            async with in_flight:
                return await create(channels, str(uuid.uuid4()))

        created = await asyncio.gather(*(create_one() for _ in range(count)))

        async def some_applied() -> int | None:
            applied = await balance_db.fetchval("select count(*) from balance_groups")
            return applied if applied > before else None

        # Kill balance while it is applying this burst of events.
        await eventually(some_applied, what="balance to start applying the burst")
        stack.kill("balance")
        stack.start_service("balance")

        async def all_applied() -> int | None:
            applied = await balance_db.fetchval("select count(*) from balance_groups")
            return applied if applied >= before + count else None

        await eventually(all_applied, timeout=60, what="every account's default group after the restart")
        ids = [uuid.UUID(a.account_id) for a in created]
        per_account = await balance_db.fetch(
            "select account_id, count(*) as n from balance_groups"
            " where account_id = any($1::uuid[]) group by account_id",
            ids,
        )
        assert len(per_account) == count
        assert all(row["n"] == 1 for row in per_account), "an account got two default groups"
        assert await balance_db.fetchval("select count(*) from balance_groups") == before + count
        # Every event was recorded exactly once in balance's inbox, redeliveries included.
        assert await balance_db.fetchval("select count(*) from inbox") == inbox_before + count
    finally:
        await balance_db.close()


async def test_the_clock_moves_for_every_service(channels: dict[str, grpc.aio.Channel]) -> None:
    customer_clock = clock_grpc.ClockAdminServiceStub(channels["customer"])
    before = (await customer_clock.GetClock(clock_pb.GetClockRequest())).now.ToDatetime()
    moved = await customer_clock.AdvanceClock(
        clock_pb.AdvanceClockRequest(duration=Duration(seconds=int(timedelta(days=40).total_seconds())))
    )
    assert moved.now.ToDatetime() - before >= timedelta(days=40)
    for service in SERVICES:
        stub = clock_grpc.ClockAdminServiceStub(channels[service])

        async def caught_up(stub: clock_grpc.ClockAdminServiceStub = stub) -> clock_pb.GetClockResponse | None:
            seen = await stub.GetClock(clock_pb.GetClockRequest())
            return seen if seen.revision >= moved.revision else None

        seen = await eventually(caught_up, timeout=10, what=f"{service} to follow the clock")
        assert seen.now.ToDatetime() - before >= timedelta(days=40), service
    with pytest.raises(grpc.aio.AioRpcError) as backwards:
        await customer_clock.AdvanceClock(clock_pb.AdvanceClockRequest(duration=Duration(seconds=-1)))
    assert backwards.value.code() == grpc.StatusCode.INVALID_ARGUMENT


async def test_dead_letters_are_listable_on_every_service(channels: dict[str, grpc.aio.Channel]) -> None:
    for service in SERVICES:
        listed = await dlq_grpc.DeadLetterAdminServiceStub(channels[service]).ListDeadLetters(
            dlq_pb.ListDeadLettersRequest(page_size=10)
        )
        # The slice's handlers never fail, so nothing may have been dead-lettered.
        assert list(listed.dead_letters) == [], service
