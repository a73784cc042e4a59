"""An account's lifecycle across the services as processes: suspending and reinstating cascade to
the account's services and reach charging and billing through events; a billing profile change
waits in billing for the next cycle; the account overview gathers customer's, balance's and
billing's data, and still answers in time, marking what is missing, with balance and billing down."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import grpc
import pytest
from evolutivo.billing.v1 import bill_unit_pb2
from evolutivo.billing.v1 import billing_service_pb2 as billing_pb
from evolutivo.billing.v1 import billing_service_pb2_grpc as billing_grpc
from evolutivo.charging.v1 import charging_account_pb2
from evolutivo.charging.v1 import charging_service_pb2 as charging_pb
from evolutivo.charging.v1 import charging_service_pb2_grpc as charging_grpc
from evolutivo.customer.v1 import account_pb2, overview_pb2, provisioned_service_pb2
from evolutivo.customer.v1 import customer_service_pb2 as pb
from evolutivo.customer.v1 import customer_service_pb2_grpc as pb_grpc
from evolutivo_runtime.testing import eventually
from evolutivo_stack.stack import Stack
from google.protobuf.field_mask_pb2 import FieldMask

pytestmark = pytest.mark.e2e

ACTIVE = provisioned_service_pb2.SERVICE_STATUS_ACTIVE
SUSPENDED = provisioned_service_pb2.SERVICE_STATUS_SUSPENDED


class Stubs:
    def __init__(self, channels: dict[str, grpc.aio.Channel]) -> None:
        self.customer = pb_grpc.CustomerServiceStub(channels["customer"])
        self.charging = charging_grpc.ChargingServiceStub(channels["charging"])
        self.billing = billing_grpc.BillingServiceStub(channels["billing"])


@pytest.fixture
async def stubs(stack: Stack) -> AsyncIterator[Stubs]:
    channels = {service: stack.channel(service) for service in stack.addresses}
    yield Stubs(channels)
    for channel in channels.values():
        await channel.close(None)


async def new_account(stubs: Stubs, name: str) -> account_pb2.Account:
    created = await stubs.customer.CreateAccount(
        pb.CreateAccountRequest(
            request_id=str(uuid.uuid4()),
            account=account_pb2.Account(
                type=account_pb2.ACCOUNT_TYPE_BUSINESS,
                display_name=name,
                currency_code="EUR",
                time_zone="Europe/Madrid",
                locale="es-ES",
                billing_profile=account_pb2.BillingProfile(bill_cycle_day=15, payment_terms_days=30),
            ),
        )
    )
    return created.account


async def provision(
    stubs: Stubs, account_id: str, kind: str, identifier: str
) -> provisioned_service_pb2.ProvisionedService:
    created = await stubs.customer.CreateProvisionedService(
        pb.CreateProvisionedServiceRequest(
            account_id=account_id,
            request_id=str(uuid.uuid4()),
            service=provisioned_service_pb2.ProvisionedService(kind=kind, identifier=identifier),
        )
    )
    return created.service


async def charging_status(stubs: Stubs, account_id: str, wanted: int) -> charging_account_pb2.ChargingAccount:
    async def probe() -> charging_account_pb2.ChargingAccount | None:
        got = await stubs.charging.GetChargingAccount(charging_pb.GetChargingAccountRequest(account_id=account_id))
        return got.charging_account if got.charging_account.status == wanted else None

    name = charging_account_pb2.ChargingAccountStatus.Name(wanted)  # type: ignore[arg-type]
    return await eventually(probe, what=f"charging to see the account {name}")


async def bill_unit(stubs: Stubs, account_id: str, wanted_status: int) -> bill_unit_pb2.BillUnit:
    async def probe() -> bill_unit_pb2.BillUnit | None:
        got = await stubs.billing.ListBillUnits(billing_pb.ListBillUnitsRequest(account_id=account_id))
        return got.bill_units[0] if got.bill_units and got.bill_units[0].account_status == wanted_status else None

    name = bill_unit_pb2.AccountStatus.Name(wanted_status)  # type: ignore[arg-type]
    return await eventually(probe, what=f"billing's bill unit to show the account {name}")


async def test_suspend_and_reinstate_cascade_to_services_charging_and_billing(stubs: Stubs) -> None:
    account = await new_account(stubs, "Telecomunicaciones Norte SL")
    account_id = account.account_id
    line = await provision(stubs, account_id, "mobile_line", "+34600000001")
    site = await provision(stubs, account_id, "site", "norte.example.com")
    spare = await provision(stubs, account_id, "mobile_line", "+34600000002")
    # Suspended on its own, before the account: the account's suspension and reinstatement leave it be.
    await stubs.customer.SetProvisionedServiceStatus(
        pb.SetProvisionedServiceStatusRequest(
            account_id=account_id,
            service_id=spare.service_id,
            status=SUSPENDED,
            reason="lost SIM",
            actor=account_pb2.STATUS_ACTOR_MANUAL,
        )
    )
    await charging_status(stubs, account_id, charging_account_pb2.CHARGING_ACCOUNT_STATUS_ACTIVE)
    await bill_unit(stubs, account_id, bill_unit_pb2.ACCOUNT_STATUS_ACTIVE)

    suspended = await stubs.customer.SuspendAccount(
        pb.SuspendAccountRequest(
            account_id=account_id,
            reason="three unpaid bills",
            actor=account_pb2.STATUS_ACTOR_COLLECTIONS,
            actor_id="case-17",
            request_id=str(uuid.uuid4()),
        )
    )
    assert suspended.account.status == account_pb2.ACCOUNT_STATUS_SUSPENDED
    assert {s.service_id for s in suspended.suspended_services} == {line.service_id, site.service_id}
    assert all(s.status == SUSPENDED and s.suspended_with_account for s in suspended.suspended_services)

    charging = await charging_status(stubs, account_id, charging_account_pb2.CHARGING_ACCOUNT_STATUS_SUSPENDED)
    assert charging.status_change_time == suspended.account.last_status_change.change_time
    unit = await bill_unit(stubs, account_id, bill_unit_pb2.ACCOUNT_STATUS_SUSPENDED)
    assert unit.account_status_change_time == suspended.account.last_status_change.change_time

    reinstated = await stubs.customer.ReinstateAccount(
        pb.ReinstateAccountRequest(
            account_id=account_id,
            reason="paid in full",
            actor=account_pb2.STATUS_ACTOR_MANUAL,
            request_id=str(uuid.uuid4()),
        )
    )
    assert reinstated.account.status == account_pb2.ACCOUNT_STATUS_ACTIVE
    assert {s.service_id for s in reinstated.reinstated_services} == {line.service_id, site.service_id}
    listed = await stubs.customer.ListProvisionedServices(pb.ListProvisionedServicesRequest(account_id=account_id))
    statuses = {s.service_id: s.status for s in listed.services}
    assert statuses == {line.service_id: ACTIVE, site.service_id: ACTIVE, spare.service_id: SUSPENDED}

    charging = await charging_status(stubs, account_id, charging_account_pb2.CHARGING_ACCOUNT_STATUS_ACTIVE)
    assert charging.status_change_time == reinstated.account.last_status_change.change_time
    await bill_unit(stubs, account_id, bill_unit_pb2.ACCOUNT_STATUS_ACTIVE)


async def test_a_billing_profile_change_waits_in_billing_for_the_next_cycle(stubs: Stubs) -> None:
    account = await new_account(stubs, "Cambio de Ciclo SL")
    await bill_unit(stubs, account.account_id, bill_unit_pb2.ACCOUNT_STATUS_ACTIVE)
    changed = account_pb2.Account(
        account_id=account.account_id,
        billing_profile=account_pb2.BillingProfile(
            bill_cycle_day=1, frequency=account_pb2.BILLING_FREQUENCY_QUARTERLY, payment_terms_days=10
        ),
    )
    await stubs.customer.UpdateAccount(
        pb.UpdateAccountRequest(account=changed, update_mask=FieldMask(paths=["billing_profile"]))
    )

    async def pending() -> bill_unit_pb2.BillUnit | None:
        got = await stubs.billing.ListBillUnits(billing_pb.ListBillUnitsRequest(account_id=account.account_id))
        return got.bill_units[0] if got.bill_units[0].HasField("pending_profile") else None

    unit = await eventually(pending, what="billing to hold the new profile as pending")
    # The current cycle keeps the profile it started with.
    assert (unit.bill_cycle_day, unit.frequency, unit.payment_terms_days) == (
        15,
        bill_unit_pb2.BILLING_FREQUENCY_MONTHLY,
        30,
    )
    assert (unit.pending_profile.bill_cycle_day, unit.pending_profile.frequency) == (
        1,
        bill_unit_pb2.BILLING_FREQUENCY_QUARTERLY,
    )
    assert unit.pending_profile.payment_terms_days == 10


async def overview(stubs: Stubs, account_id: str) -> overview_pb2.AccountOverview:
    got = await stubs.customer.GetAccountOverview(pb.GetAccountOverviewRequest(account_id=account_id), timeout=10)
    return got.overview


async def complete_overview(stubs: Stubs, account_id: str) -> overview_pb2.AccountOverview:
    """Once balance and billing have learnt the account (from AccountCreated)."""

    async def probe() -> overview_pb2.AccountOverview | None:
        found = await overview(stubs, account_id)
        return found if not found.unavailable else None

    return await eventually(probe, what="an overview with every section")


async def test_the_overview_gathers_customer_balance_and_billing(stubs: Stubs) -> None:
    account = await new_account(stubs, "Vista General SL")
    line = await provision(stubs, account.account_id, "mobile_line", "+34600000003")
    found = await complete_overview(stubs, account.account_id)
    assert found.account.account_id == account.account_id
    assert found.account.account_number == account.account_number
    assert [s.service_id for s in found.services] == [line.service_id]
    (group,) = found.balance_groups
    assert group.is_default and group.name == "default"
    assert (found.balance_total.currency_code, found.balance_total.units, found.balance_total.nanos) == ("EUR", 0, 0)
    # Billing issues no bills yet: none open, nothing overdue, not in collections.
    assert list(found.open_bills) == []
    assert (found.overdue_total.currency_code, found.overdue_total.units) == ("EUR", 0)
    assert found.HasField("collections") and not found.collections.in_collections


async def test_bad_and_unknown_accounts(stubs: Stubs) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as bad:
        await overview(stubs, "not-a-uuid")
    assert bad.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    with pytest.raises(grpc.aio.AioRpcError) as unknown:
        await overview(stubs, str(uuid.uuid4()))
    assert unknown.value.code() == grpc.StatusCode.NOT_FOUND


async def test_the_overview_answers_in_time_with_balance_and_billing_down(stack: Stack, stubs: Stubs) -> None:
    account = await new_account(stubs, "Servicios Caídos SL")
    await complete_overview(stubs, account.account_id)
    stack.stop_service("balance")
    stack.stop_service("billing")
    try:
        # overview() calls with a client deadline: a hanging overview fails the test with DEADLINE_EXCEEDED.
        found = await overview(stubs, account.account_id)
        assert found.account.account_id == account.account_id
        assert {u.section for u in found.unavailable} == {"balance", "bills", "collections"}
        assert all("did not answer" in u.reason for u in found.unavailable), found.unavailable
        assert list(found.balance_groups) == [] and not found.HasField("balance_total")
        assert not found.HasField("overdue_total") and not found.HasField("collections")
    finally:
        stack.start_service("balance")
        stack.start_service("billing")
    # Back as soon as they are.
    await complete_overview(stubs, account.account_id)
