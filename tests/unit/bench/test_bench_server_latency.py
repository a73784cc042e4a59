"""bench.server_latency: a quantile's bucket from two readings of a cumulative histogram."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Histogram, start_http_server

from bench.server_latency import HANDLING, LOOP_LAG, buckets, quantile_bound_ms

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


async def test_the_buckets_of_one_histogram_and_labels_summed_over_replicas() -> None:
    # Two replicas' endpoints, each with the handling histogram of two methods and a loop lag one.
    servers = []
    for handled in (1, 2):
        registry = CollectorRegistry()
        handling = Histogram(HANDLING, "", ["grpc_method"], buckets=(0.001, 0.01), registry=registry)
        for _ in range(handled):
            handling.labels("GetBalance").observe(0.0005)
        handling.labels("ListEntries").observe(0.005)
        Histogram(LOOP_LAG, "", buckets=(0.001, 0.01), registry=registry).observe(0.005)
        server, thread = start_http_server(0, addr="127.0.0.1", registry=registry)
        servers.append((server, thread))
    urls = [f"http://127.0.0.1:{server.server_port}/metrics" for server, _ in servers]
    try:
        assert await buckets(urls, HANDLING, grpc_method="GetBalance") == {0.001: 3.0, 0.01: 3.0, INF: 3.0}
        assert await buckets(urls, LOOP_LAG) == {0.001: 0.0, 0.01: 2.0, INF: 2.0}
    finally:
        for server, thread in servers:
            server.shutdown()
            thread.join()
