"""Loads and stores collections notices with their deliveries, and the dunning letters' PDFs."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import date, datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from evolutivo_billing.adapters.collections_tables import collections_notice_documents, collections_notices
from evolutivo_billing.adapters.orm import bills
from evolutivo_billing.domain.collections import ActionType
from evolutivo_billing.domain.delivery import DeliveryState, NoticeDelivery, NoticeOnlyState
from evolutivo_billing.domain.notices import Notice, NoticeBill, NoticeDocument

_STATES: dict[str, DeliveryState | NoticeOnlyState] = {
    **{s.value: s for s in DeliveryState},
    **{s.value: s for s in NoticeOnlyState},
}


def _plain(value: Decimal) -> Decimal:
    """NUMERIC(38, 9) reads back with nine decimals; drop the trailing zeros."""
    normal = value.normalize()
    return normal.quantize(Decimal(1)) if normal == normal.to_integral_value() else normal


def _bill_json(b: NoticeBill) -> dict[str, str]:
    return {
        "bill_id": str(b.bill_id),
        "bill_number": b.bill_number,
        "issue_date": b.issue_date.isoformat(),
        "due_date": b.due_date.isoformat(),
        "total": str(b.total),
        "open_amount": str(b.open_amount),
    }


def _bill(data: dict[str, str]) -> NoticeBill:
    return NoticeBill(
        uuid.UUID(data["bill_id"]),
        data["bill_number"],
        date.fromisoformat(data["issue_date"]),
        date.fromisoformat(data["due_date"]),
        Decimal(data["total"]),
        Decimal(data["open_amount"]),
    )


def _delivery_row(d: NoticeDelivery) -> dict[str, Any]:
    return {
        "state": d.state.value,
        "attempts": d.attempts,
        "next_attempt_time": d.next_attempt_time,
        "last_attempt_time": d.last_attempt_time,
        "last_error": d.last_error,
        "sent_time": d.sent_time,
        "recipients": list(d.recipients),
        "message_id": d.message_id,
    }


def _notice(row: Any) -> Notice:
    return Notice(
        notice_id=row.notice_id,
        case_id=row.case_id,
        action_sequence=row.action_sequence,
        account_id=row.account_id,
        kind=ActionType(row.kind),
        template=row.template,
        currency_code=row.currency_code,
        time_zone=row.time_zone,
        overdue_amount=_plain(row.overdue_amount),
        days_past_due=row.days_past_due,
        bills=tuple(_bill(b) for b in row.bills),
        late_fees=_plain(row.late_fees),
        create_time=row.create_time,
        delivery=NoticeDelivery(
            notice_id=row.notice_id,
            account_id=row.account_id,
            state=_STATES[row.state],
            create_time=row.create_time,
            attempts=row.attempts,
            next_attempt_time=row.next_attempt_time,
            last_attempt_time=row.last_attempt_time,
            last_error=row.last_error,
            sent_time=row.sent_time,
            recipients=tuple(row.recipients),
            message_id=row.message_id,
        ),
    )


class NoticeRepository:
    def __init__(self, session: AsyncSession) -> None:
        self._session = session

    async def overdue_bills(self, bill_ids: Sequence[uuid.UUID]) -> tuple[NoticeBill, ...]:
        """What a notice lists of these bills: number, dates, total and what is still to pay."""
        if not bill_ids:
            return ()
        b = bills
        query = select(
            b.c.bill_id,
            b.c.bill_number,
            b.c.issue_date,
            b.c.due_date,
            b.c.total,
            (b.c.total - b.c.paid_amount - b.c.credited_amount).label("open_amount"),
        ).where(b.c.bill_id.in_(list(bill_ids)))
        return tuple(
            NoticeBill(r.bill_id, r.bill_number or "", r.issue_date, r.due_date, _plain(r.total), _plain(r.open_amount))
            for r in await self._session.execute(query)
        )

    async def add(self, notice: Notice) -> bool:
        """Keeps the notice unless its action made one already; returns whether it was added."""
        t = collections_notices
        result = await self._session.execute(
            insert(t)
            .values(
                notice_id=notice.notice_id,
                case_id=notice.case_id,
                action_sequence=notice.action_sequence,
                account_id=notice.account_id,
                kind=notice.kind.value,
                template=notice.template,
                currency_code=notice.currency_code,
                time_zone=notice.time_zone,
                overdue_amount=notice.overdue_amount,
                days_past_due=notice.days_past_due,
                bills=[_bill_json(b) for b in notice.bills],
                late_fees=notice.late_fees,
                create_time=notice.create_time,
                **_delivery_row(notice.delivery),
            )
            .on_conflict_do_nothing()
            .returning(t.c.notice_id)
        )
        return result.first() is not None

    async def get(self, notice_id: uuid.UUID) -> Notice | None:
        t = collections_notices
        row = (await self._session.execute(select(t).where(t.c.notice_id == notice_id))).first()
        return _notice(row) if row else None

    async def claim_due(self, now: datetime) -> Notice | None:
        """The earliest due PENDING notice no other transaction holds, locked until this
        transaction ends (`SKIP LOCKED`: replicas claim different ones)."""
        t = collections_notices
        query = (
            select(t)
            .where(t.c.state == DeliveryState.PENDING.value, t.c.next_attempt_time <= now)
            .order_by(t.c.next_attempt_time, t.c.notice_id)
            .limit(1)
            .with_for_update(skip_locked=True)
        )
        row = (await self._session.execute(query)).first()
        return _notice(row) if row else None

    async def save_delivery(self, delivery: NoticeDelivery) -> None:
        t = collections_notices
        await self._session.execute(
            update(t).where(t.c.notice_id == delivery.notice_id).values(**_delivery_row(delivery))
        )

    async def document(self, notice_id: uuid.UUID) -> NoticeDocument | None:
        t = collections_notice_documents
        row = (await self._session.execute(select(t).where(t.c.notice_id == notice_id))).first()
        if row is None:
            return None
        return NoticeDocument(
            row.notice_id, row.content_type, row.file_name, bytes(row.content), row.sha256, row.render_time
        )

    async def add_document(self, document: NoticeDocument) -> None:
        """Keeps the letter unless it has one already (the first rendering stays)."""
        t = collections_notice_documents
        await self._session.execute(
            insert(t)
            .values(
                notice_id=document.notice_id,
                content_type=document.content_type,
                file_name=document.file_name,
                content=document.content,
                sha256=document.sha256,
                render_time=document.render_time,
            )
            .on_conflict_do_nothing(index_elements=[t.c.notice_id])
        )
