"""Domain events -> the protobuf events customer publishes, and their subjects."""

from __future__ import annotations

from evolutivo.customer.v1 import events_pb2
from google.protobuf.message import Message

from evolutivo_customer.adapters import proto
from evolutivo_customer.domain.model import AccountCreated

ACCOUNT_CREATED = "evolutivo.customer.v1.account.created"


def encode(event: object) -> tuple[str, Message]:
    match event:
        case AccountCreated(account=account):
            return ACCOUNT_CREATED, events_pb2.AccountCreated(account=proto.account_to_pb(account))
    raise TypeError(f"no protobuf event for {type(event).__name__}")
