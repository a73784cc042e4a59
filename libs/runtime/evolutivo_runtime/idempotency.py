"""AIP-155 request ids: a retried call returns the first call's response instead of a second effect.

Each service keeps a `request_log` table in its own database (created by its own migration with
`create_request_log_table`). A call claims its request id inside the transaction of its change; a
concurrent retry blocks on the claim until the first commits, then reads the stored response.

A request id names one request: reused for another method, or with another request (a different
payload: its SHA-256, which the server's AuthGuard takes of every mutating call's request),
it is refused with INVALID_ARGUMENT on `request_id`, changing nothing. The digest is kept in the
`method` column after the method's name ("CreateAccount sha256=<hex>"), so no service's frozen
request_log table had to change; rows without one (claimed before, or by a consumer, which has no
request) are matched on the method only.
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
from evolutivo_runtime.security.audit import current_audit

if TYPE_CHECKING:
    from evolutivo_runtime.uow import UnitOfWork

M = TypeVar("M", bound=Message)

# Separates the method from the request's digest in request_log.method.
_DIGEST_MARK = " sha256="
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
        audit = current_audit.get()
        digest = audit.request_digest if audit is not None else ""
        key = f"{method}{_DIGEST_MARK}{digest}" if digest else method
        claimed = await self._session.execute(
            insert(t).values(request_id=request_id, method=key).on_conflict_do_nothing().returning(t.c.request_id)
        )
        if claimed.first() is not None:
            return None
        row = (await self._session.execute(select(t.c.method, t.c.response).where(t.c.request_id == request_id))).one()
        first_method, _, first_digest = str(row.method).partition(_DIGEST_MARK)
        if first_method != method:
            raise InvalidArgument("request_id", f"was already used for {first_method}; use a new id for each call")
        if digest and first_digest and digest != first_digest:
            raise InvalidArgument(
                "request_id", "was already used with another request; use a new id for each call", "REQUEST_ID_REUSED"
            )
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
