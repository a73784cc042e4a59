"""Use cases of usage rating: record usage (one event, a batch, a stream slice), rate kept events
again, list charges and kept usage, and the projections rating reads (purchases, billing cycles).

One transaction per call (per slice of a stream), in this order:

1. the events received before are read from `usage_events`, in the statement that takes their
   accounts' share locks (a rerating run of one of them takes it exclusive) and reads the rating
   cache's generation;
2. event types no activated offer rates are refused (INVALID_ARGUMENT on `<field>.event_type`),
   like the other invalid fields the entrypoint refused already. An id received before returns
   its stored result when the payload's SHA-256 matches, and is refused (ALREADY_EXISTS) when it
   does not;
3. the new events are planned (domain.rating.plan), the usage counters they advance are locked
   in key order (one upsert, adapters/usage_repository.py), the events are priced in the order
   received, then the counters, the charges and the new events with their outcome are written
   with the commit's own statement (UnitOfWork.write_at_commit), as is one ChargesCreated per
   currency with every charge of the call. Each event is written once, rated. A new id another
   call stored meanwhile (the same event sent twice at once) fails that statement: the
   transaction rolls back and the call runs again, to answer it as a replay (`record_usage`).

Unrated and rejected events are kept with their reason; ResubmitUsage rates them again.
"""

from __future__ import annotations

import uuid
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import replace
from datetime import datetime, timedelta

from evolutivo.charging.v1 import events_pb2, usage_pb2
from evolutivo_runtime.errors import Aborted, AlreadyExists, FailedPrecondition, InvalidArgument, NotFound, ServiceError
from evolutivo_runtime.security.audit import AuditContext, current_audit, grouped_audits

from evolutivo_charging.adapters import events
from evolutivo_charging.adapters.usage_proto import charge_to_pb
from evolutivo_charging.adapters.usage_repository import (
    ChargeRepository,
    Outcome,
    StoredUsage,
    UsageRaced,
    UsageRepository,
)
from evolutivo_charging.domain import rating
from evolutivo_charging.domain.usage import (
    BillCycle,
    BillCycleStatus,
    Purchase,
    RatedCharge,
    Reason,
    Received,
    UsageEvent,
    UsageResult,
    UsageStatus,
)
from evolutivo_charging.service_layer.reads import RatingReads
from evolutivo_charging.service_layer.unit_of_work import ChargingUnitOfWork


def _refused(event_id: str, error: ServiceError) -> UsageResult:
    return UsageResult(event_id, None, error.reason, error=error)


def _conflict(event_id: str) -> AlreadyExists:
    return AlreadyExists(
        "USAGE_EVENT_ID_REUSED",
        f"event {event_id!r} was received before with another payload; give a new event a new event_id",
        {"event_id": event_id},
    )


def _rejection(
    event: UsageEvent, reason: str, message: str, details: Mapping[str, str] | None = None
) -> FailedPrecondition:
    return FailedPrecondition(
        reason, message, {"account_id": str(event.account_id), "event_id": event.event_id, **(details or {})}
    )


def _stored_result(stored: StoredUsage, charges: dict[uuid.UUID, RatedCharge]) -> UsageResult:
    error = None
    if stored.status is UsageStatus.REJECTED:
        why = (
            "a balance group it lands in was over its credit limit"
            if stored.reason == Reason.CREDIT_LIMIT_EXCEEDED
            else f"account {stored.event.account_id} was not active"
        )
        error = _rejection(
            stored.event,
            stored.reason,
            f"{why} when the event was rated ({stored.reason}): it is kept as rejected; ResubmitUsage rates it again",
        )
    return UsageResult(
        stored.event.event_id,
        stored.status,
        stored.reason,
        tuple(charges[c] for c in stored.charge_ids),
        error,
    )


async def record_usage(
    uow: ChargingUnitOfWork, received: Sequence[Received], audits: Sequence[AuditContext | None] | None = None
) -> list[UsageResult]:
    """Rates the events of one call in one transaction; a result per event, in order.

    `audits`: for events of several calls rated together, each event's caller (usage_groups);
    without it the events are the current call's. A call whose events were all refused kept
    nothing, so it leaves no audit record (docs/security.md: failed calls leave none)."""
    for attempt in range(_RACED_ATTEMPTS):
        try:
            return await _record_once(uow, received, audits)
        except UsageRaced as raced:
            # The same event sent twice at once: the other transaction stored it first. Run
            # again: this time it is found stored and answered as a replay.
            if attempt == _RACED_ATTEMPTS - 1:
                raise Aborted(
                    "USAGE_RACED", "the call's events kept arriving in other calls at the same time; retry it"
                ) from raced
    raise AssertionError("unreachable")


# Each attempt after a race finds more of the call's events stored; more than one race on the
# same call means many copies of its events arriving at once.
_RACED_ATTEMPTS = 5


async def _record_once(
    uow: ChargingUnitOfWork, received: Sequence[Received], audits: Sequence[AuditContext | None] | None
) -> list[UsageResult]:
    async with uow:
        results = await _record(uow, received)
        if audits is not None:
            kept = tuple(a for a, r in zip(audits, results, strict=True) if a is not None and r.status is not None)
            tokens = (grouped_audits.set(kept), current_audit.set(None))
        elif all(r.status is None for r in results):
            tokens = (grouped_audits.set(()), current_audit.set(None))
        else:
            tokens = None
        try:
            await uow.commit()
        finally:
            if tokens is not None:
                grouped_audits.reset(tokens[0])
                current_audit.reset(tokens[1])
        return results


async def _record(uow: ChargingUnitOfWork, received: Sequence[Received]) -> list[UsageResult]:
    now = uow.clock.now()
    results: dict[int, UsageResult] = {}
    valid: list[tuple[int, Received, UsageEvent]] = []
    for i, r in enumerate(received):
        if r.event is None:
            assert r.error is not None
            results[i] = _refused(r.event_id, r.error)
        else:
            valid.append((i, r, r.event))

    if not valid:
        return [results[i] for i in range(len(received))]
    # One statement: the events received before, the accounts' share locks and the cache's
    # generation (events of a type nothing rates included: they are refused below).
    before, generation = await uow.usage.received([e for _, _, e in valid])
    reads = RatingReads(uow)
    await reads.begin(generation)
    rated_types = await reads.rated_event_types(e.event_type for _, _, e in valid)
    first: dict[str, tuple[int, UsageEvent]] = {}
    repeats: list[tuple[int, int]] = []
    for i, r, e in valid:
        if e.event_type not in rated_types:
            results[i] = _refused(
                r.event_id,
                InvalidArgument(f"{r.field}.event_type", f"no charge offer rates {e.event_type!r} events"),
            )
        elif e.event_id in first:
            j, earlier = first[e.event_id]
            if earlier.fingerprint() != e.fingerprint():
                results[i] = _refused(e.event_id, _conflict(e.event_id))
            else:
                repeats.append((i, j))
        else:
            first[e.event_id] = (i, e)

    earlier_charges = await uow.charges.get_many(c for s in before.values() for c in s.charge_ids)
    new: list[tuple[int, UsageEvent]] = []
    for event_id, (i, e) in first.items():
        stored = before.get(event_id)
        if stored is None:
            new.append((i, e))
            continue
        if stored.fingerprint != e.fingerprint():
            results[i] = _refused(event_id, _conflict(event_id))
        else:
            results[i] = _stored_result(stored, earlier_charges)

    # The read of those received before took the accounts' share locks.
    rated = await _rate(uow, [e for _, e in new], now, reads, accounts_shared=True, new=True)
    for i, e in new:
        results[i] = rated[e.event_id]
    for i, j in repeats:
        results[i] = results[j]
    return [results[i] for i in range(len(received))]


async def _rate(
    uow: ChargingUnitOfWork,
    batch: Sequence[UsageEvent],
    now: datetime,
    reads: RatingReads | None = None,
    accounts_shared: bool = False,
    new: bool = False,
) -> dict[str, UsageResult]:
    """Rates events new to charging (`new`: stored with their outcome by the commit) or kept ones
    this transaction holds locked (their outcome updated); the counters, charges and outcomes are
    written with the commit's statement (once per unit of work: the counters refuse a second
    lock). `accounts_shared`: the transaction holds the events' accounts' share locks already."""
    if not batch:
        return {}
    if reads is None:
        reads = RatingReads(uow)
        await reads.begin()
    account_ids = {e.account_id for e in batch}
    views = await reads.accounts(account_ids)
    catalog = (await reads.catalog()).versions

    plans = [
        rating.plan(
            e,
            views[e.account_id].account,
            views[e.account_id].purchases,
            catalog,
            views[e.account_id].cycles,
            views[e.account_id].credit,
        )
        for e in batch
    ]
    keys = sorted({k for p in plans if isinstance(p, rating.Plan) for k in p.counter_keys()})
    # Shared: a rerating run of one of these accounts (exclusive) is not rebuilding its counters.
    if not accounts_shared:
        await uow.account_locks.share(
            e.account_id for e, p in zip(batch, plans, strict=True) if isinstance(p, rating.Plan)
        )
    counters = await uow.counters.lock(keys, now)

    results: dict[str, UsageResult] = {}
    outcomes: list[Outcome] = []
    created: list[RatedCharge] = []
    for event, planned in zip(batch, plans, strict=True):
        if isinstance(planned, rating.NotRated):
            error = (
                _rejection(event, planned.reason, planned.message, planned.details)
                if planned.status is UsageStatus.REJECTED
                else None
            )
            results[event.event_id] = UsageResult(event.event_id, planned.status, planned.reason, (), error)
            outcomes.append(Outcome(event.event_id, planned.status, planned.reason, ()))
            continue
        charges = rating.price(planned, counters, now)
        created.extend(charges)
        results[event.event_id] = UsageResult(event.event_id, UsageStatus.RATED, "", charges)
        outcomes.append(
            Outcome(
                event.event_id,
                UsageStatus.RATED,
                "",
                tuple(c.charge_id for c in charges),
                planned.cycle.bill_cycle_id,
            )
        )

    # Nothing reads these back before the commit: they go with its statement (one round trip).
    uow.counters.save_at_commit({k: counters[k] for k in keys}, now, uow.write_at_commit)
    for write in (
        ChargeRepository.add_statement(created),
        UsageRepository.insert_statement(list(zip(batch, outcomes, strict=True)), now)
        if new
        else UsageRepository.record_statement(outcomes, now),
    ):
        if write is not None:
            uow.write_at_commit(*write)
    publish_charges(uow, created)
    return results


# A ChargesCreated stays well under NATS's default 1 MiB payload limit.
MAX_MESSAGE_BYTES = 512 * 1024


def publish_charges(uow: ChargingUnitOfWork, created: Sequence[RatedCharge]) -> None:
    """One ChargesCreated with every charge of the call (or of the fees charged together), per
    currency (the message names one); charges that would exceed MAX_MESSAGE_BYTES are published
    in several messages. Each charge is translated once (this is on the hot path)."""
    by_currency: dict[str, list[usage_pb2.RatedCharge]] = defaultdict(list)
    for charge in created:
        charge_pb = charge_to_pb(charge)
        uow.published_charges[charge.charge_id] = charge_pb
        by_currency[charge.currency_code].append(charge_pb)
    for currency_code, charges_in in sorted(by_currency.items()):
        part: list[usage_pb2.RatedCharge] = []
        size = 0
        for charge_pb in charges_in:
            # Each repeated element costs its size plus a few bytes of tag and length.
            cost = charge_pb.ByteSize() + 8
            if part and size + cost > MAX_MESSAGE_BYTES:
                uow.publish(
                    events.CHARGES_CREATED, events_pb2.ChargesCreated(charges=part, currency_code=currency_code)
                )
                part, size = [], 0
            part.append(charge_pb)
            size += cost
        uow.publish(events.CHARGES_CREATED, events_pb2.ChargesCreated(charges=part, currency_code=currency_code))


async def resubmit_usage(uow: ChargingUnitOfWork, event_ids: Sequence[str]) -> list[UsageResult]:
    """Rates kept (UNRATED or REJECTED) events again, e.g. once the account, the purchase or the
    cycle they lacked is known. A RATED event keeps its charges: its stored result comes back.
    An id charging never received is NOT_FOUND in its result."""
    async with uow:
        now = uow.clock.now()
        stored = await uow.usage.get_many(event_ids, for_update=True)
        earlier_charges = await uow.charges.get_many(
            c for s in stored.values() if s.status is UsageStatus.RATED for c in s.charge_ids
        )
        # In the order they were received, as tiers would have counted them.
        again = [s.event for s in sorted(stored.values(), key=lambda s: s.seq) if s.status is not UsageStatus.RATED]
        rated = await _rate(uow, again, now)
        results: list[UsageResult] = []
        for event_id in event_ids:
            found = stored.get(event_id)
            if found is None:
                results.append(_refused(event_id, NotFound("usage_event", event_id)))
            elif event_id in rated:
                results.append(rated[event_id])
            else:
                results.append(_stored_result(found, earlier_charges))
        await uow.commit()
        return results


async def list_charges(
    uow: ChargingUnitOfWork, account_id: uuid.UUID, bill_cycle_id: uuid.UUID | None, after_seq: int, limit: int
) -> list[tuple[int, RatedCharge]]:
    async with uow:
        return await uow.charges.list(account_id, bill_cycle_id, after_seq, limit)


async def list_kept_usage(
    uow: ChargingUnitOfWork, account_id: uuid.UUID | None, after_seq: int, limit: int
) -> list[StoredUsage]:
    async with uow:
        return await uow.usage.kept(account_id, after_seq, limit)


# Projections: run inside the consumer's transaction (the caller commits).


async def learn_purchase(uow: ChargingUnitOfWork, purchase: Purchase, now: datetime) -> bool:
    """On PurchaseCreated: charging's record of the purchase, once; False when known already
    (a PurchaseEnded applied before it carried the purchase)."""
    uow.account_changed(purchase.account_id)
    return await uow.purchases.learn(purchase, now)


async def end_purchase(uow: ChargingUnitOfWork, purchase: Purchase, ended_at: datetime, now: datetime) -> bool:
    """On PurchaseEnded (published at `ended_at`): the purchase's end or cancellation, unless a
    newer PurchaseEnded was applied already. Learns the purchase when its PurchaseCreated has not
    arrived yet."""
    uow.account_changed(purchase.account_id)
    return await uow.purchases.end(purchase, ended_at, now)


async def open_cycle(uow: ChargingUnitOfWork, cycle: BillCycle, now: datetime) -> None:
    """On BillCycleOpened: the cycle, unless charging knows it already (maybe closed)."""
    uow.account_changed(cycle.account_id)
    await uow.bill_cycles.upsert(replace(cycle, status=BillCycleStatus.OPEN), now)


async def close_cycle(uow: ChargingUnitOfWork, cycle: BillCycle, next_cycle: BillCycle | None, now: datetime) -> None:
    """On BillCycleClosed: the cycle is closed for good; the next one, opened in its place, is
    learnt too (its own BillCycleOpened may come later, or have come already)."""
    uow.account_changed(cycle.account_id)
    await uow.bill_cycles.upsert(replace(cycle, status=BillCycleStatus.CLOSED), now)
    if next_cycle is not None:
        await uow.bill_cycles.upsert(replace(next_cycle, status=BillCycleStatus.OPEN), now)


async def expire_usage(uow: ChargingUnitOfWork, horizon: timedelta, limit: int) -> int:
    """Deletes up to `limit` RATED usage events received more than `horizon` ago (their ids may
    be used again after that; their charges stay). Unrated and rejected events are kept until they
    are rated: they are work to do, not only idempotency records. Returns how many it deleted."""
    async with uow:
        deleted = await uow.usage.expire(uow.clock.now() - horizon, limit)
        await uow.commit()
        return deleted
