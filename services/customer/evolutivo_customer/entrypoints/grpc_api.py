"""CustomerService over gRPC: one servicer composed of one mixin per part of the API.

Each mixin translates messages to service-layer calls and back, nothing more."""

from __future__ import annotations

from collections.abc import Callable

from evolutivo.customer.v1 import customer_service_pb2_grpc as pb_grpc

from evolutivo_customer.entrypoints.grpc_accounts import AccountsApi
from evolutivo_customer.entrypoints.grpc_contacts import ContactsApi
from evolutivo_customer.entrypoints.grpc_overview import OverviewApi
from evolutivo_customer.entrypoints.grpc_payment_methods import PaymentMethodsApi
from evolutivo_customer.entrypoints.grpc_privacy import PrivacyApi
from evolutivo_customer.entrypoints.grpc_purchases import PurchasesApi
from evolutivo_customer.service_layer.overview import Balance, BillingSummaryReader
from evolutivo_customer.service_layer.ports import CatalogReader
from evolutivo_customer.service_layer.unit_of_work import CustomerUnitOfWork

# Seconds each read from balance or billing may take (CustomerSettings.downstream_timeout_seconds).
DEFAULT_DOWNSTREAM_TIMEOUT = 0.5


class CustomerServicer(
    AccountsApi, ContactsApi, PaymentMethodsApi, PrivacyApi, PurchasesApi, OverviewApi, pb_grpc.CustomerServiceServicer
):
    def __init__(
        self,
        uow: Callable[[], CustomerUnitOfWork],
        balance: Balance,
        billing: BillingSummaryReader | None = None,
        downstream_timeout: float = DEFAULT_DOWNSTREAM_TIMEOUT,
        catalog: CatalogReader | None = None,
    ) -> None:
        """`billing` None: the overview lists its billing sections as unavailable."""
        self._uow = uow
        self._balance = balance
        self._balance_groups = balance
        self._billing = billing
        self._downstream_timeout = downstream_timeout
        if catalog is not None:
            self._catalog = catalog
