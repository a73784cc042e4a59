"""to_timestamp computes seconds and nanos itself (a hot path): it must agree with protobuf's own
Timestamp.FromDatetime for every instant, offset and microsecond, and round-trip exactly."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

from evolutivo_runtime.timestamps import from_timestamp, to_timestamp
from google.protobuf.timestamp_pb2 import Timestamp
from hypothesis import given
from hypothesis import strategies as st

# Timestamp's range: 0001-01-01 to 9999-12-31 (offsets kept inside it).
instants = st.datetimes(min_value=datetime(1, 1, 2), max_value=datetime(9999, 12, 30))
offsets = st.integers(min_value=-14 * 60, max_value=14 * 60).map(lambda m: timezone(timedelta(minutes=m)))


def reference(instant: datetime) -> Timestamp:
    ts = Timestamp()
    ts.FromDatetime(instant.astimezone(UTC))
    return ts


@given(instants, offsets)
def test_aware_instants_match_protobuf(naive: datetime, offset: timezone) -> None:
    instant = naive.replace(tzinfo=offset)
    assert to_timestamp(instant) == reference(instant)
    assert from_timestamp(to_timestamp(instant) or Timestamp()) == instant


def test_before_the_epoch_nanos_stay_positive() -> None:
    instant = datetime(1969, 12, 31, 23, 59, 59, 500_000, tzinfo=UTC)
    assert to_timestamp(instant) == Timestamp(seconds=-1, nanos=500_000_000)


def test_naive_is_read_as_local_time_as_before() -> None:
    naive = datetime(2026, 3, 29, 1, 30)
    assert to_timestamp(naive) == reference(naive)


def test_none_stays_none() -> None:
    assert to_timestamp(None) is None
