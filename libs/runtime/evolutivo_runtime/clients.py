"""gRPC channels from one service to another."""

from __future__ import annotations

import grpc

from evolutivo_runtime.server.app import MAX_MESSAGE_BYTES

# Reconnect quickly after a peer restarts (the defaults back off up to 120 s); calls still carry
# their own deadline, so a peer that stays down costs a caller at most that deadline.
_OPTIONS = [
    ("grpc.initial_reconnect_backoff_ms", 100),
    ("grpc.min_reconnect_backoff_ms", 100),
    ("grpc.max_reconnect_backoff_ms", 2000),
    ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
    ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
]


def service_channel(address: str) -> grpc.aio.Channel:
    return grpc.aio.insecure_channel(address, options=_OPTIONS)
