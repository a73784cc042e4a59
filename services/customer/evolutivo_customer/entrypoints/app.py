"""Wires the customer service into the shared runtime."""

from __future__ import annotations

from pathlib import Path

from evolutivo.customer.v1 import customer_service_pb2, customer_service_pb2_grpc
from evolutivo_runtime.clients import service_channel
from evolutivo_runtime.security.crypto import EncryptionKeyError, FieldCipher
from evolutivo_runtime.server.app import Runtime, ServiceDefinition, Servicer, Wiring

from evolutivo_customer.adapters import contact_events, events, payment_method_events, purchase_events  # noqa: F401
from evolutivo_customer.adapters.balance_client import GrpcBalanceReader
from evolutivo_customer.adapters.billing_client import GrpcBillingReader
from evolutivo_customer.adapters.charging_client import GrpcCatalogReader
from evolutivo_customer.adapters.orm import inbox, outbox, request_log
from evolutivo_customer.entrypoints.consumers import subscriptions
from evolutivo_customer.entrypoints.grpc_api import CustomerServicer
from evolutivo_customer.service_layer.unit_of_work import CustomerUnitOfWork
from evolutivo_customer.settings import CustomerSettings

MIGRATIONS = Path(__file__).resolve().parent.parent / "migrations"


def wire(rt: Runtime) -> Wiring:
    settings = rt.settings
    assert isinstance(settings, CustomerSettings)

    cipher = details_cipher(settings)

    def uow() -> CustomerUnitOfWork:
        return CustomerUnitOfWork(rt.sessions, outbox, rt.clock, events.encode, request_log, details_cipher=cipher)

    balance = GrpcBalanceReader(service_channel(settings.balance_address), settings.downstream_timeout_seconds)
    billing = GrpcBillingReader(service_channel(settings.billing_address), settings.downstream_timeout_seconds)
    catalog = GrpcCatalogReader(service_channel(settings.charging_address), settings.downstream_timeout_seconds)
    return Wiring(
        servicers=[
            Servicer(
                customer_service_pb2_grpc.add_CustomerServiceServicer_to_server,
                CustomerServicer(uow, balance, billing, settings.downstream_timeout_seconds, catalog),
                customer_service_pb2.DESCRIPTOR.services_by_name["CustomerService"].full_name,
            )
        ],
        uow_factory=uow,
        subscriptions=subscriptions(),
        # Charging's ChargesCreated fixes an account's currency (accounts.has_charges).
        upstream_services=["charging"],
    )


def details_cipher(settings: CustomerSettings) -> FieldCipher:
    """The payment-details cipher; no usable key stops the service (details are never stored in clear)."""
    keys = settings.payment_details_keys.get_secret_value()
    if not keys.strip():
        raise EncryptionKeyError(
            "CUSTOMER_PAYMENT_DETAILS_KEYS is not set: the customer service needs at least one Fernet key "
            "to encrypt payment-method details (docs/customer.md, 'Payment methods at rest')"
        )
    try:
        return FieldCipher.from_setting(keys)
    except EncryptionKeyError as exc:
        raise EncryptionKeyError(f"CUSTOMER_PAYMENT_DETAILS_KEYS: {exc}") from None


def definition() -> ServiceDefinition:
    return ServiceDefinition("customer", CustomerSettings(), MIGRATIONS, outbox, inbox, wire)
