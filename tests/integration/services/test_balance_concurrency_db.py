"""Thousands of charges (ChargesCreated batches through the consumer), payments, adjustments and
transfers fired at ONE account from several OS processes at once, each with its own engine on the
same real database, while the account's default group has a credit limit and thresholds. Each
process reports what it moved; the balance must be their sum to the cent, every group's balance the
sum of its entries, and the credit events a clean alternation with one version per crossing, ending
in the state the final balance says."""

from __future__ import annotations

import asyncio
import json
import sys
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from evolutivo.balance.v1 import balance_pb2, events_pb2
from evolutivo.balance.v1 import balance_service_pb2 as pb
from evolutivo.customer.v1 import account_pb2
from evolutivo.customer.v1 import events_pb2 as customer_events
from evolutivo_balance.adapters import events
from evolutivo_balance.adapters.orm import balance_groups, inbox, ledger_entries, outbox, request_log
from evolutivo_balance.entrypoints.app import MIGRATIONS
from evolutivo_balance.entrypoints.consumers import subscriptions
from evolutivo_balance.entrypoints.grpc_api import BalanceServicer
from evolutivo_balance.service_layer.unit_of_work import BalanceUnitOfWork
from evolutivo_runtime.clock import FixedClock
from evolutivo_runtime.db import create_engine, session_factory
from evolutivo_runtime.money import from_money, to_money
from sqlalchemy import func, select, text
from sqlalchemy.ext.asyncio import AsyncEngine
from support.jetstream import consumer_for, message, process

NOW = datetime(2031, 5, 17, 9, 30, tzinfo=UTC)
NO_CONTEXT: Any = None
LIMIT = Decimal("300.00")
WORKERS = 4

# One worker process: a seeded, shuffled sequence of charge batches (4 ChargesCreated messages of
# 10 charges each, applied as the consumer applies a fetched batch), payments, adjustments and
# transfers. It waits for "go" so all run at once, and prints what it moved.
WORKER = """
import asyncio, json, random, sys, uuid
from decimal import Decimal
from types import SimpleNamespace

from evolutivo.balance.v1 import balance_service_pb2 as pb
from evolutivo.balance.v1 import payment_pb2
from evolutivo.charging.v1 import events_pb2, usage_pb2
from evolutivo_balance.adapters import events
from evolutivo_balance.adapters.orm import inbox, outbox, request_log
from evolutivo_balance.entrypoints.consumers import subscriptions
from evolutivo_balance.entrypoints.grpc_api import BalanceServicer
from evolutivo_balance.service_layer.unit_of_work import BalanceUnitOfWork
from evolutivo_runtime.clock import SystemClock
from evolutivo_runtime.db import create_engine, session_factory
from evolutivo_runtime.messaging import envelope
from evolutivo_runtime.messaging.consumer import EventConsumer
from evolutivo_runtime.money import to_money


class Msg:
    def __init__(self, event):
        event_id = str(uuid.uuid4())
        self.data = event.SerializeToString()
        self.subject = "evolutivo.charging.v1.charges.created"
        self.headers = {
            envelope.EVENT_ID: event_id,
            envelope.EVENT_TYPE: event.DESCRIPTOR.full_name,
            envelope.OCCURRED_AT: "2031-05-17T09:30:00+00:00",
        }
        self.metadata = SimpleNamespace(num_delivered=1, num_pending=0, sequence=SimpleNamespace(stream=1))

    async def ack(self):
        pass

    async def nak(self, delay=None):
        raise SystemExit("a charge message failed: " + self.subject)


async def main(url, account_id, default_id, project_id, seed):
    engine = create_engine(url, 3)
    sessions = session_factory(engine)
    uow = lambda: BalanceUnitOfWork(sessions, outbox, SystemClock(), events.encode, request_log)
    api = BalanceServicer(uow)
    (charging,) = [s for s in subscriptions() if s.stream == "EVOLUTIVO_CHARGING"]
    consumer = EventConsumer(None, charging, uow, inbox, None, 100, 5, 30)
    rnd = random.Random(int(seed))
    cents = lambda low, high: Decimal(rnd.randint(low, high)) / 100
    moved, booked, charges = Decimal(0), 0, 0

    async def pay(group_id, amount):
        await api.RecordPayment(
            pb.RecordPaymentRequest(
                account_id=account_id,
                balance_group_id=group_id,
                amount=to_money(amount, "EUR"),
                method=payment_pb2.PAYMENT_METHOD_TYPE_CARD,
                reference=str(uuid.uuid4()),
            ),
            None,
        )
        return -amount

    async def adjust(group_id, amount):
        await api.CreateAdjustment(
            pb.CreateAdjustmentRequest(
                account_id=account_id,
                balance_group_id=group_id,
                amount=to_money(amount, "EUR"),
                reason_code="LOAD",
                actor="load",
                request_id=str(uuid.uuid4()),
            ),
            None,
        )
        return amount

    async def transfer(source, target, amount):
        await api.TransferBalance(
            pb.TransferBalanceRequest(
                account_id=account_id,
                from_balance_group_id=source,
                to_balance_group_id=target,
                amount=to_money(amount, "EUR"),
                actor="load",
            ),
            None,
        )

    # The default group's movements come in pairs that cancel (charges then their payment, a debit
    # adjustment then its credit, a transfer out then back): it starts at its limit, goes over it
    # while any worker is between the two halves of a pair and comes back when none is, and ends
    # at its limit. The project group takes the rest, unpaired.
    ops = ["charges"] * 25 + ["adjustments"] * 10 + ["transfers"] * 4 + ["project"] * 10
    rnd.shuffle(ops)
    print("ready", flush=True)
    assert sys.stdin.readline() == "go\\n"
    for op in ops:
        if op == "charges":
            batch, on_default = [], Decimal(0)
            for _ in range(4):
                rated = [
                    usage_pb2.RatedCharge(
                        charge_id=str(uuid.uuid4()),
                        account_id=account_id,
                        balance_group=rnd.choice(["", "", "project"]),
                        amount=to_money(cents(1, 999), "EUR"),
                    )
                    for _ in range(10)
                ]
                for c in rated:
                    amount = Decimal(c.amount.units) + Decimal(c.amount.nanos) / 10**9
                    moved += amount
                    on_default += amount if not c.balance_group else 0
                booked += len(rated)
                charges += len(rated)
                batch.append(Msg(events_pb2.ChargesCreated(charges=rated, currency_code="EUR")))
            await consumer.process(batch)
            if on_default:
                moved += await pay(default_id, on_default)
                booked += 1
        elif op == "adjustments":
            amount = cents(1, 30000)
            moved += await adjust(default_id, amount)
            moved += await adjust(default_id, -amount)
            booked += 2
        elif op == "transfers":
            amount = cents(1, 30000)
            await transfer(project_id, default_id, amount)
            await transfer(default_id, project_id, amount)
            booked += 4
        elif rnd.random() < 0.5:
            moved += await pay(project_id, cents(1, 20000))
            booked += 1
        else:
            moved += await adjust(project_id, cents(1, 20000) * rnd.choice([1, -1]))
            booked += 1
    await engine.dispose()
    print(json.dumps({"moved": str(moved), "booked": booked, "charges": charges}), flush=True)


asyncio.run(main(*sys.argv[1:]))
"""


@pytest.fixture
async def engine(migrated_database: Any) -> AsyncIterator[tuple[str, AsyncEngine]]:
    url = await migrated_database("balance_load", Path(MIGRATIONS))
    engine = create_engine(url, pool_size=4)
    try:
        yield url, engine
    finally:
        await engine.dispose()


async def test_concurrent_charges_payments_and_adjustments_from_several_processes_add_up_to_the_cent(
    engine: tuple[str, AsyncEngine],
) -> None:
    url, db = engine
    sessions = session_factory(db)

    def uow() -> BalanceUnitOfWork:
        return BalanceUnitOfWork(sessions, outbox, FixedClock(NOW), events.encode, request_log)

    api = BalanceServicer(uow)
    account_id = uuid.uuid4()
    created = customer_events.AccountCreated(
        account=account_pb2.Account(account_id=str(account_id), currency_code="EUR", time_zone="Europe/Madrid")
    )
    await process(
        consumer_for(subscriptions(), "EVOLUTIVO_CUSTOMER", uow, inbox),
        message("evolutivo.customer.v1.account.created", created, NOW),
    )
    project = await api.CreateBalanceGroup(
        pb.CreateBalanceGroupRequest(account_id=str(account_id), name="project"), NO_CONTEXT
    )
    default, _ = (await api.GetBalance(pb.GetBalanceRequest(account_id=str(account_id)), NO_CONTEXT)).balance_groups
    await api.SetCreditLimit(
        pb.SetCreditLimitRequest(
            balance_group_id=default.balance_group_id,
            credit_policy=balance_pb2.CreditPolicy(
                credit_limit=to_money(LIMIT, "EUR"),
                thresholds=[
                    balance_pb2.CreditThreshold(percent="110"),
                    balance_pb2.CreditThreshold(amount=to_money(Decimal("450.00"), "EUR")),
                ],
            ),
        ),
        NO_CONTEXT,
    )
    # The default group starts at its limit (within it); the workers' pairs take it over and back.
    opening = LIMIT
    await api.CreateAdjustment(
        pb.CreateAdjustmentRequest(
            account_id=str(account_id), amount=to_money(opening, "EUR"), reason_code="OPENING", actor="test"
        ),
        NO_CONTEXT,
    )

    workers = [
        await asyncio.create_subprocess_exec(
            sys.executable,
            "-c",
            WORKER,
            url,
            str(account_id),
            default.balance_group_id,
            project.balance_group.balance_group_id,
            str(seed),
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        for seed in range(WORKERS)
    ]
    try:
        for worker in workers:
            assert worker.stdout is not None and worker.stderr is not None
            line = await asyncio.wait_for(worker.stdout.readline(), timeout=60)
            assert line == b"ready\n", (await worker.stderr.read()).decode()
        for worker in workers:
            assert worker.stdin is not None
            worker.stdin.write(b"go\n")
            await worker.stdin.drain()
        outputs = await asyncio.wait_for(asyncio.gather(*(w.communicate() for w in workers)), timeout=120)
    finally:
        for worker in workers:
            if worker.returncode is None:
                worker.kill()
                await worker.wait()
    reports = []
    for worker, (out, err) in zip(workers, outputs, strict=True):
        assert worker.returncode == 0, err.decode()[-3000:]
        reports.append(json.loads(out.decode().strip().splitlines()[-1]))
    assert sum(r["charges"] for r in reports) >= 4000, "thousands of charges"

    expected = opening + sum((Decimal(r["moved"]) for r in reports), Decimal(0))
    answered = await api.GetBalance(pb.GetBalanceRequest(account_id=str(account_id)), NO_CONTEXT)
    assert from_money(answered.total) == expected, "the balance to the cent"
    async with db.connect() as conn:
        booked = await conn.scalar(select(func.count()).select_from(ledger_entries))
        in_ledger = await conn.scalar(select(func.sum(ledger_entries.c.amount)))
        wrong = (
            await conn.execute(
                text(
                    "SELECT g.balance_group_id FROM balance_groups g "
                    "LEFT JOIN ledger_entries e USING (balance_group_id) GROUP BY g.balance_group_id, g.balance "
                    "HAVING g.balance <> COALESCE(SUM(e.amount), 0)"
                )
            )
        ).all()
        state = (
            await conn.execute(
                select(balance_groups.c.balance, balance_groups.c.credit_limit_exceeded).where(
                    balance_groups.c.balance_group_id == uuid.UUID(default.balance_group_id)
                )
            )
        ).one()
        published = (
            await conn.execute(
                select(outbox.c.subject, outbox.c.payload)
                .where(
                    outbox.c.subject.in_(
                        [events.CREDIT_LIMIT_EXCEEDED, events.CREDIT_LIMIT_RESTORED, events.CREDIT_THRESHOLD_CROSSED]
                    )
                )
                .order_by(outbox.c.seq)
            )
        ).all()
    assert booked == sum(r["booked"] for r in reports) + 1
    assert in_ledger == expected and not wrong, "every balance is the sum of its entries"

    # Credit: one version per limit crossing, alternating, in commit order; the same for thresholds.
    limits = [
        (row.subject == events.CREDIT_LIMIT_EXCEEDED, events_pb2.CreditLimitExceeded.FromString(row.payload))
        for row in published
        if row.subject != events.CREDIT_THRESHOLD_CROSSED
    ]
    assert len(limits) >= 2, "the load crossed the limit"
    assert [v.credit_state_version for _, v in limits] == list(range(1, len(limits) + 1))
    assert [exceeded for exceeded, _ in limits] == [n % 2 == 0 for n in range(len(limits))]
    for exceeded, event in limits:
        assert (from_money(event.balance_group.balance) > LIMIT) == exceeded
    assert state.balance == LIMIT and not state.credit_limit_exceeded, "every pair done: back at the limit"
    assert len(limits) % 2 == 0, "ends restored"
    crossed = [
        events_pb2.CreditThresholdCrossed.FromString(r.payload)
        for r in published
        if r.subject == events.CREDIT_THRESHOLD_CROSSED
    ]
    assert [c.threshold_state_version for c in crossed] == list(range(1, len(crossed) + 1))
    assert crossed, "the load crossed the thresholds"
    for level in ("330.00", "450.00"):
        ways = [c.direction for c in crossed if from_money(c.threshold_amount) == Decimal(level)]
        up, down = events_pb2.CREDIT_THRESHOLD_DIRECTION_UP, events_pb2.CREDIT_THRESHOLD_DIRECTION_DOWN
        assert ways == [up if n % 2 == 0 else down for n in range(len(ways))], level
        assert len(ways) % 2 == 0, "ends below it"
