"""Security across the five services as processes (docs/security.md): mutual TLS only, every call
needs a valid token with the method's scope and a refused call changes no database; service-to-
service calls carry the services' own identities; every change of a lifecycle is in the audit log
with its actor; per-caller rate limits answer RESOURCE_EXHAUSTED with a retry hint; and the logs of
the whole run hold no token, key, IBAN or card number."""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import asyncpg
import grpc
import pytest
from evolutivo.admin.v1 import audit_admin_service_pb2 as audit_pb
from evolutivo.admin.v1 import audit_admin_service_pb2_grpc as audit_grpc
from evolutivo.admin.v1 import clock_admin_service_pb2 as clock_pb
from evolutivo.admin.v1 import clock_admin_service_pb2_grpc as clock_grpc
from evolutivo.balance.v1 import balance_service_pb2 as balance_pb
from evolutivo.balance.v1 import balance_service_pb2_grpc as balance_grpc
from evolutivo.balance.v1 import payment_pb2
from evolutivo.billing.v1 import billing_service_pb2 as billing_pb
from evolutivo.billing.v1 import billing_service_pb2_grpc as billing_grpc
from evolutivo.charging.v1 import catalog_pb2, usage_pb2
from evolutivo.charging.v1 import charging_service_pb2 as charging_pb
from evolutivo.charging.v1 import charging_service_pb2_grpc as charging_grpc
from evolutivo.customer.v1 import account_pb2, payment_method_pb2, purchase_pb2
from evolutivo.customer.v1 import customer_service_pb2 as customer_pb
from evolutivo.customer.v1 import customer_service_pb2_grpc as customer_grpc
from evolutivo.erp_gateway.v1 import erp_gateway_service_pb2 as erp_pb
from evolutivo.erp_gateway.v1 import erp_gateway_service_pb2_grpc as erp_grpc
from evolutivo_runtime.money import to_money
from evolutivo_runtime.security.scopes import ALL_SCOPES
from evolutivo_runtime.testing import eventually
from evolutivo_runtime.timestamps import to_timestamp
from evolutivo_stack.devsecurity import DevSecurity
from evolutivo_stack.embedded import scratch_dir
from evolutivo_stack.stack import SERVICES, Stack
from google.protobuf.duration_pb2 import Duration
from google.rpc import error_details_pb2
from google.type import date_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_status import rpc_status

pytestmark = pytest.mark.e2e

IBAN = "DE89370400440532013000"
CARD = "4111 1111 1111 1111"
ACTOR = "platform:crm-e2e"


@pytest.fixture(scope="module")
def stack() -> Iterator[Stack]:
    # A tight limit on balance's expensive reads (ListLedgerEntries) to see it bite; nothing else
    # in this module reads the ledger.
    with scratch_dir("stack") as data_dir:
        with Stack(
            data_dir,
            base_port=None,
            clock_mode="controllable",
            env={"BALANCE_RATE_LIMIT_READ_BURST": "3", "BALANCE_RATE_LIMIT_READ_PER_SECOND": "0.01"},
        ) as running:
            yield running


async def _health(channel: grpc.aio.Channel) -> int:
    response = await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(service=""), timeout=3)
    status: int = response.status
    return status


async def test_only_mutual_tls_reaches_a_service(stack: Stack) -> None:
    for service in SERVICES:
        address = stack.addresses[service]
        async with grpc.aio.insecure_channel(address) as plain:
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                await _health(plain)
        assert refused.value.code() == grpc.StatusCode.UNAVAILABLE, service
        async with stack.channel(service, client_certificate=False) as no_certificate:
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                await _health(no_certificate)
        assert refused.value.code() == grpc.StatusCode.UNAVAILABLE, service
        async with stack.channel(service, token="") as mutual:  # health needs no token
            assert await _health(mutual) == health_pb2.HealthCheckResponse.SERVING


async def _fingerprint(stack: Stack) -> dict[str, str]:
    """Every table of every service's database, as a digest of its rows."""
    digests: dict[str, str] = {}
    for service in SERVICES:
        conn = await asyncpg.connect(stack.database_url(service))
        try:
            tables = await conn.fetch(
                "SELECT table_name FROM information_schema.tables WHERE table_schema = 'public' ORDER BY 1"
            )
            for row in tables:
                name = row["table_name"]
                digests[f"{service}.{name}"] = await conn.fetchval(
                    f"SELECT md5(coalesce(string_agg(t::text, ',' ORDER BY t::text), '')) FROM \"{name}\" t"
                )
        finally:
            await conn.close()
    return digests


async def test_refused_credentials_change_no_database(stack: Stack, tmp_path: Path) -> None:
    other = DevSecurity(tmp_path / "other-issuer", [])
    other.ensure()
    account_id = str(uuid.uuid4())
    credentials: dict[str, tuple[str, grpc.StatusCode]] = {
        "no token": ("", grpc.StatusCode.UNAUTHENTICATED),
        "expired": (stack.token(ACTOR, ALL_SCOPES, ttl_seconds=-300), grpc.StatusCode.UNAUTHENTICATED),
        "signed by another key": (other.token(ACTOR, ALL_SCOPES), grpc.StatusCode.UNAUTHENTICATED),
        "for another audience": (
            stack.security.issuer().issue(ACTOR, ALL_SCOPES, audience="another-suite"),
            grpc.StatusCode.UNAUTHENTICATED,
        ),
        "without the scope": (
            stack.token(
                ACTOR,
                ALL_SCOPES
                - {"accounts:write", "payments:write", "usage:write", "bills:write", "erp:admin", "clock:admin"},
            ),
            grpc.StatusCode.PERMISSION_DENIED,
        ),
    }
    calls = {
        "customer.CreateAccount": lambda ch: customer_grpc.CustomerServiceStub(ch).CreateAccount(
            customer_pb.CreateAccountRequest(
                request_id=str(uuid.uuid4()),
                account=account_pb2.Account(
                    type=account_pb2.ACCOUNT_TYPE_BUSINESS,
                    display_name="Intruso SL",
                    currency_code="EUR",
                    time_zone="Europe/Madrid",
                ),
            )
        ),
        "balance.RecordPayment": lambda ch: balance_grpc.BalanceServiceStub(ch).RecordPayment(
            balance_pb.RecordPaymentRequest(
                account_id=account_id,
                amount=to_money(Decimal("10.00"), "EUR"),
                method=payment_pb2.PAYMENT_METHOD_TYPE_BANK_TRANSFER,
                reference=f"intruder-{uuid.uuid4().hex}",
            )
        ),
        "charging.RecordUsage": lambda ch: charging_grpc.ChargingServiceStub(ch).RecordUsage(
            charging_pb.RecordUsageRequest(
                event=usage_pb2.UsageEvent(
                    event_id=uuid.uuid4().hex,
                    account_id=account_id,
                    event_type="sms.sent",
                    event_time=to_timestamp(datetime.now(UTC)),
                    quantity="1",
                )
            )
        ),
        "billing.BillNow": lambda ch: billing_grpc.BillingServiceStub(ch).BillNow(
            billing_pb.BillNowRequest(account_id=account_id, request_id=str(uuid.uuid4()))
        ),
        "erp_gateway.CreateConnection": lambda ch: erp_grpc.ErpGatewayServiceStub(ch).CreateConnection(
            erp_pb.CreateConnectionRequest()
        ),
        "balance.AdvanceClock": lambda ch: clock_grpc.ClockAdminServiceStub(ch).AdvanceClock(
            clock_pb.AdvanceClockRequest(duration=Duration(seconds=86400))
        ),
    }

    async def settled() -> dict[str, str] | None:
        # Start from a quiet suite: background loops and consumers have nothing left to do.
        first = await _fingerprint(stack)
        return first if await _fingerprint(stack) == first else None

    before = await eventually(settled, what="the databases to settle")
    async with stack.channel("balance") as admin:
        clock_before = (await clock_grpc.ClockAdminServiceStub(admin).GetClock(clock_pb.GetClockRequest())).revision
    for name, (token, code) in credentials.items():
        for call, invoke in calls.items():
            async with stack.channel(call.split(".")[0], token=token) as channel:
                with pytest.raises(grpc.aio.AioRpcError) as refused:
                    await invoke(channel)
            assert refused.value.code() == code, (name, call)
    assert await _fingerprint(stack) == before
    async with stack.channel("balance") as admin:
        clock_after = (await clock_grpc.ClockAdminServiceStub(admin).GetClock(clock_pb.GetClockRequest())).revision
    assert clock_after == clock_before, "a refused AdvanceClock must not move the shared clock"


async def test_a_lifecycle_is_audited_with_its_actor(stack: Stack) -> None:
    token = stack.token(ACTOR, ALL_SCOPES)
    channels = {service: stack.channel(service, token=token) for service in SERVICES}
    try:
        customer = customer_grpc.CustomerServiceStub(channels["customer"])
        charging = charging_grpc.ChargingServiceStub(channels["charging"])
        balance = balance_grpc.BalanceServiceStub(channels["balance"])
        account_id = (
            await customer.CreateAccount(
                customer_pb.CreateAccountRequest(
                    request_id=str(uuid.uuid4()),
                    account=account_pb2.Account(
                        type=account_pb2.ACCOUNT_TYPE_BUSINESS,
                        display_name="Auditada SL",
                        currency_code="EUR",
                        time_zone="Europe/Madrid",
                    ),
                )
            )
        ).account.account_id
        await customer.AddPaymentMethod(
            customer_pb.AddPaymentMethodRequest(
                account_id=account_id,
                payment_method=payment_method_pb2.PaymentMethod(
                    sepa_direct_debit=payment_method_pb2.SepaDirectDebitDetails(
                        iban=IBAN,
                        mandate_id=f"M-{uuid.uuid4().hex[:8]}",
                        mandate_signature_date=date_pb2.Date(year=2026, month=12, day=1),
                        account_holder="Auditada SL",
                    )
                ),
                request_id=str(uuid.uuid4()),
            )
        )
        with pytest.raises(grpc.aio.AioRpcError) as card_refused:
            await customer.AddPaymentMethod(
                customer_pb.AddPaymentMethodRequest(
                    account_id=account_id,
                    payment_method=payment_method_pb2.PaymentMethod(
                        card=payment_method_pb2.CardDetails(provider="stripe", provider_token=CARD)
                    ),
                )
            )
        assert card_refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        code = f"sms_{uuid.uuid4().hex[:8]}"
        draft = await charging.CreateChargeOffer(
            charging_pb.CreateChargeOfferRequest(
                charge_offer=catalog_pb2.ChargeOffer(
                    code=code,
                    name="SMS",
                    currency_code="EUR",
                    charges=[
                        catalog_pb2.Charge(
                            code="sms", name="SMS", event_type="sms.sent", flat=catalog_pb2.FlatPrice(amount="0.07")
                        )
                    ],
                )
            )
        )
        await charging.ActivateChargeOffer(
            charging_pb.ActivateChargeOfferRequest(charge_offer_id=draft.charge_offer.charge_offer_id)
        )
        await customer.CreatePurchase(
            customer_pb.CreatePurchaseRequest(
                account_id=account_id, purchase=purchase_pb2.Purchase(charge_offer_code=code)
            )
        )
        event = usage_pb2.UsageEvent(
            event_id=uuid.uuid4().hex,
            account_id=account_id,
            event_type="sms.sent",
            event_time=to_timestamp(datetime.now(UTC)),
            quantity="2",
        )

        async def rated() -> bool | None:
            # Charging learns the purchase and the cycle over NATS; a retried RecordUsage returns its
            # first result (idempotent), so resubmit until it has.
            result = (await charging.RecordUsage(charging_pb.RecordUsageRequest(event=event))).result
            if result.status == usage_pb2.USAGE_STATUS_RATED:
                return True
            resubmitted = await charging.ResubmitUsage(charging_pb.ResubmitUsageRequest(event_ids=[event.event_id]))
            return True if resubmitted.results[0].status == usage_pb2.USAGE_STATUS_RATED else None

        await eventually(rated, what="the usage to be rated")
        await eventually(
            lambda: balance.GetBalance(balance_pb.GetBalanceRequest(account_id=account_id)), what="balance's account"
        )
        await balance.RecordPayment(
            balance_pb.RecordPaymentRequest(
                account_id=account_id,
                amount=to_money(Decimal("5.00"), "EUR"),
                method=payment_pb2.PAYMENT_METHOD_TYPE_SEPA_DIRECT_DEBIT,
                reference=f"audit-{uuid.uuid4().hex}",
                request_id=str(uuid.uuid4()),
            )
        )
        # The overview reads balance and billing with customer's own service identity.
        overview = (
            await customer.GetAccountOverview(customer_pb.GetAccountOverviewRequest(account_id=account_id))
        ).overview
        assert list(overview.unavailable) == []
        assert overview.balance_groups

        expected = {
            "customer": {"CreateAccount", "AddPaymentMethod", "CreatePurchase"},
            "charging": {"CreateChargeOffer", "ActivateChargeOffer", "RecordUsage"},  # and maybe ResubmitUsage
            "balance": {"RecordPayment"},
        }
        for service, rpcs in expected.items():
            audit = audit_grpc.AuditAdminServiceStub(channels[service])
            by_actor = (await audit.ListAuditRecords(audit_pb.ListAuditRecordsRequest(actor=ACTOR))).audit_records
            assert {r.rpc.rsplit("/", 1)[1] for r in by_actor} >= rpcs, service
            assert all(r.actor == ACTOR and r.actor_issuer == "evolutivo-dev" and r.request_id for r in by_actor)
            # Reads are not audited, and the refused card never was a change.
            assert not any(r.rpc.rsplit("/", 1)[1].startswith(("Get", "List")) for r in by_actor)
            by_account = (
                await audit.ListAuditRecords(audit_pb.ListAuditRecordsRequest(account_id=account_id))
            ).audit_records
            account_rpcs = {r.rpc.rsplit("/", 1)[1] for r in by_account}
            assert account_rpcs >= rpcs - {"CreateChargeOffer", "ActivateChargeOffer"}, service
        customer_records = (
            await audit_grpc.AuditAdminServiceStub(channels["customer"]).ListAuditRecords(
                audit_pb.ListAuditRecordsRequest(account_id=account_id)
            )
        ).audit_records
        added = [r for r in customer_records if r.rpc.endswith("/AddPaymentMethod")]
        assert len(added) == 1 and added[0].source == "unit_of_work"
        assert IBAN not in str(added[0]), "the audit log holds identifiers, never payment details"
    finally:
        for channel in channels.values():
            await channel.close(None)


async def test_expensive_reads_are_rate_limited_per_caller(stack: Stack) -> None:
    greedy = stack.token("platform:greedy", {"balances:read"})
    account_id = str(uuid.uuid4())
    request = balance_pb.ListLedgerEntriesRequest(account_id=account_id)
    async with stack.channel("balance", token=greedy) as channel:
        stub = balance_grpc.BalanceServiceStub(channel)
        codes = []
        for _ in range(5):
            try:
                await stub.ListLedgerEntries(request)
                codes.append(grpc.StatusCode.OK)
            except grpc.aio.AioRpcError as error:
                codes.append(error.code())
                last = error
    assert codes.count(grpc.StatusCode.RESOURCE_EXHAUSTED) >= 2
    assert codes[:3] != [grpc.StatusCode.RESOURCE_EXHAUSTED] * 3, "the burst is allowed"
    status = rpc_status.from_call(last)  # type: ignore[arg-type]
    assert status is not None
    hints = [d for d in status.details if d.Is(error_details_pb2.RetryInfo.DESCRIPTOR)]
    assert hints, "RESOURCE_EXHAUSTED carries a google.rpc.RetryInfo"
    info = error_details_pb2.RetryInfo()
    hints[0].Unpack(info)
    assert info.retry_delay.ToTimedelta().total_seconds() > 0
    # Another caller is not held back by the greedy one.
    async with stack.channel("balance", token=stack.token("platform:patient", {"balances:read"})) as channel:
        try:
            await balance_grpc.BalanceServiceStub(channel).ListLedgerEntries(request)
        except grpc.aio.AioRpcError as error:
            assert error.code() != grpc.StatusCode.RESOURCE_EXHAUSTED


_JWT = re.compile(r"eyJ[A-Za-z0-9_-]{5,}\.eyJ[A-Za-z0-9_-]{5,}\.[A-Za-z0-9_-]+")


def test_the_logs_of_the_run_hold_no_secret(stack: Stack) -> None:
    """Last in the module: every service's log (and migrate log) of everything above."""
    logs = {path.name: path.read_text(errors="replace") for path in sorted(stack.log_dir.glob("*.log"))}
    assert len([name for name in logs if not name.endswith(".migrate.log")]) == len(SERVICES)
    secrets = {
        "the development token": stack.dev_token(),
        "the IBAN": IBAN,
        "the card number": CARD,
        "the card number, compact": CARD.replace(" ", ""),
        "the ERP credential key": stack.security.erp_key_file.read_text().strip(),
        "a private key": "PRIVATE KEY-----",
    }
    for name, text in logs.items():
        assert _JWT.search(text) is None, f"a token in {name}"
        for what, secret in secrets.items():
            assert secret not in text, f"{what} in {name}"
    # The run did log the refusals (so the scan read real logs, not empty ones).
    assert any("UNAUTHENTICATED" in text for text in logs.values())
