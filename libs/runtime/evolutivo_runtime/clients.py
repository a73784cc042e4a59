"""gRPC channels from one service to another.

`serve()` configures, once per process, how this service reaches the others: TLS (mutual, with
its own certificate) and its own service token on every call (docs/security.md). Until then
(in-process tests) channels are plaintext and carry no token.
"""

from __future__ import annotations

from dataclasses import dataclass

import grpc

from evolutivo_runtime.security.transport import TlsFiles, TokenSource, open_channel

MAX_MESSAGE_BYTES = 8 * 1024 * 1024

# Reconnect quickly after a peer restarts (the defaults back off up to 120 s); calls still carry
# their own deadline, so a peer that stays down costs a caller at most that deadline.
_OPTIONS = [
    ("grpc.initial_reconnect_backoff_ms", 100),
    ("grpc.min_reconnect_backoff_ms", 100),
    ("grpc.max_reconnect_backoff_ms", 2000),
    ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
    ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
]


@dataclass(frozen=True)
class ClientSecurity:
    tls: TlsFiles | None
    token: TokenSource | None
    server_name: str = ""


_configured = ClientSecurity(tls=None, token=None)


def configure(security: ClientSecurity) -> None:
    """How every channel this process opens from now on authenticates (called by serve())."""
    global _configured
    _configured = security


def service_channel(address: str) -> grpc.aio.Channel:
    security = _configured
    channel = open_channel(
        address, tls=security.tls, token=security.token, options=_OPTIONS, server_name=security.server_name
    )
    # Connect (TCP + TLS handshake) now, not on the first call: callers use short deadlines
    # (customer's reads: 0.5 s) that a handshake on a busy machine should not eat into.
    channel.get_state(try_to_connect=True)
    return channel
