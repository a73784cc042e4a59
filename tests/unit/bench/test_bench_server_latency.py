"""bench.server_latency: a quantile's bucket from two readings of a cumulative histogram."""

from __future__ import annotations

from bench.server_latency import quantile_bound_ms

INF = float("inf")


def test_the_bucket_of_the_quantile_among_the_calls_between_the_readings() -> None:
    # Before: 100 calls, all slow (old history must not count). Between: 1,000 calls, 985 within
    # 1 ms, 995 within 2.5 ms, all within 5 ms.
    before = {0.001: 0.0, 0.0025: 0.0, 0.005: 0.0, 1.0: 100.0, INF: 100.0}
    after = {0.001: 985.0, 0.0025: 995.0, 0.005: 1000.0, 1.0: 1100.0, INF: 1100.0}
    assert quantile_bound_ms(before, after, 0.50) == 1.0
    assert quantile_bound_ms(before, after, 0.99) == 2.5
    assert quantile_bound_ms(before, after, 0.999) == 5.0


def test_no_calls_no_bound() -> None:
    same = {0.001: 5.0, INF: 5.0}
    assert quantile_bound_ms(same, same, 0.99) is None
