"""Loads and stores collections scenarios, cases (with their actions and promises), tasks and the
accounts' collections facts; reads the overdue debt and the aging of receivables."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import date, datetime, timedelta
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import Date, DateTime, and_, bindparam, cast, delete, exists, func, or_, select, tuple_, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from evolutivo_billing.adapters.bills_repository import BillRepository
from evolutivo_billing.adapters.collections_tables import (
    collections_accounts,
    collections_actions,
    collections_cases,
    collections_contact_attempts,
    collections_entry_checks,
    collections_promises,
    collections_scenarios,
    collections_tasks,
)
from evolutivo_billing.adapters.orm import bill_units, bills, credit_note_allocations, payment_allocations, payments
from evolutivo_billing.domain.calendar import start_of_day
from evolutivo_billing.domain.collections import (
    AccountFacts,
    Action,
    ActionState,
    ActionType,
    Case,
    CaseStatus,
    CloseReason,
    ContactAttempt,
    ContactChannel,
    ContactOutcome,
    EntryCriteria,
    Instalment,
    LateFeeRule,
    OverdueDebt,
    Promise,
    PromiseState,
    Scenario,
    Step,
    Task,
)
from evolutivo_billing.domain.model import BillUnit


def _plain(value: Decimal) -> Decimal:
    """NUMERIC(38, 9) reads back with nine decimals; drop the trailing zeros (not the exponent of integers)."""
    normal = value.normalize()
    return normal.quantize(Decimal(1)) if normal == normal.to_integral_value() else normal


def _amounts(values: dict[str, Any]) -> dict[str, Decimal]:
    return {k: Decimal(v) for k, v in values.items()}


# -- JSON forms of scenario parts -----------------------------------------------------------------


def step_to_json(step: Step) -> dict[str, Any]:
    fee = step.late_fee
    return {
        "days_past_due": step.days_past_due,
        "action": step.action.value,
        "description": step.description,
        "late_fee": None
        if fee is None
        else {
            "fixed_amounts": {k: str(v) for k, v in fee.fixed_amounts.items()},
            "percent": None if fee.percent is None else str(fee.percent),
            "caps": {k: str(v) for k, v in fee.caps.items()},
        },
        "task_title": step.task_title,
        "task_description": step.task_description,
        "task_due_in_days": step.task_due_in_days,
        "agency": step.agency,
        "template": step.template,
    }


def step_from_json(data: dict[str, Any]) -> Step:
    fee = data.get("late_fee")
    return Step(
        days_past_due=int(data["days_past_due"]),
        action=ActionType(data["action"]),
        description=data.get("description", ""),
        late_fee=None
        if fee is None
        else LateFeeRule(
            _amounts(fee.get("fixed_amounts", {})),
            None if fee.get("percent") is None else Decimal(fee["percent"]),
            _amounts(fee.get("caps", {})),
        ),
        task_title=data.get("task_title", ""),
        task_description=data.get("task_description", ""),
        task_due_in_days=int(data.get("task_due_in_days", 0)),
        agency=data.get("agency", ""),
        template=data.get("template", ""),
    )


def _criteria_to_json(c: EntryCriteria) -> dict[str, Any]:
    return {
        "min_overdue_amounts": {k: str(v) for k, v in c.min_overdue_amounts.items()},
        "min_days_past_due": c.min_days_past_due,
        "account_types": sorted(c.account_types),
        "labels": dict(c.labels),
    }


def _criteria_from_json(data: dict[str, Any]) -> EntryCriteria:
    return EntryCriteria(
        _amounts(data.get("min_overdue_amounts", {})),
        int(data.get("min_days_past_due", 0)),
        frozenset(data.get("account_types", [])),
        dict(data.get("labels", {})),
    )


def _scenario_row(s: Scenario) -> dict[str, Any]:
    return {
        "display_name": s.display_name,
        "description": s.description,
        "priority": s.priority,
        "criteria": _criteria_to_json(s.criteria),
        "steps": [step_to_json(step) for step in s.steps],
        "create_time": s.create_time,
        "update_time": s.update_time,
        "version": s.version,
    }


def _scenario(row: Any) -> Scenario:
    return Scenario(
        scenario_id=row.scenario_id,
        display_name=row.display_name,
        description=row.description,
        priority=row.priority,
        criteria=_criteria_from_json(row.criteria),
        steps=tuple(step_from_json(s) for s in row.steps),
        create_time=row.create_time,
        update_time=row.update_time,
        version=row.version,
    )


# -- cases ------------------------------------------------------------------------------------------


def _case_row(case: Case) -> dict[str, Any]:
    return {
        "bill_unit_id": case.bill_unit_id,
        "account_id": case.account_id,
        "currency_code": case.currency_code,
        "time_zone": case.time_zone,
        "scenario_id": case.scenario_id,
        "scenario_name": case.scenario_name,
        "past_due_since": case.past_due_since,
        "status": case.status.value,
        "paused": case.paused,
        "pause_reason": case.pause_reason,
        "paused_by": case.paused_by,
        "pause_time": case.pause_time,
        "overdue_amount": case.overdue_amount,
        "open_time": case.open_time,
        "close_time": case.close_time,
        "close_reason": case.close_reason.value if case.close_reason else None,
        "collector_id": case.collector_id,
        "wake_time": case.wake_time,
    }


def _action_row(a: Action) -> dict[str, Any]:
    return {
        "case_id": a.case_id,
        "sequence": a.sequence,
        "action_type": a.action_type.value,
        "step_index": a.step_index,
        "step": step_to_json(a.step) if a.step is not None else {},
        "due_time": a.due_time,
        "state": a.state.value,
        "attempts": a.attempts,
        "claim_token": a.claim_token,
        "lease_until": a.lease_until,
        "finish_time": a.finish_time,
        "outcome": a.outcome,
        "amount": a.amount,
        "details": a.details,
    }


def _action(row: Any) -> Action:
    return Action(
        case_id=row.case_id,
        sequence=row.sequence,
        action_type=ActionType(row.action_type),
        step_index=row.step_index,
        step=step_from_json(row.step) if row.step else None,
        due_time=row.due_time,
        state=ActionState(row.state),
        attempts=row.attempts,
        claim_token=row.claim_token,
        lease_until=row.lease_until,
        finish_time=row.finish_time,
        outcome=row.outcome,
        amount=_plain(row.amount) if row.amount is not None else None,
        details=dict(row.details),
    )


def _promise_row(p: Promise) -> dict[str, Any]:
    return {
        "promise_id": p.promise_id,
        "case_id": p.case_id,
        "instalments": [{"amount": str(i.amount), "due_date": i.due_date.isoformat()} for i in p.instalments],
        "state": p.state.value,
        "paid_amount": p.paid_amount,
        "note": p.note,
        "actor": p.actor,
        "create_time": p.create_time,
        "resolve_time": p.resolve_time,
    }


def _promise(row: Any) -> Promise:
    return Promise(
        promise_id=row.promise_id,
        case_id=row.case_id,
        instalments=[Instalment(Decimal(i["amount"]), date.fromisoformat(i["due_date"])) for i in row.instalments],
        create_time=row.create_time,
        state=PromiseState(row.state),
        paid_amount=_plain(row.paid_amount),
        note=row.note,
        actor=row.actor,
        resolve_time=row.resolve_time,
    )


def _case(row: Any, actions: list[Action], promises: list[Promise]) -> Case:
    return Case(
        case_id=row.case_id,
        bill_unit_id=row.bill_unit_id,
        account_id=row.account_id,
        currency_code=row.currency_code,
        time_zone=row.time_zone,
        scenario_id=row.scenario_id,
        scenario_name=row.scenario_name,
        past_due_since=row.past_due_since,
        open_time=row.open_time,
        overdue_amount=_plain(row.overdue_amount),
        status=CaseStatus(row.status),
        paused=row.paused,
        pause_reason=row.pause_reason,
        paused_by=row.paused_by,
        pause_time=row.pause_time,
        close_time=row.close_time,
        close_reason=CloseReason(row.close_reason) if row.close_reason else None,
        collector_id=row.collector_id,
        actions=actions,
        promises=promises,
        wake_time=row.wake_time,
    )


def _task_row(t: Task) -> dict[str, Any]:
    return {
        "task_id": t.task_id,
        "case_id": t.case_id,
        "account_id": t.account_id,
        "title": t.title,
        "description": t.description,
        "due_date": t.due_date,
        "state": "done" if t.done else "open",
        "collector_id": t.collector_id,
        "outcome": t.outcome,
        "completed_by": t.completed_by,
        "create_time": t.create_time,
        "complete_time": t.complete_time,
    }


def _task(row: Any) -> Task:
    return Task(
        task_id=row.task_id,
        case_id=row.case_id,
        account_id=row.account_id,
        title=row.title,
        description=row.description,
        due_date=row.due_date,
        collector_id=row.collector_id,
        create_time=row.create_time,
        done=row.state == "done",
        outcome=row.outcome,
        completed_by=row.completed_by,
        complete_time=row.complete_time,
    )


class CollectionsRepository:
    def __init__(self, session: AsyncSession) -> None:
        self._session = session

    # -- scenarios ----------------------------------------------------------------------------------

    async def add_scenario(self, scenario: Scenario) -> None:
        await self._session.execute(
            insert(collections_scenarios).values(scenario_id=scenario.scenario_id, **_scenario_row(scenario))
        )

    async def scenario_named(self, display_name: str) -> Scenario | None:
        t = collections_scenarios
        row = (await self._session.execute(select(t).where(t.c.display_name == display_name))).first()
        return _scenario(row) if row else None

    async def get_scenario(self, scenario_id: uuid.UUID, for_update: bool = False) -> Scenario | None:
        t = collections_scenarios
        query = select(t).where(t.c.scenario_id == scenario_id)
        if for_update:
            query = query.with_for_update()
        row = (await self._session.execute(query)).first()
        return _scenario(row) if row else None

    async def save_scenario(self, scenario: Scenario) -> None:
        t = collections_scenarios
        await self._session.execute(
            update(t).where(t.c.scenario_id == scenario.scenario_id).values(**_scenario_row(scenario))
        )

    async def delete_scenario(self, scenario_id: uuid.UUID) -> bool:
        t = collections_scenarios
        result = await self._session.execute(delete(t).where(t.c.scenario_id == scenario_id).returning(t.c.scenario_id))
        return result.first() is not None

    async def list_scenarios(self, after: tuple[int, datetime, uuid.UUID] | None, limit: int) -> list[Scenario]:
        t = collections_scenarios
        key = tuple_(t.c.priority, t.c.create_time, t.c.scenario_id)
        query = select(t).order_by(t.c.priority, t.c.create_time, t.c.scenario_id).limit(limit)
        if after is not None:
            query = query.where(key > tuple_(*after))
        return [_scenario(row) for row in await self._session.execute(query)]

    async def all_scenarios(self) -> list[Scenario]:
        t = collections_scenarios
        return [_scenario(row) for row in await self._session.execute(select(t))]

    # -- accounts' facts and entry checks -----------------------------------------------------------

    async def record_facts(self, facts: AccountFacts) -> bool:
        """Stores the account's facts unless newer ones are stored; returns whether they were."""
        t = collections_accounts
        values = {
            "exempt": facts.exempt,
            "scenario_id": facts.scenario_id,
            "account_type": facts.account_type,
            "labels": dict(facts.labels),
            "facts_time": facts.facts_time,
        }
        stmt = insert(t).values(account_id=facts.account_id, **values)
        upsert = stmt.on_conflict_do_update(
            index_elements=[t.c.account_id], set_=values, where=t.c.facts_time <= stmt.excluded.facts_time
        ).returning(t.c.account_id)
        return (await self._session.execute(upsert)).first() is not None

    async def facts(self, account_id: uuid.UUID) -> AccountFacts:
        """The account's facts; defaults (not exempt, no type, no labels) when none arrived."""
        t = collections_accounts
        row = (await self._session.execute(select(t).where(t.c.account_id == account_id))).first()
        if row is None:
            return AccountFacts(account_id)
        return AccountFacts(account_id, row.exempt, row.scenario_id, row.account_type, dict(row.labels), row.facts_time)

    async def entry_candidates(self, now: datetime, limit: int) -> list[uuid.UUID]:
        """Bill units with bills past their due date (in the unit's time zone) owing something,
        without an open case, not waiting for their next entry check."""
        b, u, c, e = bills, bill_units, collections_cases, collections_entry_checks
        today = func.timezone(u.c.time_zone, bindparam("now", now, type_=DateTime(timezone=True))).cast(Date)
        query = (
            select(b.c.bill_unit_id)
            .join(u, u.c.bill_unit_id == b.c.bill_unit_id)
            .where(
                b.c.status.in_(["issued", "partially_paid", "overdue"]),
                b.c.total > b.c.paid_amount + b.c.credited_amount,
                b.c.due_date < today,
                ~exists().where(c.c.bill_unit_id == b.c.bill_unit_id, c.c.status == "open"),
                ~exists().where(e.c.bill_unit_id == b.c.bill_unit_id, e.c.next_check_time > now),
            )
            .group_by(b.c.bill_unit_id)
            .order_by(b.c.bill_unit_id)
            .limit(limit)
        )
        return [row.bill_unit_id for row in await self._session.execute(query)]

    async def lock_unit(self, bill_unit_id: uuid.UUID) -> bool:
        """Locks the bill unit (as payments do) unless another transaction holds it."""
        query = (
            select(bill_units.c.bill_unit_id)
            .where(bill_units.c.bill_unit_id == bill_unit_id)
            .with_for_update(skip_locked=True)
        )
        return (await self._session.execute(query)).first() is not None

    async def check_entry_again_at(self, bill_unit_id: uuid.UUID, when: datetime) -> None:
        t = collections_entry_checks
        stmt = insert(t).values(bill_unit_id=bill_unit_id, next_check_time=when)
        await self._session.execute(
            stmt.on_conflict_do_update(index_elements=[t.c.bill_unit_id], set_={"next_check_time": when})
        )

    async def forget_entry_checks(self, bill_unit_id: uuid.UUID | None = None) -> None:
        """The next pass looks at the unit (all units when None) again."""
        t = collections_entry_checks
        stmt = delete(t)
        if bill_unit_id is not None:
            stmt = stmt.where(t.c.bill_unit_id == bill_unit_id)
        await self._session.execute(stmt)

    async def overdue_debt(self, unit: BillUnit, now: datetime) -> OverdueDebt:
        """The unit's bills past their due date (before today in its time zone) owing something."""
        today = now.astimezone(ZoneInfo(unit.time_zone)).date()
        owed = [b for b in await BillRepository(self._session).open_for_unit(unit.bill_unit_id) if b.is_overdue(today)]
        return OverdueDebt(
            unit.bill_unit_id,
            unit.account_id,
            unit.currency_code,
            unit.time_zone,
            sum((b.open_amount for b in owed), Decimal(0)),
            min((b.due_date for b in owed), default=None),
            tuple(sorted(b.bill_id for b in owed)),
        )

    async def paid_since(self, account_id: uuid.UUID, since: datetime) -> Decimal:
        """What the account paid (payments received at or after `since`, not reversed)."""
        p = payments
        total = await self._session.scalar(
            select(func.coalesce(func.sum(p.c.amount), 0)).where(
                p.c.account_id == account_id, p.c.received_time >= since, p.c.reversed.is_(False)
            )
        )
        return _plain(Decimal(total or 0))

    async def write_off_bills(self, bill_ids: Sequence[uuid.UUID]) -> list[uuid.UUID]:
        """These bills, still open, become WRITTEN_OFF; returns those that did."""
        if not bill_ids:
            return []
        result = await self._session.execute(
            update(bills)
            .where(bills.c.bill_id.in_(list(bill_ids)), bills.c.status.in_(["issued", "partially_paid", "overdue"]))
            .values(status="written_off")
            .returning(bills.c.bill_id)
        )
        return sorted(row.bill_id for row in result)

    # -- cases ------------------------------------------------------------------------------------------

    async def add_case(self, case: Case) -> None:
        await self._session.execute(insert(collections_cases).values(case_id=case.case_id, **_case_row(case)))
        await self._save_parts(case)

    async def save_case(self, case: Case) -> None:
        t = collections_cases
        await self._session.execute(update(t).where(t.c.case_id == case.case_id).values(**_case_row(case)))
        await self._save_parts(case)

    async def _save_parts(self, case: Case) -> None:
        if case.actions:
            a = collections_actions
            stmt = insert(a).values([_action_row(x) for x in case.actions])
            await self._session.execute(
                stmt.on_conflict_do_update(
                    index_elements=[a.c.case_id, a.c.sequence],
                    set_={
                        col: stmt.excluded[col]
                        for col in (
                            "state",
                            "attempts",
                            "claim_token",
                            "lease_until",
                            "finish_time",
                            "outcome",
                            "amount",
                            "details",
                        )
                    },
                )
            )
        if case.promises:
            p = collections_promises
            pstmt = insert(p).values([_promise_row(x) for x in case.promises])
            await self._session.execute(
                pstmt.on_conflict_do_update(
                    index_elements=[p.c.promise_id],
                    set_={col: pstmt.excluded[col] for col in ("state", "paid_amount", "resolve_time")},
                )
            )

    async def get_case(self, case_id: uuid.UUID, for_update: bool = False) -> Case | None:
        query = select(collections_cases).where(collections_cases.c.case_id == case_id)
        if for_update:
            query = query.with_for_update()
        row = (await self._session.execute(query)).first()
        return (await self._complete([row]))[0] if row else None

    async def open_case_of_account(self, account_id: uuid.UUID, for_update: bool = False) -> Case | None:
        t = collections_cases
        query = select(t).where(t.c.account_id == account_id, t.c.status == "open")
        if for_update:
            query = query.with_for_update()
        row = (await self._session.execute(query)).first()
        return (await self._complete([row]))[0] if row else None

    async def open_case_of_unit_full(self, bill_unit_id: uuid.UUID) -> Case | None:
        t = collections_cases
        row = (
            await self._session.execute(select(t).where(t.c.bill_unit_id == bill_unit_id, t.c.status == "open"))
        ).first()
        return (await self._complete([row]))[0] if row else None

    async def open_case_of_unit(self, bill_unit_id: uuid.UUID) -> bool:
        t = collections_cases
        found = await self._session.scalar(
            select(t.c.case_id).where(t.c.bill_unit_id == bill_unit_id, t.c.status == "open")
        )
        return found is not None

    async def claim_due(self, now: datetime, limit: int) -> list[Case]:
        """Up to `limit` cases due a look (wake_time reached), earliest first, locked FOR UPDATE
        SKIP LOCKED: replicas claim different cases."""
        t = collections_cases
        query = (
            select(t)
            .where(t.c.wake_time.is_not(None), t.c.wake_time <= now)
            .order_by(t.c.wake_time, t.c.case_id)
            .limit(limit)
            .with_for_update(skip_locked=True)
        )
        rows = list(await self._session.execute(query))
        return await self._complete(rows)

    async def claim_settled(self, now: datetime, limit: int, after: uuid.UUID | None) -> list[Case]:
        """Open cases whose unit has no bill past due owing something (paid, credited, voided), locked
        FOR UPDATE SKIP LOCKED, by id after `after`."""
        t, b, u = collections_cases, bills, bill_units
        today = func.timezone(u.c.time_zone, bindparam("now", now, type_=DateTime(timezone=True))).cast(Date)
        owing = (
            exists()
            .select_from(b.join(u, u.c.bill_unit_id == b.c.bill_unit_id))
            .where(
                b.c.bill_unit_id == t.c.bill_unit_id,
                b.c.status.in_(["issued", "partially_paid", "overdue"]),
                b.c.total > b.c.paid_amount + b.c.credited_amount,
                b.c.due_date < today,
            )
        )
        query = select(t).where(t.c.status == "open", ~owing)
        if after is not None:
            query = query.where(t.c.case_id > after)
        query = query.order_by(t.c.case_id).limit(limit).with_for_update(of=t, skip_locked=True)
        rows = list(await self._session.execute(query))
        return await self._complete(rows)

    async def _complete(self, rows: Sequence[Any]) -> list[Case]:
        ids = [row.case_id for row in rows]
        if not ids:
            return []
        a, p = collections_actions, collections_promises
        actions: dict[uuid.UUID, list[Action]] = {i: [] for i in ids}
        for row in await self._session.execute(
            select(a).where(a.c.case_id.in_(ids)).order_by(a.c.case_id, a.c.sequence)
        ):
            actions[row.case_id].append(_action(row))
        promises: dict[uuid.UUID, list[Promise]] = {i: [] for i in ids}
        query = select(p).where(p.c.case_id.in_(ids)).order_by(p.c.create_time, p.c.promise_id)
        for row in await self._session.execute(query):
            promises[row.case_id].append(_promise(row))
        return [_case(row, actions[row.case_id], promises[row.case_id]) for row in rows]

    async def list_cases(
        self,
        account_id: uuid.UUID | None,
        status: str | None,
        paused: bool | None,
        promised: bool | None,
        collector_id: str | None,
        before: tuple[datetime, uuid.UUID] | None,
        limit: int,
    ) -> list[Case]:
        """Cases newest first (open time, then id), filtered; without actions (nor promises)."""
        t = collections_cases
        query = select(t).order_by(t.c.open_time.desc(), t.c.case_id.desc()).limit(limit)
        if account_id is not None:
            query = query.where(t.c.account_id == account_id)
        if status is not None:
            query = query.where(t.c.status == status)
        if paused is not None:
            query = query.where(t.c.paused.is_(paused))
        if promised is not None:
            active = exists().where(
                collections_promises.c.case_id == t.c.case_id, collections_promises.c.state == "active"
            )
            query = query.where(active if promised else ~active)
        if collector_id is not None:
            query = query.where(t.c.collector_id == collector_id)
        if before is not None:
            query = query.where(tuple_(t.c.open_time, t.c.case_id) < tuple_(*before))
        rows = list(await self._session.execute(query))
        cases = await self._complete(rows)
        for case in cases:
            case.actions = []
        return cases

    # -- tasks ------------------------------------------------------------------------------------------

    async def add_task(self, task: Task) -> bool:
        t = collections_tasks
        result = await self._session.execute(
            insert(t).values(**_task_row(task)).on_conflict_do_nothing().returning(t.c.task_id)
        )
        return result.first() is not None

    async def get_task(self, task_id: uuid.UUID, for_update: bool = False) -> Task | None:
        t = collections_tasks
        query = select(t).where(t.c.task_id == task_id)
        if for_update:
            query = query.with_for_update()
        row = (await self._session.execute(query)).first()
        return _task(row) if row else None

    async def save_task(self, task: Task) -> None:
        t = collections_tasks
        await self._session.execute(update(t).where(t.c.task_id == task.task_id).values(**_task_row(task)))

    async def assign_open_tasks(self, case_id: uuid.UUID, collector_id: str) -> None:
        t = collections_tasks
        await self._session.execute(
            update(t).where(t.c.case_id == case_id, t.c.state == "open").values(collector_id=collector_id)
        )

    async def list_tasks(
        self,
        collector_id: str | None,
        case_id: uuid.UUID | None,
        state: str | None,
        after: tuple[date, uuid.UUID] | None,
        limit: int,
    ) -> list[Task]:
        """Tasks earliest due first (then by id), filtered."""
        t = collections_tasks
        query = select(t).order_by(t.c.due_date, t.c.task_id).limit(limit)
        if collector_id is not None:
            query = query.where(t.c.collector_id == collector_id)
        if case_id is not None:
            query = query.where(t.c.case_id == case_id)
        if state is not None:
            query = query.where(t.c.state == state)
        if after is not None:
            query = query.where(tuple_(t.c.due_date, t.c.task_id) > tuple_(*after))
        return [_task(row) for row in await self._session.execute(query)]

    # -- contact attempts ----------------------------------------------------------------------------

    async def add_contact_attempt(self, attempt: ContactAttempt) -> None:
        await self._session.execute(
            insert(collections_contact_attempts).values(
                attempt_id=attempt.attempt_id,
                case_id=attempt.case_id,
                account_id=attempt.account_id,
                channel=attempt.channel.value,
                outcome=attempt.outcome.value,
                note=attempt.note,
                actor=attempt.actor,
                contact_time=attempt.contact_time,
                record_time=attempt.record_time,
            )
        )

    async def list_contact_attempts(
        self, case_id: uuid.UUID, before: tuple[datetime, uuid.UUID] | None, limit: int
    ) -> list[ContactAttempt]:
        """The case's attempts, newest contact first (then by id)."""
        t = collections_contact_attempts
        query = (
            select(t)
            .where(t.c.case_id == case_id)
            .order_by(t.c.contact_time.desc(), t.c.attempt_id.desc())
            .limit(limit)
        )
        if before is not None:
            query = query.where(tuple_(t.c.contact_time, t.c.attempt_id) < tuple_(*before))
        return [
            ContactAttempt(
                attempt_id=r.attempt_id,
                case_id=r.case_id,
                account_id=r.account_id,
                channel=ContactChannel(r.channel),
                outcome=ContactOutcome(r.outcome),
                note=r.note,
                actor=r.actor,
                contact_time=r.contact_time,
                record_time=r.record_time,
            )
            for r in await self._session.execute(query)
        ]

    # -- aging -------------------------------------------------------------------------------------------

    def _aging_rows(self, as_of: date, currency_code: str | None, account_id: uuid.UUID | None) -> Any:
        """Each bill issued by `as_of` with something open at the end of that day (in its unit's
        time zone): total less what payments and credit notes allocated to it by then; with its
        days past due. A VOID bill counts until the credit note that voided it (which credited
        all it owed), so it owes nothing from then on."""
        b, u, pa, ca = bills, bill_units, payment_allocations, credit_note_allocations
        end = func.timezone(
            u.c.time_zone, cast(bindparam("as_of_next", as_of + timedelta(days=1), type_=Date), DateTime)
        )
        paid = (
            select(func.coalesce(func.sum(pa.c.amount), 0))
            .where(pa.c.bill_id == b.c.bill_id, pa.c.create_time < end)
            .scalar_subquery()
        )
        credited = (
            select(func.coalesce(func.sum(ca.c.amount), 0))
            .where(ca.c.bill_id == b.c.bill_id, ca.c.create_time < end)
            .scalar_subquery()
        )
        open_amount = (b.c.total - paid - credited).label("open_amount")
        days = (bindparam("as_of", as_of, type_=Date) - b.c.due_date).label("days_past_due")
        query = (
            select(b.c.account_id, b.c.currency_code, open_amount, days)
            .join(u, u.c.bill_unit_id == b.c.bill_unit_id)
            .where(
                b.c.status.in_(["issued", "partially_paid", "overdue", "paid", "void"]),
                b.c.issue_date <= as_of,
                or_(b.c.issue_time.is_(None), b.c.issue_time < end),
            )
        )
        if currency_code:
            query = query.where(b.c.currency_code == currency_code)
        if account_id is not None:
            query = query.where(b.c.account_id == account_id)
        return query.subquery()

    async def aging_totals(
        self, as_of: date, currency_code: str | None, account_id: uuid.UUID | None
    ) -> list[tuple[str, int, Decimal]]:
        """(currency, days past due, open amount) summed per currency and day."""
        rows = self._aging_rows(as_of, currency_code, account_id)
        query = (
            select(rows.c.currency_code, rows.c.days_past_due, func.sum(rows.c.open_amount).label("amount"))
            .where(rows.c.open_amount > 0)
            .group_by(rows.c.currency_code, rows.c.days_past_due)
        )
        return [(r.currency_code, int(r.days_past_due), _plain(r.amount)) for r in await self._session.execute(query)]

    async def aging_accounts(
        self,
        as_of: date,
        currency_code: str | None,
        account_id: uuid.UUID | None,
        after: tuple[uuid.UUID, str] | None,
        limit: int,
    ) -> list[tuple[uuid.UUID, str, list[tuple[int, Decimal]]]]:
        """One page of (account, currency) with receivables, by account then currency, each with
        its (days past due, open amount) per bill."""
        rows = self._aging_rows(as_of, currency_code, account_id)
        keys = (
            select(rows.c.account_id, rows.c.currency_code)
            .where(rows.c.open_amount > 0)
            .group_by(rows.c.account_id, rows.c.currency_code)
            .order_by(rows.c.account_id, rows.c.currency_code)
            .limit(limit)
        )
        if after is not None:
            keys = keys.where(tuple_(rows.c.account_id, rows.c.currency_code) > tuple_(*after))
        page = [(r.account_id, r.currency_code) for r in await self._session.execute(keys)]
        if not page:
            return []
        detail = select(rows.c.account_id, rows.c.currency_code, rows.c.days_past_due, rows.c.open_amount).where(
            rows.c.open_amount > 0,
            or_(*[and_(rows.c.account_id == a, rows.c.currency_code == c) for a, c in page]),
        )
        found: dict[tuple[uuid.UUID, str], list[tuple[int, Decimal]]] = {k: [] for k in page}
        for r in await self._session.execute(detail):
            found[(r.account_id, r.currency_code)].append((int(r.days_past_due), _plain(r.open_amount)))
        return [(a, c, found[(a, c)]) for a, c in page]

    async def billed_sales(
        self, as_of: date, days: int, currency_code: str | None, account_id: uuid.UUID | None
    ) -> dict[str, Decimal]:
        """Bills issued in the `days` days up to `as_of` (inclusive), summed per currency."""
        b = bills
        query = (
            select(b.c.currency_code, func.sum(b.c.total).label("amount"))
            .where(
                b.c.status != "draft",
                b.c.issue_date > as_of - timedelta(days=days),
                b.c.issue_date <= as_of,
            )
            .group_by(b.c.currency_code)
        )
        if currency_code:
            query = query.where(b.c.currency_code == currency_code)
        if account_id is not None:
            query = query.where(b.c.account_id == account_id)
        return {r.currency_code: _plain(r.amount) for r in await self._session.execute(query)}


def next_local_midnight(now: datetime, time_zone: str) -> datetime:
    """The start of the next local day: when a unit's entry is checked again."""
    return start_of_day(now.astimezone(ZoneInfo(time_zone)).date() + timedelta(days=1), time_zone)
