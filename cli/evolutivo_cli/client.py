"""gRPC channels to the five services, with the token, TLS and a deadline on every call."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import grpc
from evolutivo.admin.v1 import clock_admin_service_pb2_grpc as clock_grpc
from evolutivo.balance.v1 import balance_service_pb2_grpc as balance_grpc
from evolutivo.billing.v1 import billing_service_pb2_grpc as billing_grpc
from evolutivo.billing.v1 import collections_service_pb2_grpc as collections_grpc
from evolutivo.charging.v1 import charging_service_pb2_grpc as charging_grpc
from evolutivo.customer.v1 import customer_service_pb2_grpc as customer_grpc
from evolutivo.erp_gateway.v1 import erp_gateway_service_pb2_grpc as erp_grpc

from evolutivo_cli.settings import Settings

_OPTIONS = [
    # Bill PDFs and batch answers can be large.
    ("grpc.max_receive_message_length", 64 * 1024 * 1024),
    ("grpc.max_send_message_length", 64 * 1024 * 1024),
    ("grpc.initial_reconnect_backoff_ms", 100),
    ("grpc.max_reconnect_backoff_ms", 2000),
]


class _CallDetails(grpc.ClientCallDetails):
    def __init__(self, base: grpc.ClientCallDetails, metadata: Any, timeout: float | None) -> None:
        self.method = base.method
        self.timeout = timeout
        self.metadata = metadata
        self.credentials = base.credentials
        self.wait_for_ready = getattr(base, "wait_for_ready", None)
        self.compression = getattr(base, "compression", None)


class _Interceptor(grpc.UnaryUnaryClientInterceptor, grpc.StreamUnaryClientInterceptor):  # type: ignore[type-arg]
    """Adds `authorization: Bearer <token>` and the default deadline, and tags a failed call with
    the service, address and method it went to (errors.decode reads it)."""

    def __init__(self, service: str, address: str, token: str, timeout: float) -> None:
        self._target = (service, address)
        self._token = token
        self._timeout = timeout

    def _details(self, details: grpc.ClientCallDetails) -> _CallDetails:
        metadata = list(details.metadata or [])
        if self._token:
            metadata.append(("authorization", f"Bearer {self._token}"))
        timeout = details.timeout if details.timeout is not None else self._timeout
        return _CallDetails(details, metadata, timeout)

    def _tag(self, outcome: Any, method: str) -> Any:
        error = outcome.exception()
        if isinstance(error, grpc.RpcError):
            error.evolutivo_target = (*self._target, method.rsplit("/", 1)[-1] if method else "")  # type: ignore[attr-defined]
        return outcome

    def intercept_unary_unary(self, continuation: Callable[..., Any], details: Any, request: Any) -> Any:
        return self._tag(continuation(self._details(details), request), details.method)

    def intercept_stream_unary(
        self, continuation: Callable[..., Any], details: Any, request_iterator: Iterator[Any]
    ) -> Any:
        return self._tag(continuation(self._details(details), request_iterator), details.method)


def open_channel(service: str, settings: Settings) -> grpc.Channel:
    address = settings.addresses[service]
    if settings.secure:
        root = Path(settings.ca_file).read_bytes() if settings.ca_file else None
        key = Path(settings.key_file).read_bytes() if settings.key_file else None
        cert = Path(settings.cert_file).read_bytes() if settings.cert_file else None
        credentials = grpc.ssl_channel_credentials(root_certificates=root, private_key=key, certificate_chain=cert)
        channel = grpc.secure_channel(address, credentials, options=_OPTIONS)
    else:
        channel = grpc.insecure_channel(address, options=_OPTIONS)
    return grpc.intercept_channel(channel, _Interceptor(service, address, settings.token, settings.timeout))


class Clients:
    """Stubs of the suite's services, opened on first use and closed with :meth:`close`."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._channels: dict[str, grpc.Channel] = {}

    def channel(self, service: str) -> grpc.Channel:
        if service not in self._channels:
            self._channels[service] = open_channel(service, self.settings)
        return self._channels[service]

    def close(self) -> None:
        for channel in self._channels.values():
            channel.close()
        self._channels.clear()

    @property
    def customer(self) -> customer_grpc.CustomerServiceStub:
        return customer_grpc.CustomerServiceStub(self.channel("customer"))

    @property
    def charging(self) -> charging_grpc.ChargingServiceStub:
        return charging_grpc.ChargingServiceStub(self.channel("charging"))

    @property
    def balance(self) -> balance_grpc.BalanceServiceStub:
        return balance_grpc.BalanceServiceStub(self.channel("balance"))

    @property
    def billing(self) -> billing_grpc.BillingServiceStub:
        return billing_grpc.BillingServiceStub(self.channel("billing"))

    @property
    def collections(self) -> collections_grpc.CollectionsServiceStub:
        return collections_grpc.CollectionsServiceStub(self.channel("billing"))

    @property
    def erp(self) -> erp_grpc.ErpGatewayServiceStub:
        return erp_grpc.ErpGatewayServiceStub(self.channel("erp_gateway"))

    def clock(self, service: str = "billing") -> clock_grpc.ClockAdminServiceStub:
        return clock_grpc.ClockAdminServiceStub(self.channel(service))
