"""Wires the billing service into the shared runtime."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from datetime import timedelta
from pathlib import Path

from evolutivo.billing.v1 import billing_service_pb2, billing_service_pb2_grpc
from evolutivo_runtime.server.app import Runtime, ServiceDefinition, Servicer, Wiring

from evolutivo_billing.adapters import events, pdf
from evolutivo_billing.adapters.orm import inbox, outbox
from evolutivo_billing.adapters.smtp import DirectoryMailer, SmtpMailer
from evolutivo_billing.domain.bills import TaxRates
from evolutivo_billing.domain.delivery import RetryPolicy
from evolutivo_billing.domain.documents import Seller
from evolutivo_billing.domain.numbering import NumberFormat
from evolutivo_billing.entrypoints import collections_processor, grpc_collections
from evolutivo_billing.entrypoints.consumers import subscriptions
from evolutivo_billing.entrypoints.cycle_closer import CycleCloser
from evolutivo_billing.entrypoints.delivery_loop import DeliveryLoop
from evolutivo_billing.entrypoints.grpc_api import BillingServicer
from evolutivo_billing.service_layer.bills import BillPolicy
from evolutivo_billing.service_layer.delivery import DeliveryPolicy, Documents, Mailer
from evolutivo_billing.service_layer.unit_of_work import BillingUnitOfWork
from evolutivo_billing.settings import BillingSettings

log = logging.getLogger(__name__)

MIGRATIONS = Path(__file__).resolve().parent.parent / "migrations"


def wire(rt: Runtime) -> Wiring:
    def uow() -> BillingUnitOfWork:
        return BillingUnitOfWork(rt.sessions, outbox, rt.clock, events.encode)

    settings = rt.settings if isinstance(rt.settings, BillingSettings) else BillingSettings()
    closer = CycleCloser(
        uow,
        timedelta(seconds=settings.late_usage_delay_seconds),
        settings.cycle_check_seconds,
        settings.cycle_close_batch_size,
        policy(settings),
        settings.database_url,
        together=settings.cycle_close_together,
        passes_at_once=settings.cycle_close_passes_at_once,
    )
    return Wiring(
        servicers=[
            Servicer(
                billing_service_pb2_grpc.add_BillingServiceServicer_to_server,
                BillingServicer(uow, documents(settings), policy(settings)),
                billing_service_pb2.DESCRIPTOR.services_by_name["BillingService"].full_name,
            ),
            grpc_collections.servicer(rt, documents(settings)),
        ],
        uow_factory=uow,
        subscriptions=subscriptions(),
        upstream_services=["customer", "charging", "balance"],
        background=[
            closer.run,
            collections_processor.processor(uow, settings).run,
            *delivery_loops(uow, settings),
        ],
    )


def policy(settings: BillingSettings) -> BillPolicy:
    """How bills are built, issued and corrected, from BILLING_TAX_RATES, BILLING_NUMBER_FORMAT,
    BILLING_SUPPRESS_ZERO_BILLS, BILLING_CREDIT_NOTE_NUMBER_FORMAT and
    BILLING_BILL_NOW_LOCK_TIMEOUT_SECONDS."""
    return BillPolicy(
        TaxRates(settings.tax_rates),
        NumberFormat(settings.number_format),
        settings.suppress_zero_bills,
        NumberFormat(settings.credit_note_number_format),
        settings.bill_now_lock_timeout_seconds,
    )


def documents(settings: BillingSettings) -> Documents:
    """The seller printed on bills and dunning letters (BILLING_SELLER_*, BILLING_PAYMENT_INSTRUCTIONS)
    and the renderers."""
    seller = Seller(
        name=settings.seller_name,
        address_lines=tuple(settings.seller_address),
        tax_id=settings.seller_tax_id,
        email=settings.seller_email,
        payment_instructions=tuple(settings.payment_instructions),
    )
    return Documents(seller, pdf.render, pdf.render_letter)


def mailer(settings: BillingSettings) -> tuple[Mailer, str] | None:
    """SMTP with BILLING_SMTP_HOST; else .eml files in BILLING_DELIVERY_OUTBOX_DIR; else None
    (delivery off). With the sender address."""
    if settings.smtp_host:
        smtp = SmtpMailer(
            settings.smtp_host,
            settings.smtp_port,
            settings.smtp_username,
            settings.smtp_password.get_secret_value(),
            settings.smtp_starttls,
            settings.smtp_timeout_seconds,
        )
        return smtp, settings.smtp_from
    if settings.delivery_outbox_dir:
        return DirectoryMailer(Path(settings.delivery_outbox_dir)), settings.smtp_from or "billing@localhost"
    return None


def delivery_loops(
    uow: Callable[[], BillingUnitOfWork], settings: BillingSettings
) -> list[Callable[[asyncio.Event], Awaitable[None]]]:
    """The delivery loop, when a way to send is configured (docs/billing.md, "Delivery")."""
    configured = mailer(settings)
    if configured is None:
        log.warning(
            "delivery of bills and collections notices is off: set BILLING_SMTP_HOST (or BILLING_DELIVERY_OUTBOX_DIR)"
        )
        return []
    sender_mailer, sender = configured
    retry = RetryPolicy(
        settings.delivery_max_attempts,
        timedelta(seconds=settings.delivery_retry_seconds),
        timedelta(seconds=settings.delivery_retry_max_seconds),
    )
    loop = DeliveryLoop(
        uow, documents(settings), sender_mailer, DeliveryPolicy(sender, retry), settings.delivery_check_seconds
    )
    return [loop.run]


def definition() -> ServiceDefinition:
    return ServiceDefinition("billing", BillingSettings(), MIGRATIONS, outbox, inbox, wire)
