"""TLS for the server and for the service's outgoing channels, and the bearer token on every call.

Certificates are read once at start: a rotated Kubernetes secret takes effect on the rolling
restart that follows it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc

from evolutivo_runtime.settings import ServiceSettings

AUTHORIZATION_METADATA = "authorization"


class TransportConfigError(ValueError):
    """TLS is on and a file it needs is missing."""


@dataclass(frozen=True)
class TlsFiles:
    # Our certificate (chain) and key; a client without them cannot reach a mutual-TLS server.
    cert: bytes | None
    key: bytes | None
    ca: bytes | None


def _read(setting: str, path: str) -> bytes:
    if not path:
        raise TransportConfigError(
            f"{setting} is required with transport 'tls' (set TRANSPORT=plaintext for development only)"
        )
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise TransportConfigError(f"{setting}: cannot read {path}: {exc.strerror}") from None


def tls_files(settings: ServiceSettings) -> TlsFiles | None:
    """The PEM files of a TLS service; None with transport 'plaintext'."""
    if settings.transport == "plaintext":
        return None
    cert = _read("tls_cert_file", settings.tls_cert_file)
    key = _read("tls_key_file", settings.tls_key_file)
    ca = (
        _read("tls_ca_file", settings.tls_ca_file) if settings.tls_ca_file or settings.tls_require_client_cert else None
    )
    return TlsFiles(cert, key, ca)


def server_credentials(settings: ServiceSettings) -> grpc.ServerCredentials | None:
    files = tls_files(settings)
    if files is None:
        return None
    assert files.key is not None and files.cert is not None
    return grpc.ssl_server_credentials(
        [(files.key, files.cert)],
        root_certificates=files.ca,
        require_client_auth=settings.tls_require_client_cert,
    )


def channel_credentials(files: TlsFiles) -> grpc.ChannelCredentials:
    """Verifies the server against the CA (the system roots without one) and presents our own
    certificate, for servers that require mutual TLS."""
    return grpc.ssl_channel_credentials(root_certificates=files.ca, private_key=files.key, certificate_chain=files.cert)


TokenSource = Callable[[], str]


def _with_token(details: Any, token: TokenSource) -> Any:
    metadata = list(details.metadata or ())
    metadata = [(k, v) for k, v in metadata if k != AUTHORIZATION_METADATA]
    metadata.append((AUTHORIZATION_METADATA, f"Bearer {token()}"))
    return details._replace(metadata=metadata)


# grpc.aio sorts client interceptors by the first of the four kinds each one is, so one class per kind.
class _UnaryUnary(grpc.aio.UnaryUnaryClientInterceptor):  # type: ignore[type-arg]
    def __init__(self, token: TokenSource) -> None:
        self._token = token

    async def intercept_unary_unary(self, continuation: Any, details: Any, request: Any) -> Any:
        return await continuation(_with_token(details, self._token), request)


class _UnaryStream(grpc.aio.UnaryStreamClientInterceptor):  # type: ignore[type-arg]
    def __init__(self, token: TokenSource) -> None:
        self._token = token

    async def intercept_unary_stream(self, continuation: Any, details: Any, request: Any) -> Any:
        return await continuation(_with_token(details, self._token), request)


class _StreamUnary(grpc.aio.StreamUnaryClientInterceptor):  # type: ignore[type-arg]
    def __init__(self, token: TokenSource) -> None:
        self._token = token

    async def intercept_stream_unary(self, continuation: Any, details: Any, requests: Any) -> Any:
        return await continuation(_with_token(details, self._token), requests)


class _StreamStream(grpc.aio.StreamStreamClientInterceptor):  # type: ignore[type-arg]
    def __init__(self, token: TokenSource) -> None:
        self._token = token

    async def intercept_stream_stream(self, continuation: Any, details: Any, requests: Any) -> Any:
        return await continuation(_with_token(details, self._token), requests)


def token_interceptors(token: TokenSource) -> list[Any]:
    """Client interceptors that send `authorization: Bearer <token()>` with every call."""
    return [_UnaryUnary(token), _UnaryStream(token), _StreamUnary(token), _StreamStream(token)]


def open_channel(
    address: str,
    *,
    tls: TlsFiles | None,
    token: TokenSource | None,
    options: Sequence[tuple[str, Any]] = (),
    server_name: str = "",
) -> grpc.aio.Channel:
    """An asyncio channel: TLS (mutual when `tls` holds a certificate) or plaintext, with the token."""
    interceptors = token_interceptors(token) if token is not None else None
    opts = list(options)
    if server_name:
        opts.append(("grpc.ssl_target_name_override", server_name))
    if tls is None:
        return grpc.aio.insecure_channel(address, options=opts, interceptors=interceptors)
    return grpc.aio.secure_channel(address, channel_credentials(tls), options=opts, interceptors=interceptors)
