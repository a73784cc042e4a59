"""transient_errors on the exception the libraries really raise when no PostgreSQL answers: a
refused connection is the database's out of reach under both event loops the services may run
(uvloop's Cython frames are named after its sources). Nothing listens on port 1, so no server is
needed; an OSError of our own inside a database call is in tests/integration/runtime/
test_runtime_interceptor.py."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from typing import Any

import grpc
import pytest
import uvloop
from evolutivo_runtime import transient_errors
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine

NOWHERE = "postgresql+asyncpg://postgres@127.0.0.1:1/nowhere"


async def _refused() -> BaseException:
    engine = create_async_engine(NOWHERE)
    try:
        async with engine.connect() as conn:
            await conn.execute(text("SELECT 1"))
    except Exception as error:
        return error
    finally:
        await engine.dispose()
    raise AssertionError("connected to port 1")


def _run(main: Callable[[], Coroutine[Any, Any, BaseException]], loop: str) -> BaseException:
    factory = uvloop.new_event_loop if loop == "uvloop" else asyncio.new_event_loop
    with asyncio.Runner(loop_factory=factory) as runner:
        return runner.run(main())


@pytest.mark.parametrize("loop", ["asyncio", "uvloop"])
def test_a_refused_connection_is_the_database_out_of_reach(loop: str) -> None:
    error = _run(_refused, loop)
    assert isinstance(error, ConnectionRefusedError)
    answer = transient_errors.retryable(error)
    assert answer is not None
    assert (answer.code, answer.reason) == (grpc.StatusCode.UNAVAILABLE, "DATABASE_UNAVAILABLE")
