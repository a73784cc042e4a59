"""Two replicas of every service at once: they share the durable consumers and the outbox relay,
and still apply each event exactly once."""

from __future__ import annotations

import asyncio
import urllib.request
import uuid
from collections.abc import Iterator

import asyncpg
import pytest
from evolutivo.customer.v1 import account_pb2
from evolutivo.customer.v1 import customer_service_pb2 as pb
from evolutivo.customer.v1 import customer_service_pb2_grpc as pb_grpc
from evolutivo_runtime.testing import eventually
from evolutivo_stack.embedded import scratch_dir
from evolutivo_stack.stack import SERVICES, Stack

pytestmark = pytest.mark.e2e

ACCOUNTS = 120


@pytest.fixture(scope="module")
def stack() -> Iterator[Stack]:
    with (
        scratch_dir("replicas") as data_dir,
        Stack(data_dir, base_port=None, replicas={service: 2 for service in SERVICES}) as running,
    ):
        yield running


def applied_by(metrics_url: str, durable: str) -> float:
    """evolutivo_consumer_applied_total of one replica, summed over event types."""
    text = urllib.request.urlopen(metrics_url, timeout=5).read().decode()
    prefix = f'evolutivo_consumer_applied_total{{consumer="{durable}"'
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith(prefix))


async def test_two_replicas_of_every_service_apply_each_event_once(stack: Stack) -> None:
    channels = [stack.channel("customer", index) for index in range(len(stack.replica_addresses("customer")))]
    try:
        stubs = [pb_grpc.CustomerServiceStub(channel) for channel in channels]
        created = await asyncio.gather(
            *(
                stubs[i % 2].CreateAccount(
                    pb.CreateAccountRequest(
                        request_id=str(uuid.uuid4()),
                        account=account_pb2.Account(
                            type=account_pb2.ACCOUNT_TYPE_INDIVIDUAL,
                            display_name=f"Replica {i}",
                            currency_code="EUR",
                            time_zone="Europe/Lisbon",
                        ),
                    )
                )
                for i in range(ACCOUNTS)
            )
        )
    finally:
        for channel in channels:
            await channel.close()
    ids = [uuid.UUID(r.account.account_id) for r in created]
    assert len(set(ids)) == ACCOUNTS

    for service, table in (("balance", "balance_groups"), ("billing", "bill_units"), ("charging", "charging_accounts")):
        conn = await asyncpg.connect(stack.database_url(service))
        try:

            async def all_there(conn: asyncpg.Connection = conn, table: str = table) -> int | None:
                n = await conn.fetchval(f"select count(*) from {table} where account_id = any($1::uuid[])", ids)
                return n if n == ACCOUNTS else None

            await eventually(all_there, timeout=60, what=f"{service} to apply every account")
            doubled = await conn.fetchval(
                f"select count(*) from (select account_id from {table} where account_id = any($1::uuid[])"
                " group by account_id having count(*) > 1) d",
                ids,
            )
            assert doubled == 0, f"{service} applied an account twice"
            # Each account's creation applied once (other event types have their own inbox rows).
            created = await conn.fetchval(
                "select count(*) from inbox where event_type = 'evolutivo.customer.v1.AccountCreated'"
            )
            assert created == ACCOUNTS
        finally:
            await conn.close()

    # The replicas' own counters add up to one application per event, however they shared it.
    shares = [applied_by(r.metrics_url, "balance") for r in stack.replicas("balance")]
    print("balance replicas applied", shares)
    assert sum(shares) == ACCOUNTS, shares
