"""Use cases of rerating (RerateUsage) and of credit limits (balance's events).

A rerating run, in the caller's transaction (run_idempotent: once per request id):

1. the account is locked exclusively (rating takes the same advisory lock shared), so no usage is
   rated into its counters while the run rebuilds them;
2. the account's RATED events with an event time in the window are found, and with them the
   cycles their units counted in; each such cycle's usage is priced again as a whole, in rating
   order (domain/rerating.py);
3. the reversing and new charges are inserted and published in ChargesCreated like any charge
   (balance books them, billing bills them on the next bill), the cycles' counters are set to what
   the current catalog counts, and the run is recorded with its counts.
"""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta
from decimal import Decimal

from evolutivo_runtime.errors import FailedPrecondition, NotFound

from evolutivo_charging.adapters.usage_repository import RerateRunRow
from evolutivo_charging.domain import rerating
from evolutivo_charging.domain.usage import CreditState, RatedCharge
from evolutivo_charging.service_layer.unit_of_work import ChargingUnitOfWork
from evolutivo_charging.service_layer.usage import publish_charges


async def rerate_usage(
    uow: ChargingUnitOfWork,
    account_id: uuid.UUID,
    start: datetime,
    end: datetime,
    charge_offer_code: str,
    request_id: str,
    horizon: timedelta | None = None,
) -> tuple[RerateRunRow, list[RatedCharge]]:
    """Rates the account's rated usage with an event time in [start, end) again; returns the run
    and the charges it made. Runs in the caller's transaction (the caller commits).

    `horizon`: how long rated events are kept (the idempotency horizon); a cycle that started
    before it may have lost events, so its usage cannot be priced again (FAILED_PRECONDITION)."""
    now = uow.clock.now()
    await uow.account_locks.exclusive(account_id)
    account = await uow.charging_accounts.get(account_id)
    if account is None:
        raise NotFound("charging_account", str(account_id))
    in_window = await uow.usage.rated_cycles_in_window(account_id, start, end)
    usage_cycles = sorted({c for c in in_window.values() if c is not None})
    purchases = (await uow.purchases.for_accounts([account_id]))[account_id]
    cycles = (await uow.bill_cycles.for_accounts([account_id]))[account_id]
    versions = await uow.catalog.activated(p.charge_offer_code for p in purchases)
    by_id = {c.bill_cycle_id: c for c in cycles}
    run_id = uuid.uuid4()

    made: list[RatedCharge] = []
    counts = rerating.Rerated()
    for cycle_id in usage_cycles:
        usage_cycle = by_id.get(cycle_id)
        if usage_cycle is None:
            continue  # a cycle charging never learnt cannot be: rating chose it from what it knew
        if horizon is not None and usage_cycle.start_time < now - horizon:
            raise FailedPrecondition(
                "RERATE_BEYOND_HORIZON",
                f"cycle {cycle_id} started more than {horizon.days} days ago: its usage is no longer kept "
                "whole (docs/charging.md, idempotency horizon)",
                {"account_id": str(account_id), "bill_cycle_id": str(cycle_id)},
            )
        stored = await uow.usage.rated_in_cycle(cycle_id)
        standing = await uow.charges.standing(account_id, (s.event.event_id for s in stored))
        usage = [
            rerating.RatedUsage(s.event, tuple(standing[s.event.event_id]), s.event.event_id in in_window)
            for s in stored
            if s.event.account_id == account_id
        ]
        try:
            done = rerating.rerate_cycle(
                usage_cycle, usage, account, purchases, versions, cycles, charge_offer_code, run_id, now
            )
        except LookupError as error:
            raise FailedPrecondition(
                "NO_OPEN_CYCLE",
                f"{error}: rerate once billing has opened the account's next cycle",
                {"account_id": str(account_id)},
            ) from None
        before = await uow.counters.of_cycle(account_id, cycle_id)
        keys = sorted(before.keys() | done.counters.keys())
        await uow.counters.lock(keys, now)
        await uow.counters.save({k: done.counters.get(k, Decimal(0)) for k in keys}, now)
        made.extend(done.charges)
        counts.events_rerated += done.events_rerated
        counts.events_changed += done.events_changed
        counts.charges_reversed += done.charges_reversed
        counts.charges_created += done.charges_created

    await uow.charges.add_all(made)
    publish_charges(uow, made)
    run = RerateRunRow(
        rerate_run_id=run_id,
        account_id=account_id,
        start_time=start,
        end_time=end,
        charge_offer_code=charge_offer_code,
        request_id=request_id,
        events_rerated=counts.events_rerated,
        events_changed=counts.events_changed,
        charges_reversed=counts.charges_reversed,
        charges_created=counts.charges_created,
        net_amount=sum((c.amount for c in made), Decimal(0)),
        currency_code=account.currency_code,
        create_time=now,
    )
    await uow.rerate_runs.add(run)
    return run, made


async def apply_credit_state(uow: ChargingUnitOfWork, state: CreditState, now: datetime) -> bool:
    """On balance's CreditLimitExceeded / CreditLimitRestored: the group's state, unless one with a
    version as high was applied (events of a group can arrive out of order). Runs inside the
    consumer's transaction."""
    uow.account_changed(state.account_id)
    return await uow.credit.apply(state, now)
