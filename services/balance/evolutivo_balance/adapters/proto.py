"""Translation between the domain model and the evolutivo.balance.v1 messages."""

from __future__ import annotations

from evolutivo.balance.v1 import balance_pb2
from evolutivo_runtime.money import to_money
from google.protobuf.timestamp_pb2 import Timestamp

from evolutivo_balance.domain.model import BalanceGroup


def group_to_pb(group: BalanceGroup) -> balance_pb2.BalanceGroup:
    create_time = Timestamp()
    create_time.FromDatetime(group.create_time)
    return balance_pb2.BalanceGroup(
        balance_group_id=str(group.balance_group_id),
        account_id=str(group.account_id),
        name=group.name,
        is_default=group.is_default,
        balance=to_money(group.balance, group.currency_code),
        create_time=create_time,
    )
