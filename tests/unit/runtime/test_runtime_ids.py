"""Ids: parsing with errors that name the field, and new random UUIDs."""

from __future__ import annotations

import os
import uuid

import pytest
from evolutivo_runtime.errors import InvalidArgument
from evolutivo_runtime.ids import new_uuid, parse_request_id, parse_uuid


def test_new_ids_are_version_4_uuids_and_do_not_repeat() -> None:
    made = [new_uuid() for _ in range(100_000)]
    assert all(u.version == 4 and u.variant == uuid.RFC_4122 for u in made)
    assert len(set(made)) == len(made)


def test_a_forked_child_draws_other_ids_than_its_parent() -> None:
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: its next ids, to the parent; never back into pytest
        try:
            os.close(read)
            os.write(write, b"".join(new_uuid().bytes for _ in range(4)))
        finally:
            os._exit(0)
    os.close(write)
    parents = [new_uuid() for _ in range(4)]
    with os.fdopen(read, "rb") as pipe:
        received = pipe.read()
    os.waitpid(pid, 0)
    childs = [uuid.UUID(bytes=received[i : i + 16]) for i in range(0, 64, 16)]
    assert len(childs) == 4 and not set(childs) & set(parents)


def test_ids_received_are_parsed_or_refused_naming_the_field() -> None:
    value = uuid.uuid4()
    assert parse_uuid("account_id", str(value)) == value
    assert parse_request_id("") is None
    with pytest.raises(InvalidArgument) as missing:
        parse_uuid("account_id", "")
    assert (missing.value.field, missing.value.rule) == ("account_id", "is required")
    with pytest.raises(InvalidArgument) as malformed:
        parse_request_id("not-a-uuid")
    assert (malformed.value.field, malformed.value.rule) == ("request_id", "must be a UUID")
