"""Domain events -> the protobuf events balance publishes, and their subjects."""

from __future__ import annotations

from evolutivo.balance.v1 import events_pb2
from google.protobuf.message import Message

from evolutivo_balance.adapters import proto
from evolutivo_balance.domain.model import BalanceGroupCreated

BALANCE_GROUP_CREATED = "evolutivo.balance.v1.balance_group.created"


def encode(event: object) -> tuple[str, Message]:
    match event:
        case BalanceGroupCreated(group=group):
            return BALANCE_GROUP_CREATED, events_pb2.BalanceGroupCreated(balance_group=proto.group_to_pb(group))
    raise TypeError(f"no protobuf event for {type(event).__name__}")
