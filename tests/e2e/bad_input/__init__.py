"""The bad-input suite's case tables (issue 9, item 4): for every RPC in protos/, requests a caller
may get wrong, the status each must get and the field its google.rpc.BadRequest must name.

A case is data: the full gRPC method, a name, a builder of the request from the seeded `World`
(the ids of real accounts, offers, bills... the suite made first), the expected code and, for
INVALID_ARGUMENT, the field path. tests/e2e/test_bad_input.py runs every case against the five
services and checks that the refusal changed no database.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import grpc
from google.protobuf.message import Message

from bad_input.world import World

# A request, or the messages of a client stream.
Request = Message | Sequence[Message]

INVALID = grpc.StatusCode.INVALID_ARGUMENT
NOT_FOUND = grpc.StatusCode.NOT_FOUND
FAILED = grpc.StatusCode.FAILED_PRECONDITION
EXISTS = grpc.StatusCode.ALREADY_EXISTS
ABORTED = grpc.StatusCode.ABORTED
OK = grpc.StatusCode.OK  # a read that must answer normally (e.g. SQL-looking search text), changing nothing
TOO_BIG = grpc.StatusCode.RESOURCE_EXHAUSTED  # a message over the server's receive limit


@dataclass(frozen=True)
class Case:
    # Full method, e.g. "/evolutivo.customer.v1.CustomerService/CreateAccount".
    method: str
    # What is wrong with the request, e.g. "negative amount".
    name: str
    build: Callable[[World], Request]
    code: grpc.StatusCode
    # The field path BadRequest must name (required with INVALID_ARGUMENT, e.g. "account.currency_code").
    field: str | None = None
    # The service whose replica 0 gets the call; None: the one that owns the method's package.
    service: str | None = None
    # "<service>.<table>" a refusal is documented to write (e.g. charging keeps refused usage as
    # rejected); every other table of every database must be unchanged.
    writes: frozenset[str] = frozenset()
    # The google.rpc.ErrorInfo reason, where the rule broken has a documented one.
    reason: str | None = None

    def __post_init__(self) -> None:
        if self.code == INVALID and not self.field:
            raise ValueError(f"{self.method} {self.name!r}: an INVALID_ARGUMENT case names its field")

    @property
    def id(self) -> str:
        where = f"@{self.service}" if self.service else ""
        return f"{self.method.rsplit('/', 1)[1]}{where}: {self.name}"


def case(
    method: str,
    name: str,
    build: Callable[[World], Request],
    code: grpc.StatusCode,
    field: str | None = None,
    **more: object,
) -> Case:
    return Case(method, name, build, code, field, **more)  # type: ignore[arg-type]
