"""What several end-to-end modules share: moving the stack's shared clock, a real SMTP server that
keeps what it receives, reading an emailed PDF, waiting on a collections case, and connecting the
ERP gateway to the session's Tryton."""

from __future__ import annotations

import email
import email.policy
import io
import urllib.request
import uuid
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from email.message import EmailMessage
from typing import Any

import grpc
import pypdf
from aiosmtpd.controller import Controller
from evolutivo.admin.v1 import clock_admin_service_pb2 as clock_pb
from evolutivo.admin.v1 import clock_admin_service_pb2_grpc as clock_grpc
from evolutivo.billing.v1 import collections_pb2 as cpb
from evolutivo.billing.v1 import collections_service_pb2 as collections_pb
from evolutivo.billing.v1 import collections_service_pb2_grpc as collections_grpc
from evolutivo.charging.v1 import catalog_pb2
from evolutivo.charging.v1 import charging_service_pb2 as charging_pb
from evolutivo.charging.v1 import charging_service_pb2_grpc as charging_grpc
from evolutivo.customer.v1 import account_pb2
from evolutivo.customer.v1 import customer_service_pb2 as customer_pb
from evolutivo.customer.v1 import customer_service_pb2_grpc as customer_grpc
from evolutivo.erp_gateway.v1 import connection_pb2
from evolutivo.erp_gateway.v1 import erp_gateway_service_pb2 as erp_pb
from evolutivo.erp_gateway.v1 import erp_gateway_service_pb2_grpc as erp_grpc
from evolutivo_runtime.testing import eventually
from evolutivo_stack.embedded import free_port
from google.protobuf.duration_pb2 import Duration
from google.protobuf.timestamp_pb2 import Timestamp
from support.tryton import ADMIN, ADMIN_PASSWORD, Tryton

#: The services whose clocks `advance_to` waits for unless told otherwise.
CLOCK_FOLLOWERS = ("billing", "charging", "customer", "balance")


def at(ts: Timestamp) -> datetime:
    return ts.ToDatetime(tzinfo=UTC)


async def clock_now(channels: dict[str, grpc.aio.Channel], service: str = "billing") -> datetime:
    """The shared clock, as `service` reads it."""
    admin = clock_grpc.ClockAdminServiceStub(channels[service])
    return at((await admin.GetClock(clock_pb.GetClockRequest())).now)


async def advance_to(
    channels: dict[str, grpc.aio.Channel],
    target: datetime,
    services: Iterable[str] = CLOCK_FOLLOWERS,
    timeout: float = 10.0,
    via: str = "billing",
) -> None:
    """Moves the shared clock (through `via`) to at least `target` and waits until every one of
    `services` follows."""
    admin = clock_grpc.ClockAdminServiceStub(channels[via])
    seconds = max(int((target - await clock_now(channels, via)).total_seconds()) + 1, 0)
    moved = await admin.AdvanceClock(clock_pb.AdvanceClockRequest(duration=Duration(seconds=seconds)))
    for service in services:
        stub = clock_grpc.ClockAdminServiceStub(channels[service])

        async def followed(stub: clock_grpc.ClockAdminServiceAsyncStub = stub) -> bool | None:
            seen = await stub.GetClock(clock_pb.GetClockRequest())
            return True if seen.revision >= moved.revision else None

        await eventually(followed, timeout=timeout, what=f"{service} to follow the clock")


@dataclass
class MailServer:
    """aiosmtpd handler that keeps every message it accepts."""

    port: int
    received: list[tuple[list[str], EmailMessage]] = field(default_factory=list)

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        parsed = email.message_from_bytes(envelope.content, policy=email.policy.default)
        self.received.append((list(envelope.rcpt_tos), parsed))
        return "250 2.0.0 accepted"

    def with_message_id(self, message_id: str) -> list[tuple[list[str], EmailMessage]]:
        return [r for r in self.received if r[1]["Message-ID"] == message_id]


@contextmanager
def mail_server() -> Iterator[MailServer]:
    """A real SMTP server on a free local port (for a module's `smtp` fixture), stopped on exit."""
    server = MailServer(free_port())
    controller = Controller(server, hostname="127.0.0.1", port=server.port)
    controller.start()
    try:
        yield server
    finally:
        controller.stop()


def pdf_text(content: bytes) -> str:
    return "\n".join(page.extract_text() for page in pypdf.PdfReader(io.BytesIO(content)).pages)


def money_text(amount: Decimal, currency: str = "EUR") -> str:
    """An amount as bill documents print it."""
    return f"{amount:,.2f} {currency}"


async def case_when(
    collections: collections_grpc.CollectionsServiceAsyncStub, account_id: str, what: str, done: int
) -> cpb.CollectionsCase:
    """The account's (latest) case once its first `done` actions are DONE."""

    async def probe() -> cpb.CollectionsCase | None:
        listed = await collections.ListCollectionsCases(
            collections_pb.ListCollectionsCasesRequest(account_id=account_id)
        )
        if not listed.collections_cases:
            return None
        case = (
            await collections.GetCollectionsCase(
                collections_pb.GetCollectionsCaseRequest(case_id=listed.collections_cases[0].case_id)
            )
        ).collections_case
        return case if sum(a.state == cpb.COLLECTIONS_ACTION_STATE_DONE for a in case.actions) >= done else None

    return await eventually(probe, timeout=30, what=what)


async def tryton_connection(
    erp: erp_grpc.ErpGatewayServiceAsyncStub, tryton: Tryton, import_payments: bool = True
) -> connection_pb2.Connection:
    """An enabled TRYTON connection of the gateway to the session's Tryton, every tax code
    Tryton was set up with mapped; checked with TestConnection."""
    connection = (
        await erp.CreateConnection(
            erp_pb.CreateConnectionRequest(
                request_id=str(uuid.uuid4()),
                secret=ADMIN_PASSWORD,
                connection=connection_pb2.Connection(
                    display_name="Tryton",
                    type=connection_pb2.CONNECTION_TYPE_TRYTON,
                    endpoint_url=tryton.url,
                    username=ADMIN,
                    enabled=True,
                    import_payments=import_payments,
                    mapping=connection_pb2.ConnectionMapping(
                        taxes={code: str(tax) for code, tax in tryton.taxes.items()},
                        journals={role: str(journal) for role, journal in tryton.journals.items()},
                        accounts={
                            "receivable": str(tryton.accounts["receivable"]),
                            "revenue": str(tryton.accounts["revenue"]),
                            "cash": str(tryton.accounts["cash"]),
                            "tax": str(tryton.accounts["tax"]),
                        },
                    ),
                ),
            )
        )
    ).connection
    assert connection.has_credentials
    assert (await erp.TestConnection(erp_pb.TestConnectionRequest(connection_id=connection.connection_id))).ok
    return connection


async def metered_account(
    channels: dict[str, grpc.aio.Channel], display_name: str, unit_price: str = "0.01"
) -> tuple[str, str]:
    """An active charge offer pricing `api.call` per unit (tax code "standard") and a business
    account in Europe/Madrid, billed monthly on day 1 with 14 days' terms, that bought it:
    (offer code, account id)."""
    charging = charging_grpc.ChargingServiceStub(channels["charging"])
    customer = customer_grpc.CustomerServiceStub(channels["customer"])
    code = f"api_{uuid.uuid4().hex[:8]}"
    draft = await charging.CreateChargeOffer(
        charging_pb.CreateChargeOfferRequest(
            charge_offer=catalog_pb2.ChargeOffer(
                code=code,
                name="API Metered",
                currency_code="EUR",
                charges=[
                    catalog_pb2.Charge(
                        code="api_calls",
                        name="API calls",
                        event_type="api.call",
                        per_unit=catalog_pb2.PerUnitPrice(unit_price=unit_price),
                        tax_code="standard",
                    )
                ],
            )
        )
    )
    await charging.ActivateChargeOffer(
        charging_pb.ActivateChargeOfferRequest(charge_offer_id=draft.charge_offer.charge_offer_id)
    )
    account = (
        await customer.CreateAccount(
            customer_pb.CreateAccountRequest(
                request_id=str(uuid.uuid4()),
                account=account_pb2.Account(
                    type=account_pb2.ACCOUNT_TYPE_BUSINESS,
                    display_name=display_name,
                    currency_code="EUR",
                    time_zone="Europe/Madrid",
                    billing_profile=account_pb2.BillingProfile(
                        bill_cycle_day=1, frequency=account_pb2.BILLING_FREQUENCY_MONTHLY, payment_terms_days=14
                    ),
                ),
            )
        )
    ).account
    return code, account.account_id


def metric_samples(metrics_url: str, prefix: str) -> list[float]:
    """The values of one replica's samples whose line starts with `prefix` (name and labels)."""
    text = urllib.request.urlopen(metrics_url, timeout=5).read().decode()
    return [float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith(prefix)]


def metric_sum(metrics_url: str, prefix: str) -> float:
    """The sum of one replica's samples whose line starts with `prefix` (name and labels)."""
    return sum(metric_samples(metrics_url, prefix))
