"""JetStream streams, named by convention and declared idempotently by whoever needs them.

Each service publishes into its own stream, EVOLUTIVO_<SERVICE>, on subjects
"evolutivo.<service>.>" (e.g. "evolutivo.customer.v1.account.created"). Dead letters of every
service go to EVOLUTIVO_DLQ on "evolutivo.dlq.<service>.<consumer>".
"""

from __future__ import annotations

import logging

from nats.js import JetStreamContext
from nats.js.api import DiscardPolicy, RetentionPolicy, StorageType, StreamConfig
from nats.js.errors import NotFoundError

log = logging.getLogger(__name__)

DLQ_STREAM = "EVOLUTIVO_DLQ"


def stream_name(service: str) -> str:
    return f"EVOLUTIVO_{service.upper()}"


def service_subjects(service: str) -> str:
    return f"evolutivo.{service}.>"


def dlq_subject(service: str, consumer: str) -> str:
    return f"evolutivo.dlq.{service}.{consumer}"


def _config(name: str, subjects: list[str], replicas: int, duplicate_window: float) -> StreamConfig:
    return StreamConfig(
        name=name,
        subjects=subjects,
        storage=StorageType.FILE,
        retention=RetentionPolicy.LIMITS,
        # Never drop a new event because the stream is full: publishing fails loudly instead
        # and the outbox keeps the event until there is room.
        discard=DiscardPolicy.NEW,
        num_replicas=replicas,
        duplicate_window=duplicate_window,
    )


async def declare_stream(js: JetStreamContext, config: StreamConfig) -> None:
    """Creates the stream, or brings an existing one to this configuration."""
    assert config.name is not None
    try:
        await js.stream_info(config.name)
    except NotFoundError:
        try:
            await js.add_stream(config)
            log.info("stream created", extra={"stream": config.name})
            return
        except Exception:
            # Another replica created it between our two calls; fall through to update.
            await js.stream_info(config.name)
    await js.update_stream(config)


async def declare_service_stream(js: JetStreamContext, service: str, replicas: int, duplicate_window: float) -> None:
    await declare_stream(js, _config(stream_name(service), [service_subjects(service)], replicas, duplicate_window))


async def declare_dlq_stream(js: JetStreamContext, replicas: int, duplicate_window: float) -> None:
    await declare_stream(js, _config(DLQ_STREAM, ["evolutivo.dlq.>"], replicas, duplicate_window))
