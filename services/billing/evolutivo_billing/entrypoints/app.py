"""Wires the billing service into the shared runtime."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

from evolutivo.billing.v1 import billing_service_pb2, billing_service_pb2_grpc
from evolutivo_runtime.server.app import Runtime, ServiceDefinition, Servicer, Wiring

from evolutivo_billing.adapters import events
from evolutivo_billing.adapters.orm import inbox, outbox
from evolutivo_billing.domain.bills import TaxRates
from evolutivo_billing.domain.numbering import NumberFormat
from evolutivo_billing.entrypoints.consumers import subscriptions
from evolutivo_billing.entrypoints.cycle_closer import CycleCloser
from evolutivo_billing.entrypoints.grpc_api import BillingServicer
from evolutivo_billing.service_layer.bills import BillPolicy
from evolutivo_billing.service_layer.unit_of_work import BillingUnitOfWork
from evolutivo_billing.settings import BillingSettings

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
    )
    return Wiring(
        servicers=[
            Servicer(
                billing_service_pb2_grpc.add_BillingServiceServicer_to_server,
                BillingServicer(uow),
                billing_service_pb2.DESCRIPTOR.services_by_name["BillingService"].full_name,
            )
        ],
        uow_factory=uow,
        subscriptions=subscriptions(),
        upstream_services=["customer", "charging", "balance"],
        background=[closer.run],
    )


def policy(settings: BillingSettings) -> BillPolicy:
    """How the bill runs build and issue bills, from BILLING_TAX_RATES, BILLING_NUMBER_FORMAT and
    BILLING_SUPPRESS_ZERO_BILLS."""
    return BillPolicy(TaxRates(settings.tax_rates), NumberFormat(settings.number_format), settings.suppress_zero_bills)


def definition() -> ServiceDefinition:
    return ServiceDefinition("billing", BillingSettings(), MIGRATIONS, outbox, inbox, wire)
