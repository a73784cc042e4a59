"""CustomerService over gRPC: one servicer composed of one mixin per part of the API.

Each mixin translates messages to service-layer calls and back, nothing more."""

from __future__ import annotations

from collections.abc import Callable

from evolutivo.customer.v1 import customer_service_pb2_grpc as pb_grpc

from evolutivo_customer.entrypoints.grpc_accounts import AccountsApi
from evolutivo_customer.entrypoints.grpc_contacts import ContactsApi
from evolutivo_customer.entrypoints.grpc_overview import OverviewApi
from evolutivo_customer.entrypoints.grpc_payment_methods import PaymentMethodsApi
from evolutivo_customer.entrypoints.grpc_purchases import PurchasesApi
from evolutivo_customer.service_layer.ports import BalanceReader
from evolutivo_customer.service_layer.unit_of_work import CustomerUnitOfWork


class CustomerServicer(
    AccountsApi, ContactsApi, PaymentMethodsApi, PurchasesApi, OverviewApi, pb_grpc.CustomerServiceServicer
):
    def __init__(self, uow: Callable[[], CustomerUnitOfWork], balance: BalanceReader) -> None:
        self._uow = uow
        self._balance = balance
