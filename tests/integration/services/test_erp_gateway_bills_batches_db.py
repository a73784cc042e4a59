"""The ERP gateway's batch handler for billing's BillIssued (`on_bills_issued`), against real,
migrated databases: a fetched batch of ~40 bills (several offers and tax, some without an issue
time, one without lines; bills sent again under another event id at a later, the same or an
earlier version; messages delivered twice; bills the gateway had before the batch at an older,
the same or a newer version, one of them sent already) leaves exactly what the same messages
applied one by one by the reference (`receive` and `postings.add`, the generic path every other
record takes) leave: the sync states with their payload and version, the jobs of the connections
that take invoices (state, attempts, version, in queue order) and none for the file export, the
journal's postings in order (the bills known before the batch arrive one message at a time, by the
service's handler in one database and the reference in the other, so a lone BillIssued is
compared too). Every message of a good batch is acked and the batch path is taken; a
bill whose id is no UUID makes the batch handler raise, the consumer applies the messages one by
one and that one alone is retried.

What this suite shares with the other batch suites is in support/batches.py."""

from __future__ import annotations

import random
import uuid
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any, ClassVar

import pytest
from evolutivo.billing.v1 import bill_pb2
from evolutivo.billing.v1 import events_pb2 as billing_events
from evolutivo_erp_gateway.adapters import events
from evolutivo_erp_gateway.adapters.crypto import SecretCipher, generate_key
from evolutivo_erp_gateway.adapters.factory import Adapters
from evolutivo_erp_gateway.adapters.orm import gl_postings, inbox, outbox, sync_jobs, sync_states
from evolutivo_erp_gateway.domain import journal as gl
from evolutivo_erp_gateway.domain.connections import Connection, ConnectionType
from evolutivo_erp_gateway.domain.model import EntityType
from evolutivo_erp_gateway.entrypoints import consumers as gateway_consumers
from evolutivo_erp_gateway.entrypoints.app import MIGRATIONS
from evolutivo_erp_gateway.service_layer import handlers
from evolutivo_erp_gateway.service_layer.unit_of_work import ErpGatewayUnitOfWork
from evolutivo_runtime.messaging.envelope import EventMeta
from evolutivo_runtime.money import from_money, to_money
from evolutivo_runtime.timestamps import to_timestamp
from sqlalchemy import select, update
from support.batches import ConsumingDb, Labels, acked, normalized, two_databases
from support.databases import MigratedDatabase
from support.erp import a_connection
from support.jetstream import FakeMsg, message, process

NOW = datetime(2031, 6, 3, 9, 30, tzinfo=UTC)
OFFERS = ("voice", "data", "sms", "")


async def reference_bill_issued(uow: ErpGatewayUnitOfWork, event: billing_events.BillIssued, meta: EventMeta) -> None:
    """A bill received as every other record is (`receive`, then its postings): the reference."""
    bill = event.bill
    issued = bill.issue_time.ToDatetime(tzinfo=UTC) if bill.HasField("issue_time") else uow.clock.now()
    await handlers.receive(
        uow, EntityType.INVOICE, uuid.UUID(bill.bill_id), uuid.UUID(bill.account_id), bill.SerializeToString(), issued
    )
    lines = [(line.charge_offer_code, from_money(line.amount)) for line in bill.lines]
    postings = gl.bill_postings(lines, from_money(bill.tax_total), from_money(bill.total))
    await uow.postings.add("bill", bill.bill_id, bill.currency_code, issued, postings)


class GatewayDb(ConsumingDb[ErpGatewayUnitOfWork]):
    consumers_module: ClassVar[Any] = gateway_consumers
    stream = "billing"
    inbox_table = inbox
    per_message_handlers = ("on_bill_issued",)

    def uow(self) -> ErpGatewayUnitOfWork:
        return ErpGatewayUnitOfWork(self.sessions, outbox, self.clock, events.encode)

    async def one_by_one(self, msgs: Sequence[FakeMsg]) -> None:
        """The reference: each message by `reference_bill_issued`, in its savepoint, in order."""
        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(gateway_consumers, "on_bill_issued", reference_bill_issued)
            consumer = self.consumer(batches=False)
        await process(consumer, *msgs)
        assert acked(msgs)

    async def connect(self, connections: Sequence[Connection]) -> None:
        adapters = Adapters(SecretCipher([generate_key()]), 10.0, self.clock.now)
        for connection in connections:
            secret = "whsec-0123456789" if connection.type is ConnectionType.WEBHOOK else ""
            await handlers.create_connection(self.uow(), adapters, connection, secret, None)

    async def mark_sent(self, bill_id: str) -> None:
        """The bill's jobs succeeded (a newer version must queue them again)."""
        async with self.engine.begin() as conn:
            await conn.execute(
                update(sync_jobs)
                .where(sync_jobs.c.entity_id == uuid.UUID(bill_id))
                .values(state="succeeded", attempts=2, erp_id="INV/1")
            )

    async def state(self, labels: Labels) -> dict[str, Any]:
        s, j, p = sync_states, sync_jobs, gl_postings
        return {
            "states": [
                normalized(dict(row._mapping), labels)
                for row in await self.rows(select(s).order_by(s.c.entity_type, s.c.entity_id))
            ],
            "jobs": [
                normalized({k: v for k, v in row._mapping.items() if k not in ("job_id", "sequence")}, labels)
                for row in await self.rows(select(j).order_by(j.c.sequence))
            ],
            "postings": [
                {k: v for k, v in row._mapping.items() if k != "posting_id"}
                for row in await self.rows(select(p).order_by(p.c.posting_id))
            ],
        }


@pytest.fixture
async def dbs(migrated_database: MigratedDatabase) -> AsyncIterator[tuple[GatewayDb, GatewayDb]]:
    async with two_databases(GatewayDb, migrated_database, "gateway_bills", MIGRATIONS, NOW) as pair:
        yield pair


def connection(kind: ConnectionType, name: str) -> Connection:
    return a_connection(kind, name, "https://erp.example.com/hook" if kind is ConnectionType.WEBHOOK else "", NOW)


@dataclass(frozen=True)
class Sent:
    event_id: uuid.UUID
    bill: bill_pb2.Bill


def bill(rng: random.Random, bill_id: str, account_id: str, issued: datetime | None, lines: int) -> bill_pb2.Bill:
    made = bill_pb2.Bill(
        bill_id=bill_id,
        account_id=account_id,
        bill_number=f"F-2031-{rng.randint(1, 999_999):06d}",
        currency_code="EUR",
        status=bill_pb2.BILL_STATUS_ISSUED,
        issue_time=to_timestamp(issued) if issued else None,
    )
    subtotal = Decimal(0)
    for offer in rng.sample(OFFERS, lines):
        amount = Decimal(rng.randint(-500, 9_000)) / 100
        subtotal += amount
        made.lines.append(bill_pb2.BillLine(charge_offer_code=offer, amount=to_money(amount, "EUR")))
    tax = (subtotal * Decimal("0.21")).quantize(Decimal("0.01")) if rng.random() < 0.8 else Decimal(0)
    made.subtotal.CopyFrom(to_money(subtotal, "EUR"))
    made.tax_total.CopyFrom(to_money(tax, "EUR"))
    made.total.CopyFrom(to_money(subtotal + tax, "EUR"))
    return made


@dataclass
class World:
    before: list[Sent]
    batch: list[Sent]
    sent_already: list[str]


def world(seed: int, bills: int = 36) -> World:
    """`bills` (at least 31) new bills (one in eight without an issue time, one without lines) for 12 accounts;
    before the batch, four bills the batch sends again: two at an older version (one of them sent
    already), one at the same, one at a newer; in the batch, bills sent again under another event
    id (later, same and earlier versions, another payload) and messages delivered twice."""
    rng = random.Random(seed)
    accounts = [str(uuid.UUID(int=rng.getrandbits(128))) for _ in range(12)]

    def at(minutes: int) -> datetime:
        return NOW - timedelta(minutes=minutes)

    def new_id() -> str:
        return str(uuid.UUID(int=rng.getrandbits(128)))

    def sent(made: bill_pb2.Bill) -> Sent:
        return Sent(uuid.UUID(int=rng.getrandbits(128)), made)

    batch = [
        sent(bill(rng, new_id(), rng.choice(accounts), None if i % 8 == 1 else at(rng.randint(1, 900)), lines))
        for i, lines in enumerate(0 if i == 0 else rng.randint(1, len(OFFERS)) for i in range(bills))
    ]
    known = [batch[i].bill for i in (3, 7, 11, 15)]
    before = [
        sent(bill(rng, known[0].bill_id, known[0].account_id, at(2000), 2)),
        sent(bill(rng, known[1].bill_id, known[1].account_id, at(2000), 1)),
        sent(bill(rng, known[2].bill_id, known[2].account_id, known[2].issue_time.ToDatetime(tzinfo=UTC), 3)),
        sent(bill(rng, known[3].bill_id, known[3].account_id, at(0) + timedelta(days=1), 2)),
    ]
    for i in (5, 9, 20):  # again, later
        again = batch[i].bill
        batch.append(sent(bill(rng, again.bill_id, again.account_id, at(-30), 2)))
    for i in (6, 21):  # again, the same version, another payload: the first stays
        again = batch[i].bill
        issued = again.issue_time.ToDatetime(tzinfo=UTC) if again.HasField("issue_time") else None
        batch.append(sent(bill(rng, again.bill_id, again.account_id, issued, 2)))
    again = batch[8].bill  # again, earlier: nothing changes
    batch.append(sent(bill(rng, again.bill_id, again.account_id, at(5000), 1)))
    batch += [batch[2], batch[30]]  # delivered twice
    rng.shuffle(batch)
    return World(before, batch, [known[0].bill_id])


def messages(sent: Sequence[Sent]) -> list[FakeMsg]:
    """Each database gets messages of its own (their ack state is theirs)."""
    return [
        message(gateway_consumers.BILL_ISSUED, billing_events.BillIssued(bill=s.bill), NOW, s.event_id) for s in sent
    ]


async def set_up(db: GatewayDb, scenario: World, connections: Sequence[Connection], reference: bool = False) -> None:
    """The connections, then the bills known before the batch, each alone (a lone BillIssued goes
    to the service's own handler, `bills_issued` of one bill; with `reference`, to the reference)."""
    await db.connect(connections)
    for msg in messages(scenario.before):
        if reference:
            await db.one_by_one([msg])
        else:
            await process(db.consumer(), msg)
    for bill_id in scenario.sent_already:
        await db.mark_sent(bill_id)


@pytest.mark.parametrize("seed", [1, 2])
async def test_a_batch_of_bills_leaves_what_they_leave_one_by_one(dbs: tuple[GatewayDb, GatewayDb], seed: int) -> None:
    one, batch = dbs
    scenario = world(seed)
    connections = [
        connection(ConnectionType.WEBHOOK, "warehouse"),
        connection(ConnectionType.WEBHOOK, "audit"),
        connection(ConnectionType.GL_FILE_EXPORT, "ledger file"),
    ]
    for db in dbs:
        await set_up(db, scenario, connections, reference=db is one)
    await one.one_by_one(messages(scenario.batch))
    await batch.apply_batch(messages(scenario.batch))

    labels: Labels = {}
    reference, batched = await one.state(labels), await batch.state(labels)
    assert batched == reference
    # The scenario's cases happened (else the comparison proves little): every distinct bill has
    # a state and a job on each webhook, none on the file export; a bill sent already and received
    # at a newer version is queued again; every bill is journalled but the one without lines.
    bills = {s.bill.bill_id for s in scenario.before + scenario.batch}
    assert {str(s["entity_id"]) for s in reference["states"]} == bills
    assert len(reference["jobs"]) == 2 * len(bills)
    assert {j["connection_id"] for j in reference["jobs"]} == {c.connection_id for c in connections[:2]}
    resent = [j for j in reference["jobs"] if str(j["entity_id"]) == scenario.sent_already[0]]
    assert [(j["state"], j["attempts"]) for j in resent] == [("pending", 0)] * 2
    lineless = next(s.bill for s in scenario.batch if not s.bill.lines)  # it totals zero: nothing to post
    assert {p["source_id"] for p in reference["postings"]} == bills - {lineless.bill_id}


async def test_a_broken_bill_makes_the_batch_fall_back_and_is_retried_alone(
    dbs: tuple[GatewayDb, GatewayDb],
) -> None:
    _, db = dbs
    scenario = world(3)
    await set_up(db, scenario, [connection(ConnectionType.WEBHOOK, "warehouse")])
    broken = bill(random.Random(4), "not-a-uuid", str(uuid.uuid4()), NOW, 2)
    msgs = messages(scenario.batch)
    poisoned = message(gateway_consumers.BILL_ISSUED, billing_events.BillIssued(bill=broken), NOW, uuid.uuid4())
    await db.apply_poisoned_batch([*msgs[:4], poisoned, *msgs[4:]], poisoned)
    stored = {str(row.entity_id) for row in await db.rows(select(sync_states.c.entity_id))}
    assert stored == {s.bill.bill_id for s in scenario.before + scenario.batch}
