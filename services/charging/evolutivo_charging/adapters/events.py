"""Domain events -> the protobuf events charging publishes, and their subjects. None yet."""

from __future__ import annotations

from google.protobuf.message import Message


def encode(event: object) -> tuple[str, Message]:
    raise TypeError(f"no protobuf event for {type(event).__name__}")
