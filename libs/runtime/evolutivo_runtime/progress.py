"""When each background loop last went round: a loop that stands still while its process lives
(a database connection that hangs without an error, a lock never granted) shows in no other
metric, and is what EvolutivoBackgroundLoopStuck (deploy/k8s/monitoring) looks for."""

from __future__ import annotations

from prometheus_client import Gauge

PROGRESS = Gauge(
    "evolutivo_background_progress_timestamp_seconds",
    "When a background loop (the outbox relay, each consumer) last went round, as Unix time",
    ["task"],
)

RELAY_TASK = "outbox-relay"


def consumer_task(durable: str) -> str:
    """A consumer's task name, as its supervisor and its heartbeat give it."""
    return f"consumer:{durable}"


def heartbeat(task: str) -> Gauge:
    """The task's series, at now: call `set_to_current_time()` on it each time round."""
    beat = PROGRESS.labels(task)
    beat.set_to_current_time()
    return beat
