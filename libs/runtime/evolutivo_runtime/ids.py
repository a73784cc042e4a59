"""Parsing of ids received over gRPC, with errors that name the field."""

from __future__ import annotations

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
