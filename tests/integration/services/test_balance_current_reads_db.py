"""GetBalance's current-balance read outside the units of work (adapters/repository.py
CurrentBalances) against a real, migrated database: it answers exactly what the read through a
unit of work answers (groups, order, balances, credit policy and state, closed groups shown or
not), NOT_FOUND for an unknown account, and reads again on a fresh connection when its pooled one
was cut."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import asyncpg
import pytest
from evolutivo.balance.v1 import balance_pb2
from evolutivo.balance.v1 import balance_service_pb2 as pb
from evolutivo.charging.v1 import events_pb2 as charging_events
from evolutivo.charging.v1 import usage_pb2
from evolutivo.customer.v1 import account_pb2
from evolutivo.customer.v1 import events_pb2 as customer_events
from evolutivo_balance.adapters import events
from evolutivo_balance.adapters.orm import inbox, outbox, request_log
from evolutivo_balance.adapters.repository import CurrentBalances
from evolutivo_balance.entrypoints.app import MIGRATIONS
from evolutivo_balance.entrypoints.consumers import subscriptions
from evolutivo_balance.entrypoints.grpc_api import BalanceServicer
from evolutivo_balance.service_layer.unit_of_work import BalanceUnitOfWork
from evolutivo_runtime.db import plain_url
from evolutivo_runtime.errors import NotFound
from evolutivo_runtime.money import to_money
from evolutivo_runtime.timestamps import to_timestamp
from google.protobuf import field_mask_pb2
from support.databases import MigratedDatabase, ServiceDb
from support.jetstream import consumer_for, message, process

NOW = datetime(2031, 5, 17, 9, 30, tzinfo=UTC)
NO_CONTEXT: Any = None


class ReadsDb(ServiceDb):
    current: CurrentBalances

    def uow(self) -> BalanceUnitOfWork:
        return BalanceUnitOfWork(self.sessions, outbox, self.clock, events.encode, request_log)

    @property
    def through_uow(self) -> BalanceServicer:
        return BalanceServicer(self.uow)

    @property
    def direct(self) -> BalanceServicer:
        return BalanceServicer(self.uow, self.current)

    async def deliver(self, stream: str, subject: str, event: Any) -> None:
        msg = message(subject, event, NOW)
        await process(consumer_for(subscriptions(), stream, self.uow, inbox), msg)
        assert msg.acked


@pytest.fixture
async def db(migrated_database: MigratedDatabase) -> AsyncIterator[ReadsDb]:
    async with ReadsDb.open(await migrated_database("balance_reads", MIGRATIONS), NOW) as database:
        database.current = CurrentBalances(database.url, 2)
        try:
            yield database
        finally:
            await database.current.close()


async def an_account(db: ReadsDb) -> uuid.UUID:
    account_id = uuid.uuid4()
    account = account_pb2.Account(account_id=str(account_id), currency_code="EUR", time_zone="Europe/Madrid")
    await db.deliver(
        "EVOLUTIVO_CUSTOMER", "evolutivo.customer.v1.account.created", customer_events.AccountCreated(account=account)
    )
    return account_id


async def charge(db: ReadsDb, account_id: uuid.UUID, amount: str, group: str = "") -> None:
    created = charging_events.ChargesCreated(
        currency_code="EUR",
        charges=[
            usage_pb2.RatedCharge(
                charge_id=str(uuid.uuid4()),
                account_id=str(account_id),
                kind=usage_pb2.CHARGE_KIND_USAGE,
                balance_group=group,
                amount=to_money(Decimal(amount), "EUR"),
                rate_time=to_timestamp(NOW),
            )
        ],
    )
    await db.deliver("EVOLUTIVO_CHARGING", "evolutivo.charging.v1.charges.created", created)


async def both(db: ReadsDb, account_id: uuid.UUID, show_closed: bool) -> tuple[Any, Any]:
    request = pb.GetBalanceRequest(account_id=str(account_id), show_closed=show_closed)
    return (
        await db.through_uow.GetBalance(request, NO_CONTEXT),
        await db.direct.GetBalance(request, NO_CONTEXT),
    )


async def test_the_direct_read_answers_what_the_unit_of_work_answers(db: ReadsDb) -> None:
    account_id = await an_account(db)
    api = db.through_uow
    (default,) = (await api.GetBalance(pb.GetBalanceRequest(account_id=str(account_id)), NO_CONTEXT)).balance_groups
    # A credit policy with thresholds (JSONB columns), crossed by a charge.
    await api.SetCreditLimit(
        pb.SetCreditLimitRequest(
            balance_group_id=default.balance_group_id,
            credit_policy=balance_pb2.CreditPolicy(
                credit_limit=to_money(Decimal(100), "EUR"),
                thresholds=[balance_pb2.CreditThreshold(percent="50")],
            ),
            update_mask=field_mask_pb2.FieldMask(paths=[]),
        ),
        NO_CONTEXT,
    )
    await charge(db, account_id, "60.00")
    # A second group, charged, and a third one closed.
    for name in ("roaming", "old"):
        await api.CreateBalanceGroup(
            pb.CreateBalanceGroupRequest(account_id=str(account_id), name=name, request_id=str(uuid.uuid4())),
            NO_CONTEXT,
        )
    await charge(db, account_id, "7.25", group="roaming")
    listed = (await api.GetBalance(pb.GetBalanceRequest(account_id=str(account_id)), NO_CONTEXT)).balance_groups
    (old,) = [g for g in listed if g.name == "old"]
    await api.CloseBalanceGroup(
        pb.CloseBalanceGroupRequest(balance_group_id=old.balance_group_id, request_id=str(uuid.uuid4())), NO_CONTEXT
    )

    for show_closed in (False, True):
        through_uow, direct = await both(db, account_id, show_closed)
        assert direct == through_uow
    hidden, shown = (await both(db, account_id, False))[1], (await both(db, account_id, True))[1]
    assert [g.name for g in hidden.balance_groups] == ["default", "roaming"]
    # (Opened at the same instant of the fixed clock: after the default, by id.)
    assert {g.name for g in shown.balance_groups[1:]} == {"roaming", "old"}
    assert shown.balance_groups[0].credit_policy.thresholds[0].percent == "50"


async def test_an_unknown_account_is_not_found(db: ReadsDb) -> None:
    with pytest.raises(NotFound):
        await db.direct.GetBalance(pb.GetBalanceRequest(account_id=str(uuid.uuid4())), NO_CONTEXT)


async def test_a_connection_cut_under_the_pool_is_replaced_and_the_read_answers(db: ReadsDb) -> None:
    account_id = await an_account(db)
    await charge(db, account_id, "3.00")
    before = await db.direct.GetBalance(pb.GetBalanceRequest(account_id=str(account_id)), NO_CONTEXT)
    # Every other connection to the database ended by the server (as a PostgreSQL restart does).
    admin = await asyncpg.connect(plain_url(db.url))
    try:
        await admin.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE datname = current_database() AND pid <> pg_backend_pid()"
        )
    finally:
        await admin.close()
    after = await db.direct.GetBalance(pb.GetBalanceRequest(account_id=str(account_id)), NO_CONTEXT)
    assert after == before
