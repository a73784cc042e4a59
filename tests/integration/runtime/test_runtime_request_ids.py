"""AIP-155 request ids on a real PostgreSQL (evolutivo_runtime.idempotency): a retry of the same
request gets the first response; the id reused with another request, or for another method, is
refused with INVALID_ARGUMENT on request_id and changes nothing."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
from evolutivo_balance.adapters.orm import outbox, request_log
from evolutivo_balance.entrypoints.app import MIGRATIONS as BALANCE_MIGRATIONS
from evolutivo_runtime.clock import SystemClock
from evolutivo_runtime.db import create_engine, session_factory
from evolutivo_runtime.errors import InvalidArgument
from evolutivo_runtime.idempotency import run_idempotent
from evolutivo_runtime.security.audit import AuditContext, current_audit, request_digest
from evolutivo_runtime.uow import UnitOfWork
from google.protobuf.wrappers_pb2 import StringValue
from sqlalchemy import func, select
from support.databases import MigratedDatabase

FIRST = uuid.UUID(int=7)


@contextmanager
def calling(request: StringValue | None) -> Iterator[None]:
    """What the AuthGuard sets up for a mutating call with `request` (None: no call, e.g. a consumer)."""
    if request is None:
        yield
        return
    audit = AuditContext("tester", "dev", "/t/Do", "", {}, None, SystemClock(), request_digest=request_digest(request))
    token = current_audit.set(audit)
    try:
        yield
    finally:
        current_audit.reset(token)


async def test_a_request_id_names_one_request(migrated_database: MigratedDatabase) -> None:
    engine = create_engine(await migrated_database("reqids", BALANCE_MIGRATIONS))
    sessions = session_factory(engine)
    runs: list[str] = []

    async def do(request: StringValue | None, method: str = "Do", request_id: uuid.UUID = FIRST) -> str:
        async def perform(uow: UnitOfWork) -> StringValue:
            runs.append(request.value if request else "")
            return StringValue(value=f"first: {request.value if request else ''}")

        with calling(request):
            uow = UnitOfWork(sessions, outbox, SystemClock(), request_log=request_log)
            return (await run_idempotent(uow, request_id, method, StringValue, perform)).value

    try:
        assert await do(StringValue(value="a")) == "first: a"
        assert await do(StringValue(value="a")) == "first: a"  # a retry: the first response
        with pytest.raises(InvalidArgument) as reused:
            await do(StringValue(value="b"))
        assert (reused.value.field, reused.value.reason) == ("request_id", "REQUEST_ID_REUSED")
        with pytest.raises(InvalidArgument) as other_method:
            await do(StringValue(value="a"), method="Other")
        assert other_method.value.field == "request_id"
        # Without a call's digest (a consumer, or a row claimed before digests): the method decides.
        assert await do(None) == "first: a"
        assert await do(None, request_id=uuid.UUID(int=8)) == "first: "
        assert await do(StringValue(value="c"), request_id=uuid.UUID(int=8)) == "first: "
        assert runs == ["a", ""]
        async with engine.connect() as conn:
            assert await conn.scalar(select(func.count()).select_from(request_log)) == 2
    finally:
        await engine.dispose()
