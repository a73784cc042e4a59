"""Conversions between protobuf time types and Python's, always timezone-aware UTC for instants."""

from __future__ import annotations

from datetime import UTC, date, datetime

from google.protobuf.timestamp_pb2 import Timestamp
from google.type import date_pb2

from evolutivo_runtime.errors import InvalidArgument

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def to_timestamp(instant: datetime | None) -> Timestamp | None:
    if instant is None:
        return None
    if instant.tzinfo is None:
        ts = Timestamp()
        ts.FromDatetime(instant.astimezone(UTC))  # naive: local time, as astimezone reads it
        return ts
    # Exact integer arithmetic, about 7x cheaper than Timestamp.FromDatetime (on the hot path:
    # two per charge in every ingest answer and ChargesCreated; docs/performance.md).
    delta = instant - _EPOCH
    return Timestamp(seconds=delta.days * 86400 + delta.seconds, nanos=delta.microseconds * 1000)


def from_timestamp(ts: Timestamp) -> datetime:
    return ts.ToDatetime(tzinfo=UTC)


def to_date(value: date | None) -> date_pb2.Date | None:
    if value is None:
        return None
    return date_pb2.Date(year=value.year, month=value.month, day=value.day)


def from_date(pb: date_pb2.Date, field: str) -> date:
    try:
        return date(pb.year, pb.month, pb.day)
    except ValueError:
        raise InvalidArgument(field, "must be a full calendar date (year, month and day)") from None
