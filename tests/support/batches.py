"""What the suites comparing a consumer's batch handlers with its per-message handlers share
(tests/integration/services/test_*_batches_db.py): two databases of one service, one driven
message by message, one a batch at a time, whose states are compared once the ids each drew at
random are replaced by what they identify; the consumer with its batch handlers taken away (the
reference) or with its per-message handlers replaced by failing ones (a batch that fell back to
them would fail); the consumer's fallback counter; and balance's database as the suites of its
batch handlers (ChargesCreated, BillIssued and CreditNoteIssued) set it up and read it."""

from __future__ import annotations

import dataclasses
import random
import uuid
from collections.abc import AsyncIterator, Iterable, Sequence
from contextlib import asynccontextmanager
from datetime import datetime
from decimal import Decimal
from pathlib import Path
from types import ModuleType
from typing import Any, ClassVar, Generic, TypeVar

import pytest
from evolutivo.balance.v1 import balance_pb2
from evolutivo.balance.v1 import balance_service_pb2 as balance_pb
from evolutivo.customer.v1 import account_pb2
from evolutivo_balance.adapters import events as balance_event_codes
from evolutivo_balance.adapters import orm as balance_orm
from evolutivo_balance.entrypoints import consumers as balance_consumers
from evolutivo_balance.entrypoints.grpc_api import BalanceServicer
from evolutivo_balance.service_layer.unit_of_work import BalanceUnitOfWork
from evolutivo_runtime.messaging.consumer import EventConsumer, Subscription
from evolutivo_runtime.messaging.streams import stream_name
from evolutivo_runtime.money import to_money
from evolutivo_runtime.uow import UnitOfWork
from google.protobuf import descriptor_pool, json_format, message_factory
from prometheus_client import REGISTRY
from sqlalchemy import Table, func, select

from support.customer_messages import created_message
from support.databases import MigratedDatabase, ServiceDb
from support.jetstream import FakeMsg, consumer_for, process

U = TypeVar("U", bound=UnitOfWork)
D = TypeVar("D", bound=ServiceDb)

NO_CONTEXT: Any = None
# Minor units of the scenarios' currencies: billing and balance refuse an amount finer than its
# currency's.
EXPONENTS = {"EUR": 2, "USD": 2, "JPY": 0, "BHD": 3}

# Random ids (str(uuid)) -> what they identify, e.g. "group 'default' of <account id>".
Labels = dict[str, str]


def random_amount(rng: random.Random, currency: str, low: int, high: int) -> Decimal:
    """A random amount between low and high (major units), to the currency's minor unit, exact."""
    exponent = EXPONENTS[currency]
    return Decimal(rng.randint(low * 10**exponent, high * 10**exponent)).scaleb(-exponent)


# Comparing two databases' states.


@asynccontextmanager
async def two_databases(
    cls: type[D],
    migrated_database: MigratedDatabase,
    prefix: str,
    migrations: Path,
    now: datetime,
    pool_size: int = 5,
) -> AsyncIterator[tuple[D, D]]:
    """Two databases of one service migrated to head, their clocks at `now`: `{prefix}_one` for
    message by message, `{prefix}_batch` for batches."""
    async with (
        cls.open(await migrated_database(f"{prefix}_one", migrations), now, pool_size) as one,
        cls.open(await migrated_database(f"{prefix}_batch", migrations), now, pool_size) as batch,
    ):
        yield one, batch


def normalized(value: Any, labels: Labels) -> Any:
    """`value` with every id the two databases drew at random replaced by what it identifies."""
    if isinstance(value, uuid.UUID):
        return labels.get(str(value), value)
    if isinstance(value, str):
        return labels.get(value, value)
    if isinstance(value, dict):
        return {k: normalized(v, labels) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [normalized(v, labels) for v in value]
    return value


def decoded(event_type: str, payload: bytes) -> dict[str, Any]:
    """An outbox row's payload as a dict (proto field names)."""
    cls = message_factory.GetMessageClass(descriptor_pool.Default().FindMessageTypeByName(event_type))
    return json_format.MessageToDict(cls.FromString(payload), preserving_proto_field_name=True)


async def published_since(db: ServiceDb, outbox: Any, after: int, labels: Labels) -> list[Any]:
    """The events put in the outbox after seq `after`, in order, decoded, without their ids."""
    rows = await db.rows(select(outbox).where(outbox.c.seq > after).order_by(outbox.c.seq))
    return [(row.subject, row.event_type, normalized(decoded(row.event_type, row.payload), labels)) for row in rows]


async def last_outbox_seq(db: ServiceDb, outbox: Any) -> int:
    return int(await db.scalar(select(func.coalesce(func.max(outbox.c.seq), 0))))


def published_by_group(published: Sequence[Any]) -> dict[str, list[Any]]:
    """Each balance group's events in the order published. Across groups the outbox's order is not
    one to compare: the balances move (and the crossings are recorded) in balance_group_id order,
    and the two databases drew different ids."""
    found: dict[str, list[Any]] = {}
    for subject, event_type, payload in published:
        found.setdefault(payload["balance_group"]["balance_group_id"], []).append((subject, event_type, payload))
    return found


# The consumer, its batch handlers and its per-message ones.


def without_batch_handlers(subscriptions: Iterable[Subscription[U]]) -> list[Subscription[U]]:
    """The subscriptions with their batch handlers taken away: each event by its own handler."""
    return [dataclasses.replace(s, batch_handlers={}) for s in subscriptions]


async def no_per_message_handler(*_: Any, **__: Any) -> None:
    raise AssertionError("the batch handler fell back to the per-message handler")


def batch_fallbacks(consumer: str) -> float:
    """How many batches the consumer `consumer` (its durable) applied one by one so far."""
    return REGISTRY.get_sample_value("evolutivo_consumer_batch_fallbacks_total", {"consumer": consumer}) or 0.0


def acked(msgs: Sequence[FakeMsg], but: Sequence[FakeMsg] = ()) -> bool:
    """Every message acked and none naked, but those in `but`."""
    return all(m.acked and not m.naked for m in msgs if all(m is not b for b in but))


async def in_turn(consumer: EventConsumer[Any], msgs: Sequence[FakeMsg]) -> None:
    """Each message in a fetch of its own, as one-by-one delivery applies them; all must apply."""
    for msg in msgs:
        await process(consumer, msg)
    assert acked(msgs)


class ConsumingDb(ServiceDb, Generic[U]):
    """A service's database with its consumer of one stream. Each suite's subclass says which
    (its service's consumers module, the stream, the inbox) and which per-message handlers the
    batch handler under test stands for, and gives `uow()`."""

    consumers_module: ClassVar[ModuleType]
    stream: ClassVar[str]
    inbox_table: ClassVar[Table]
    per_message_handlers: ClassVar[tuple[str, ...]]

    def uow(self) -> U:
        raise NotImplementedError

    def consumer(self, batches: bool = True) -> EventConsumer[U]:
        """The service's consumer of the stream; without `batches`, with its batch handlers taken
        away (each event by its own handler: the reference)."""
        subscriptions: list[Subscription[U]] = self.consumers_module.subscriptions()
        if not batches:
            subscriptions = without_batch_handlers(subscriptions)
        return consumer_for(subscriptions, stream_name(self.stream), self.uow, self.inbox_table)

    def batch_only(self) -> EventConsumer[U]:
        """The consumer with the per-message handlers replaced by failing ones: a batch that fell
        back to them would fail."""
        with pytest.MonkeyPatch.context() as patch:
            for name in self.per_message_handlers:
                patch.setattr(self.consumers_module, name, no_per_message_handler)
            return self.consumer()

    async def apply_batch(self, msgs: Sequence[FakeMsg]) -> None:
        """`msgs` as one fetched batch, by the batch handler alone (`batch_only`): every message is
        acked and the consumer did not fall back to one by one."""
        consumer = self.batch_only()
        fallbacks = batch_fallbacks(consumer.subscription.durable)
        await process(consumer, *msgs)
        assert acked(msgs), "every message of the batch acked (the redelivered ones skipped by the inbox)"
        assert batch_fallbacks(consumer.subscription.durable) == fallbacks, "the batch handler applied the batch"

    async def apply_poisoned_batch(self, msgs: Sequence[FakeMsg], poisoned: FakeMsg) -> None:
        """`msgs` as one fetched batch, `poisoned` among them: the batch handler raises, the
        consumer applies the messages one by one, the poison one alone is retried."""
        consumer = self.consumer()
        fallbacks = batch_fallbacks(consumer.subscription.durable)
        await process(consumer, *msgs)
        assert batch_fallbacks(consumer.subscription.durable) == fallbacks + 1, "the batch handler raised: one by one"
        assert poisoned.naked and not poisoned.acked, "the poison message is retried, alone"
        assert acked(msgs, but=[poisoned]), "the others applied and acked"


# Balance.


def credit_threshold(level: str, currency: str) -> balance_pb2.CreditThreshold:
    """A threshold of a credit policy: "80%" a percent of the limit, else an amount."""
    if level.endswith("%"):
        return balance_pb2.CreditThreshold(percent=level.removesuffix("%"))
    return balance_pb2.CreditThreshold(amount=to_money(Decimal(level), currency))


class BalanceBatchesDb(ConsumingDb[BalanceUnitOfWork]):
    """Balance's database as the suites of its batch handlers set it up (accounts, groups, credit
    limits) and read it (the ledger, the groups, each group's events); each suite's subclass says
    which stream and per-message handlers."""

    consumers_module: ClassVar[ModuleType] = balance_consumers
    inbox_table = balance_orm.inbox

    def uow(self) -> BalanceUnitOfWork:
        return BalanceUnitOfWork(
            self.sessions, balance_orm.outbox, self.clock, balance_event_codes.encode, balance_orm.request_log
        )

    @property
    def api(self) -> BalanceServicer:
        return BalanceServicer(self.uow)

    async def one_by_one(self, msgs: Sequence[FakeMsg]) -> None:
        """The reference: the fetched batch with each message applied by its own handler, in its
        savepoint, in the batch's order (what the consumer falls back to). In one transaction, as
        the batch: balance assesses credit crossings per transaction, at commit (a transaction that
        goes over a limit and back publishes nothing: docs/balance.md), so messages in transactions
        of their own could publish crossings no single batch does."""
        await process(self.consumer(batches=False), *msgs)

    # Set-up.

    async def create_account(self, account_id: uuid.UUID, currency: str) -> None:
        """An active account in `currency`, made known by AccountCreated through the consumer of
        customer's stream (which opens its default group)."""
        customer = consumer_for(balance_consumers.subscriptions(), stream_name("customer"), self.uow, balance_orm.inbox)
        account = account_pb2.Account(
            account_id=str(account_id),
            currency_code=currency,
            time_zone="Europe/Madrid",
            status=account_pb2.ACCOUNT_STATUS_ACTIVE,
        )
        created = created_message(account, self.clock.now(), uuid.uuid5(account_id, "created"))
        await process(customer, created)
        assert created.acked

    async def create_group(self, account_id: uuid.UUID, name: str) -> None:
        await self.api.CreateBalanceGroup(
            balance_pb.CreateBalanceGroupRequest(account_id=str(account_id), name=name), NO_CONTEXT
        )

    async def set_credit_limit(
        self, balance_group_id: str, limit: Decimal, currency: str, thresholds: Iterable[str]
    ) -> None:
        await self.api.SetCreditLimit(
            balance_pb.SetCreditLimitRequest(
                balance_group_id=balance_group_id,
                credit_policy=balance_pb2.CreditPolicy(
                    credit_limit=to_money(limit, currency),
                    thresholds=[credit_threshold(t, currency) for t in thresholds],
                ),
            ),
            NO_CONTEXT,
        )

    async def group_id(self, account_id: uuid.UUID, name: str) -> str:
        """The account's open group called `name`."""
        t = balance_orm.balance_groups
        found = await self.scalar(
            select(t.c.balance_group_id).where(t.c.account_id == account_id, t.c.name == name, t.c.close_time.is_(None))
        )
        return str(found)

    async def default_group(self, account_id: uuid.UUID) -> str:
        t = balance_orm.balance_groups
        return str(await self.scalar(select(t.c.balance_group_id).where(t.c.account_id == account_id, t.c.is_default)))

    # What the batch changes.

    async def labels(self) -> Labels:
        t = balance_orm.balance_groups
        rows = await self.rows(select(t.c.balance_group_id, t.c.account_id, t.c.name, t.c.close_time))
        return {
            str(row.balance_group_id): f"group {row.name!r} of {row.account_id}"
            + (" (closed)" if row.close_time is not None else "")
            for row in rows
        }

    async def state(self, outbox_after: int) -> dict[str, Any]:
        """Everything balance's batch handlers change, with the ids balance draws at random (groups,
        entries) replaced by what they identify: the ledger entries (amount, group, type, source,
        reason, effective and booking times, actor...), the groups (balance, credit state), each
        group's events published since `outbox_after`."""
        labels = await self.labels()
        entries = balance_orm.ledger_entries
        groups = balance_orm.balance_groups
        return {
            "entries": [
                normalized({k: v for k, v in row._mapping.items() if k not in ("entry_id", "seq")}, labels)
                for row in await self.rows(
                    select(entries).order_by(entries.c.type, entries.c.source_type, entries.c.source_id)
                )
            ],
            "groups": sorted(
                (normalized(dict(row._mapping), labels) for row in await self.rows(select(groups))),
                key=lambda g: str(g["balance_group_id"]),
            ),
            "published": published_by_group(await published_since(self, balance_orm.outbox, outbox_after, labels)),
        }

    async def check_invariant(self) -> None:
        """Every group's balance is the sum of its entries (a charge or a document twice in one
        insert moves it once)."""
        g, e = balance_orm.balance_groups, balance_orm.ledger_entries
        sums = (
            select(g.c.balance_group_id, g.c.balance, func.coalesce(func.sum(e.c.amount), 0).label("entries"))
            .select_from(g.outerjoin(e, e.c.balance_group_id == g.c.balance_group_id))
            .group_by(g.c.balance_group_id, g.c.balance)
        )
        wrong = [tuple(row) for row in await self.rows(sums) if row.balance != row.entries]
        assert not wrong, f"balances that are not the sum of their entries: {wrong}"
