"""Balance's batch handler for billing's BillIssued and CreditNoteIssued (`on_billing_documents_batch`,
one `BatchHandler` for both types), against real, migrated databases: a fetched batch of bills and
credit notes for ~20 accounts in four currencies (JPY without decimals, BHD with three), most known
to balance and some not (their first document opens their default group in its currency), with
bills without tax, bills and credit notes repeated under another event id, redelivered messages and
credit limits crossed both ways, leaves exactly what its messages applied one by one by their own
handlers (the consumer's fallback, in one transaction) leave: the ledger entries with their group,
amount, type, source, reason and effective time, the groups' balances and credit state, each group's
events in the outbox. Every message of a good batch is acked and the batch path is the one taken; a
poison message (another currency than the account's, an amount finer than the minor unit, a bill id
that is no UUID) makes the batch handler raise, the consumer applies the messages one by one and the
poison one alone is retried.

What this suite shares with test_charges_created_batches_db.py (balance's database, comparing two
databases' states, the consumer with and without its batch handlers) is in support/batches.py."""

from __future__ import annotations

import dataclasses
import logging
import random
import uuid
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from evolutivo.billing.v1 import bill_pb2, credit_note_pb2
from evolutivo.billing.v1 import events_pb2 as billing_events
from evolutivo_balance.adapters import events as balance_event_codes
from evolutivo_balance.adapters import orm as balance_orm
from evolutivo_balance.entrypoints import consumers as balance_consumers
from evolutivo_balance.entrypoints.app import MIGRATIONS as BALANCE_MIGRATIONS
from evolutivo_runtime.errors import FailedPrecondition
from evolutivo_runtime.money import to_money
from evolutivo_runtime.timestamps import to_timestamp
from support.batches import (
    EXPONENTS,
    BalanceBatchesDb,
    acked,
    in_turn,
    last_outbox_seq,
    random_amount,
    two_databases,
)
from support.databases import MigratedDatabase
from support.jetstream import FakeMsg, message, process

# The set-up's documents are booked at SETUP, the batch at NOW.
NOW = datetime(2031, 6, 3, 9, 30, tzinfo=UTC)
SETUP = NOW - timedelta(hours=1)


# The scenario.


@dataclass(frozen=True)
class Account:
    account_id: uuid.UUID
    currency: str
    # Known to balance (AccountCreated applied) before the batch; else its first document with an
    # amount opens its default group.
    known: bool
    # Open named groups besides the default one (billing's documents never go there).
    groups: tuple[str, ...] = ()
    # The default group's credit limit and thresholds (SetCreditLimit), none without a limit.
    limit: Decimal | None = None
    thresholds: tuple[str, ...] = ()


@dataclass(frozen=True)
class Document:
    """A bill (BillIssued: balance books its tax) or a credit note (CreditNoteIssued: balance
    credits its total), as billing issued it. `currency` is the one the document says it is in
    (its account's but for a broken one); `document_id` a UUID but for a broken one."""

    kind: str  # "bill" or "note"
    document_id: uuid.UUID | str
    account: Account
    # The bill's tax_total or the credit note's total (positive: the note is credited).
    amount: Decimal
    currency: str
    issue_time: datetime | None
    number: str


@dataclass(frozen=True)
class Sent:
    """A message as billing's outbox relay published it (two Sent with one event id are deliveries
    of one message)."""

    event_id: uuid.UUID
    document: Document


def _pb(doc: Document) -> tuple[str, billing_events.BillIssued | billing_events.CreditNoteIssued]:
    issue_time = to_timestamp(doc.issue_time) if doc.issue_time else None
    if doc.kind == "bill":
        bill = bill_pb2.Bill(
            bill_id=str(doc.document_id),
            account_id=str(doc.account.account_id),
            bill_number=doc.number,
            currency_code=doc.currency,
            status=bill_pb2.BILL_STATUS_ISSUED,
            subtotal=to_money(doc.amount * 10, doc.currency),
            tax_total=to_money(doc.amount, doc.currency),
            total=to_money(doc.amount * 11, doc.currency),
            issue_time=issue_time,
        )
        return balance_consumers.BILL_ISSUED, billing_events.BillIssued(bill=bill)
    note = credit_note_pb2.CreditNote(
        credit_note_id=str(doc.document_id),
        bill_id=str(uuid.uuid5(doc.account.account_id, "a bill")),
        account_id=str(doc.account.account_id),
        credit_note_number=doc.number,
        currency_code=doc.currency,
        reason="goodwill",
        total=to_money(doc.amount, doc.currency),
        issue_time=issue_time,
    )
    return balance_consumers.CREDIT_NOTE_ISSUED, billing_events.CreditNoteIssued(credit_note=note)


def _messages(sent: Sequence[Sent]) -> list[FakeMsg]:
    """Each database gets messages of its own (their ack state is theirs)."""
    return [message(*_pb(s.document), NOW, s.event_id) for s in sent]


@dataclass
class World:
    accounts: list[Account]
    # Applied before the batch, one message per transaction.
    before_batch: list[Sent] = field(default_factory=list)
    batch: list[Sent] = field(default_factory=list)


def world(seed: int, accounts: int = 20, messages: int = 18) -> World:
    """`accounts` accounts in four currencies, about three in four known to balance (some with
    named groups, half of those with a credit limit and thresholds on their default group), the
    others unknown. Before the batch, bills take some limited groups over their limit and others
    some way towards it. The batch: `messages` random bills (one in six without tax) and credit
    notes, with or without an issue time and number; for each limited account a document that
    crosses its limit (a credit note back under, a bill over); the unknown accounts' documents
    (one's first is a credit note, one has only a bill without tax: no group); bills and credit
    notes sent again under new event ids (one booked before the batch); messages delivered twice
    (one of the set-up's)."""
    rng = random.Random(seed)
    currencies = list(EXPONENTS)
    made: list[Account] = []
    for i in range(accounts):
        currency = currencies[i % len(currencies)]
        known = i < 4 or rng.random() < 0.75  # every currency known
        limit: Decimal | None = None
        levels: tuple[str, ...] = ()
        if known and rng.random() < 0.5:
            limit = random_amount(rng, currency, 30, 90)
            levels = tuple(
                rng.sample([str(random_amount(rng, currency, 10, 25)), "50%", "80%", "100%"], rng.randint(1, 2))
            )
        groups = ("roaming",) if known and rng.random() < 0.4 else ()
        made.append(Account(uuid.UUID(int=rng.getrandbits(128)), currency, known, groups, limit, levels))
    unknown = [a for a in made if not a.known]
    while len(unknown) < 3:  # every seed has a few
        extra = Account(uuid.UUID(int=rng.getrandbits(128)), currencies[len(made) % 4], known=False)
        made.append(extra)
        unknown.append(extra)
    found = World(made)
    untaxed_only = unknown[-1]  # its only document is a bill without tax: balance never hears of it
    numbers = iter(range(1, 10_000))

    def document(account: Account, kind: str, amount: Decimal, issued: datetime | None = None) -> Document:
        when = rng.random()
        issue_time = issued or (NOW - timedelta(minutes=rng.randint(5, 600)) if when < 0.85 else None)
        number = f"{'F' if kind == 'bill' else 'CN'}-2031-{next(numbers):06d}" if rng.random() < 0.9 else ""
        return Document(
            kind, uuid.UUID(int=rng.getrandbits(128)), account, amount, account.currency, issue_time, number
        )

    def sent(doc: Document) -> Sent:
        return Sent(uuid.UUID(int=rng.getrandbits(128)), doc)

    def random_document(account: Account) -> Document:
        if rng.random() < 0.62:
            tax = Decimal(0) if rng.random() < 0.17 else random_amount(rng, account.currency, 1, 30)
            return document(account, "bill", tax)
        return document(account, "note", random_amount(rng, account.currency, 1, 25))

    # Before the batch: limited groups over their limit or part of the way.
    over: dict[uuid.UUID, Decimal] = {}
    for a in made:
        if a.limit is not None:
            tax = (
                a.limit + random_amount(rng, a.currency, 1, 15)
                if rng.random() < 0.5
                else random_amount(rng, a.currency, 1, 9)
            )
            if tax > a.limit:
                over[a.account_id] = tax
            found.before_batch.append(sent(document(a, "bill", tax, SETUP - timedelta(hours=3))))
    for a in rng.sample([a for a in made if a.known and a.limit is None], 3):
        found.before_batch.append(sent(random_document(a)))
    found.before_batch.append(sent(document(made[0], "note", random_amount(rng, made[0].currency, 1, 5))))

    batch = [sent(random_document(rng.choice([a for a in made if a is not untaxed_only]))) for _ in range(messages)]
    for a in made:
        if a.limit is None:
            continue
        if a.account_id in over:  # back under its limit (and thresholds)
            crossing = document(a, "note", over[a.account_id] + random_amount(rng, a.currency, 0, 5))
        else:
            crossing = document(a, "bill", a.limit + random_amount(rng, a.currency, 1, 10))
        batch.insert(rng.randrange(len(batch) + 1), sent(crossing))
    for a in unknown[:-1]:
        batch.insert(rng.randrange(len(batch) + 1), sent(random_document(a)))
        batch.insert(rng.randrange(len(batch) + 1), sent(document(a, "bill", random_amount(rng, a.currency, 1, 30))))
    opening = document(unknown[0], "note", random_amount(rng, unknown[0].currency, 1, 9))
    batch.insert(0, sent(dataclasses.replace(opening, number="")))  # opens its group; no number: no reason
    batch.insert(rng.randrange(len(batch) + 1), sent(document(untaxed_only, "bill", Decimal(0))))

    def later(at: int, item: Sent) -> None:
        batch.insert(rng.randint(at + 1, len(batch)), item)

    # Sent again under new event ids: a bill and a credit note of the batch, a bill booked before it.
    first_bill = next(i for i, s in enumerate(batch) if s.document.kind == "bill" and s.document.amount)
    first_note = next(i for i, s in enumerate(batch) if s.document.kind == "note")
    later(first_bill, sent(batch[first_bill].document))
    later(first_note, sent(batch[first_note].document))
    batch.insert(rng.randrange(len(batch) + 1), sent(found.before_batch[0].document))
    # Delivered twice: two of the batch's messages, one of the set-up's.
    for _ in range(2):
        at = rng.randrange(len(batch))
        later(at, batch[at])
    batch.insert(rng.randrange(len(batch) + 1), rng.choice(found.before_batch))
    found.batch = batch
    return found


def _check_scenario(w: World) -> None:
    """The batch has what a batch handler's bookkeeping could get wrong."""
    before_ids = {s.event_id for s in w.before_batch}
    before_docs = {s.document.document_id for s in w.before_batch}
    ids = [s.event_id for s in w.batch]
    docs = [(s.document.document_id, s.event_id) for s in w.batch if s.event_id not in before_ids]
    assert 30 <= len(w.batch) <= 50
    assert len(set(ids) - before_ids) < len([i for i in ids if i not in before_ids]), "redelivered in the batch"
    assert before_ids & set(ids), "a message of the set-up redelivered"
    assert any(d in before_docs for d, _ in docs), "a document booked before, sent again"
    assert len({d for d, _ in docs}) < len(set(docs)), "a document twice in the batch under two event ids"
    kinds = {(s.document.kind, s.document.amount == 0) for s in w.batch}
    assert {("bill", True), ("bill", False), ("note", False)} <= kinds
    assert {s.document.currency for s in w.batch} == set(EXPONENTS)
    unknown = [s.document.account for s in w.batch if not s.document.account.known]
    assert any(unknown.count(a) > 1 for a in unknown), "an unknown account with several documents"


# Balance.


class BalanceDb(BalanceBatchesDb):
    stream = "billing"
    per_message_handlers = ("on_bill_issued", "on_credit_note_issued")

    async def prepare(self, w: World) -> int:
        """The same set-up in each database: the known accounts (AccountCreated through the
        consumer), their named groups and credit limits, the documents booked before the batch
        (one message per transaction). Returns the outbox's last seq."""
        self.clock.instant = NOW - timedelta(days=1)
        for a in w.accounts:
            if not a.known:
                continue
            await self.create_account(a.account_id, a.currency)
            for name in a.groups:
                await self.create_group(a.account_id, name)
            if a.limit is not None:
                await self.set_credit_limit(await self.default_group(a.account_id), a.limit, a.currency, a.thresholds)
        self.clock.instant = SETUP
        await in_turn(self.consumer(), _messages(w.before_batch))
        self.clock.instant = NOW
        return await last_outbox_seq(self, balance_orm.outbox)


@pytest.fixture
async def balance(migrated_database: MigratedDatabase) -> AsyncIterator[tuple[BalanceDb, BalanceDb]]:
    """Two balance databases: one for message by message, one for batches."""
    async with two_databases(BalanceDb, migrated_database, "balance_documents", BALANCE_MIGRATIONS, NOW) as both:
        yield both


@pytest.mark.parametrize("seed", [51, 52, 53])
async def test_a_batch_of_bills_and_credit_notes_books_what_one_by_one_books(
    balance: tuple[BalanceDb, BalanceDb], seed: int
) -> None:
    one, batch = balance
    w = world(seed)
    _check_scenario(w)
    after = await one.prepare(w)
    assert await batch.prepare(w) == after
    before = await one.state(after)
    assert await batch.state(after) == before, "the same set-up"
    assert any(g["credit_limit_exceeded"] for g in before["groups"]), "groups over their limit before the batch"

    reference = _messages(w.batch)
    await one.one_by_one(reference)
    assert acked(reference)
    msgs = _messages(w.batch)
    await batch.apply_batch(msgs)

    expected = await one.state(after)
    known = {(e["type"], e["source_id"]) for e in before["entries"]}
    made = [e for e in expected["entries"] if (e["type"], e["source_id"]) not in known]
    # What the batch covers: tax and credit notes in every currency, with and without an issue
    # time and a number, default groups opened by them, limits and thresholds crossed both ways.
    assert len(made) > 25
    assert {e["type"] for e in made} == {"tax", "credit_note"}
    assert {e["currency_code"] for e in made} == set(EXPONENTS)
    assert all(str(e["balance_group_id"]).startswith("group 'default'") for e in made), "default groups only"
    assert any(e["effective_time"] == NOW for e in made), "documents without an issue time: effective now"
    assert any(e["effective_time"] < NOW for e in made)
    assert any(e["reason"] == "" for e in made) and any(e["reason"].startswith("credit note CN-") for e in made)
    booked = {e["source_id"] for e in expected["entries"]}
    untaxed = [s.document for s in w.batch if s.document.amount == 0]
    assert untaxed and not any(str(d.document_id) in booked for d in untaxed), "a bill without tax books nothing"
    never_heard = {s.document.account.account_id for s in w.batch if not s.document.account.known} - {
        e["account_id"] for e in made
    }
    assert never_heard, "an unknown account with only a bill without tax"
    assert not [g for g in expected["groups"] if g["account_id"] in never_heard], "gets no group"
    subjects = {subject for events in expected["published"].values() for subject, _, _ in events}
    assert {
        balance_event_codes.BALANCE_GROUP_CREATED,
        balance_event_codes.CREDIT_LIMIT_EXCEEDED,
        balance_event_codes.CREDIT_LIMIT_RESTORED,
        balance_event_codes.CREDIT_THRESHOLD_CROSSED,
    } <= subjects
    directions = {
        payload["direction"]
        for events in expected["published"].values()
        for subject, _, payload in events
        if subject == balance_event_codes.CREDIT_THRESHOLD_CROSSED
    }
    assert directions == {"CREDIT_THRESHOLD_DIRECTION_UP", "CREDIT_THRESHOLD_DIRECTION_DOWN"}

    assert await batch.state(after) == expected
    for db in balance:
        await db.check_invariant()
    assert await batch.count(balance_orm.inbox) == await one.count(balance_orm.inbox)

    # Redelivered, the inbox skips them all.
    again = [m.again() for m in msgs]
    await process(batch.consumer(), *again)
    assert acked(again)
    assert await batch.state(after) == expected


async def test_a_small_batch_books_the_documents_exactly(
    balance: tuple[BalanceDb, BalanceDb],
) -> None:
    """The same comparison on a batch small enough to state what it books: a known EUR account
    over its limit of 50.00 (threshold 80%) before the batch, brought back under by a credit note,
    with a bill without tax and a named group billing never books on; an unknown JPY account whose
    first document is a credit note (its default group opened in JPY) and whose bill comes twice
    under two event ids; an unknown BHD account with a bill without tax only."""
    one, batch = balance
    eur = Account(uuid.uuid4(), "EUR", True, ("roaming",), Decimal("50.00"), ("80%",))
    jpy = Account(uuid.uuid4(), "JPY", False)
    bhd = Account(uuid.uuid4(), "BHD", False)
    issued = NOW - timedelta(hours=5)
    over = Document("bill", uuid.uuid4(), eur, Decimal("60.00"), "EUR", SETUP - timedelta(hours=2), "F-2031-000001")
    note = Document("note", uuid.uuid4(), eur, Decimal("30.50"), "EUR", issued, "CN-2031-000001")
    untaxed = Document("bill", uuid.uuid4(), eur, Decimal(0), "EUR", issued, "F-2031-000002")
    jpy_note = Document("note", uuid.uuid4(), jpy, Decimal(200), "JPY", None, "")
    jpy_bill = Document("bill", uuid.uuid4(), jpy, Decimal(1210), "JPY", issued, "F-2031-000003")
    bhd_bill = Document("bill", uuid.uuid4(), bhd, Decimal(0), "BHD", issued, "F-2031-000004")
    w = World([eur, jpy, bhd], before_batch=[Sent(uuid.uuid4(), over)])
    w.batch = [Sent(uuid.uuid4(), d) for d in (jpy_note, note, untaxed, jpy_bill, bhd_bill, jpy_bill)]
    after = await one.prepare(w)
    await batch.prepare(w)

    await one.one_by_one(_messages(w.batch))
    msgs = _messages(w.batch)
    await process(batch.batch_only(), *msgs)
    assert acked(msgs)
    expected = await one.state(after)
    assert await batch.state(after) == expected

    entries = [
        (e["account_id"], e["balance_group_id"], e["type"], e["amount"], e["source_id"], e["reason"])
        for e in expected["entries"]
        if e["source_id"] != str(over.document_id)
    ]
    assert sorted(entries, key=lambda e: (str(e[0]), e[2])) == sorted(
        [
            (eur.account_id, f"group 'default' of {eur.account_id}", "credit_note", Decimal("-30.50"),
             str(note.document_id), "credit note CN-2031-000001"),
            (jpy.account_id, f"group 'default' of {jpy.account_id}", "credit_note", Decimal(-200),
             str(jpy_note.document_id), ""),
            (jpy.account_id, f"group 'default' of {jpy.account_id}", "tax", Decimal(1210),
             str(jpy_bill.document_id), "tax of bill F-2031-000003"),
        ],
        key=lambda e: (str(e[0]), e[2]),
    )  # fmt: skip
    times = {e["source_id"]: e["effective_time"] for e in expected["entries"]}
    assert times[str(note.document_id)] == issued and times[str(jpy_note.document_id)] == NOW
    balances = {(g["account_id"], g["name"], g["currency_code"]): g["balance"] for g in expected["groups"]}
    assert balances == {
        (eur.account_id, "default", "EUR"): Decimal("29.50"),
        (eur.account_id, "roaming", "EUR"): Decimal(0),
        (jpy.account_id, "default", "JPY"): Decimal(1010),
    }
    published = expected["published"]
    assert [s for s, _, _ in published[f"group 'default' of {jpy.account_id}"]] == [
        balance_event_codes.BALANCE_GROUP_CREATED
    ]
    eur_events = published[f"group 'default' of {eur.account_id}"]
    assert sorted(s for s, _, _ in eur_events) == sorted(
        [balance_event_codes.CREDIT_LIMIT_RESTORED, balance_event_codes.CREDIT_THRESHOLD_CROSSED]
    )
    assert {p["direction"] for s, _, p in eur_events if s == balance_event_codes.CREDIT_THRESHOLD_CROSSED} == {
        "CREDIT_THRESHOLD_DIRECTION_DOWN"
    }
    assert len(published) == 2


def _poison(kind: str, w: World) -> Sent:
    """A document balance refuses: in another currency than its (known) account's, with an amount
    finer than the currency's minor unit (on an account balance does not know yet: its default
    group is not opened either), or with a bill id that is no UUID."""
    if kind == "another currency":
        account = next(a for a in w.accounts if a.known and a.currency == "EUR")
        return Sent(uuid.uuid4(), Document("bill", uuid.uuid4(), account, Decimal("4.20"), "USD", NOW, "F-9"))
    if kind == "finer than the minor unit":
        account = Account(uuid.uuid4(), "JPY", known=False)
        return Sent(uuid.uuid4(), Document("note", uuid.uuid4(), account, Decimal("12.5"), "JPY", NOW, "CN-9"))
    account = next(a for a in w.accounts if a.known)
    return Sent(uuid.uuid4(), Document("bill", "bill-7", account, Decimal(3), account.currency, NOW, "F-9"))


@pytest.mark.parametrize(
    ("poison_kind", "reason"),
    [("another currency", "CURRENCY_MISMATCH"), ("finer than the minor unit", "AMOUNT_INVALID"), ("no uuid", None)],
)
async def test_a_batch_with_a_poison_message_is_applied_one_by_one(
    balance: tuple[BalanceDb, BalanceDb], caplog: pytest.LogCaptureFixture, poison_kind: str, reason: str | None
) -> None:
    one, batch = balance
    w = world(61, accounts=12, messages=24)
    poison = _poison(poison_kind, w)
    w.batch.insert(len(w.batch) // 2, poison)
    after = await one.prepare(w)
    await batch.prepare(w)

    reference = _messages(w.batch)
    await one.one_by_one(reference)
    bad = reference[w.batch.index(poison)]
    assert bad.naked and acked(reference, but=[bad])

    msgs = _messages(w.batch)
    poisoned = msgs[w.batch.index(poison)]
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="evolutivo_runtime.messaging.consumer"):
        await batch.apply_poisoned_batch(msgs, poisoned)
    failures = [r.exc_info[1] for r in caplog.records if r.exc_info and r.getMessage() == "event failed"]
    assert len(failures) == 1
    if reason is None:
        assert isinstance(failures[0], ValueError)
    else:
        assert isinstance(failures[0], FailedPrecondition) and failures[0].reason == reason
        assert failures[0].metadata["source_id"] == str(poison.document.document_id)

    expected = await one.state(after)
    assert not [e for e in expected["entries"] if e["source_id"] == str(poison.document.document_id)]
    assert await batch.state(after) == expected
    assert await batch.count(balance_orm.inbox) == await one.count(balance_orm.inbox)
    for db in balance:
        await db.check_invariant()

    # The poison message's retry fails again, alone; the rest is skipped by the inbox.
    retried = [m.again() for m in msgs]
    await process(batch.consumer(), *retried)
    assert retried[w.batch.index(poison)].naked and acked(retried, but=[retried[w.batch.index(poison)]])
    assert await batch.state(after) == expected
