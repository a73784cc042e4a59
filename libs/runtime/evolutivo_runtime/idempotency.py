"""AIP-155 request ids: a retried call returns the first call's response instead of a second effect.

Each service keeps a `request_log` table in its own database (created by its own migration with
`create_request_log_table`). A call claims its request id inside the transaction of its change; a
concurrent retry blocks on the claim until the first commits, then reads the stored response.
"""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, TypeVar

from google.protobuf.message import Message
from sqlalchemy import Column, DateTime, LargeBinary, MetaData, Table, Text, Uuid, func, select, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from evolutivo_runtime.errors import InvalidArgument

if TYPE_CHECKING:
    from evolutivo_runtime.uow import UnitOfWork

M = TypeVar("M", bound=Message)
U = TypeVar("U", bound="UnitOfWork")


def request_log_table(metadata: MetaData) -> Table:
    return Table(
        "request_log",
        metadata,
        Column("request_id", Uuid, primary_key=True),
        # The RPC the id was first used with, e.g. "SuspendAccount".
        Column("method", Text, nullable=False),
        # The serialized response, stored in the transaction of the change.
        Column("response", LargeBinary),
        Column("create_time", DateTime(timezone=True), nullable=False, server_default=func.now()),
    )


def create_request_log_table(op: Any) -> None:
    """The request log as of its first migration in each service. Frozen, like the outbox."""
    import sqlalchemy as sa

    op.create_table(
        "request_log",
        sa.Column("request_id", sa.Uuid, primary_key=True),
        sa.Column("method", sa.Text, nullable=False),
        sa.Column("response", sa.LargeBinary),
        sa.Column("create_time", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
    )


class RequestLog:
    def __init__(self, session: AsyncSession, table: Table) -> None:
        self._session = session
        self._table = table

    async def claim(self, request_id: uuid.UUID, method: str, response_type: type[M]) -> M | None:
        """Claims the id for this call. Returns None when the call is new (go ahead, then `record`),
        or the first call's response when it is a retry."""
        t = self._table
        claimed = await self._session.execute(
            insert(t).values(request_id=request_id, method=method).on_conflict_do_nothing().returning(t.c.request_id)
        )
        if claimed.first() is not None:
            return None
        row = (await self._session.execute(select(t.c.method, t.c.response).where(t.c.request_id == request_id))).one()
        if row.method != method:
            raise InvalidArgument("request_id", f"was already used for {row.method}; use a new id for each call")
        return response_type.FromString(row.response or b"")

    async def record(self, request_id: uuid.UUID, response: Message) -> None:
        t = self._table
        await self._session.execute(
            update(t).where(t.c.request_id == request_id).values(response=response.SerializeToString())
        )


async def run_idempotent(
    uow: U,
    request_id: uuid.UUID | None,
    method: str,
    response_type: type[M],
    perform: Callable[[U], Awaitable[M]],
) -> M:
    """Runs `perform` (the change and the response it makes) in one transaction, once per request id.

    Without a request id the call simply runs. With one, a retry gets the first response back and
    `perform` does not run again."""
    async with uow:
        if request_id is not None:
            if uow.requests is None:
                raise RuntimeError("this unit of work has no request log")
            prior = await uow.requests.claim(request_id, method, response_type)
            if prior is not None:
                return prior
        response = await perform(uow)
        if request_id is not None and uow.requests is not None:
            await uow.requests.record(request_id, response)
        await uow.commit()
        return response
