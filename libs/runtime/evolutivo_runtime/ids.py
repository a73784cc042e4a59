"""Ids: parsing those received over gRPC, with errors that name the field, and making new ones."""

from __future__ import annotations

import os
import random
import uuid

from evolutivo_runtime.errors import InvalidArgument


def parse_uuid(field: str, value: str) -> uuid.UUID:
    if not value:
        raise InvalidArgument(field, "is required")
    try:
        return uuid.UUID(value)
    except ValueError:
        raise InvalidArgument(field, "must be a UUID") from None


def parse_request_id(value: str, field: str = "request_id") -> uuid.UUID | None:
    """AIP-155 request ids are optional UUIDs: without one a call is simply not deduplicated."""
    return parse_uuid(field, value) if value else None


# New ids must be unique, not secret or unpredictable (charges, ledger entries, events, request
# ids). uuid.uuid4 reads os.urandom per id: a system call (getrandom) that hands the interpreter
# lock to the process's other threads (gRPC's, the relay's); it was ~4% of charging's CPU on the
# batch path, one per charge (docs/performance.md, "Twelfth round"). These bits come from a
# generator seeded once from os.urandom (2,496 bytes: as unlikely to repeat across processes as
# uuid4's), seeded again in a forked child so that parent and child never share a stream. The
# generator is predictable from enough of its output: no such id may ever grant access by being
# known (tokens and secrets come from `secrets`, docs/security.md); the ids here are names, each
# call that uses one is authorised on its own.
_bits = random.Random()
os.register_at_fork(after_in_child=_bits.seed)


def new_uuid() -> uuid.UUID:
    """A random (version 4) UUID."""
    return uuid.UUID(int=_bits.getrandbits(128), version=4)
