"""The services' streams: a full stream refuses a new event (the outbox keeps it) instead of
dropping the oldest stored one."""

from __future__ import annotations

import dataclasses
import uuid

import pytest
from evolutivo_runtime.messaging.streams import declare_service_stream, stream_name
from nats.js import JetStreamContext
from nats.js.api import DiscardPolicy, RetentionPolicy, StorageType, StreamConfig
from nats.js.errors import APIError
from runtime_helpers import DUPLICATE_WINDOW  # type: ignore[import-not-found,unused-ignore]


async def test_a_stream_declared_over_an_old_one_refuses_new_events_when_full(js: JetStreamContext) -> None:
    service = f"t{uuid.uuid4().hex[:12]}"
    name = stream_name(service)
    # As streams were declared before: the oldest event dropped to make room.
    old = StreamConfig(
        name=name,
        subjects=[f"evolutivo.{service}.>"],
        storage=StorageType.FILE,
        retention=RetentionPolicy.LIMITS,
        discard=DiscardPolicy.OLD,
        num_replicas=1,
        duplicate_window=DUPLICATE_WINDOW,
    )
    await js.add_stream(old)
    try:
        await declare_service_stream(js, service=service, replicas=1, duplicate_window=DUPLICATE_WINDOW)
        config = (await js.stream_info(name)).config
        assert config.discard == DiscardPolicy.NEW

        # With a limit, the event past it is refused, and the stored ones stay.
        await js.update_stream(dataclasses.replace(config, max_msgs=2))
        subject = f"evolutivo.{service}.v1.thing.happened"
        for n in range(2):
            await js.publish(subject, b"%d" % n)
        with pytest.raises(APIError, match="maximum messages exceeded"):
            await js.publish(subject, b"2")
        assert (await js.stream_info(name)).state.messages == 2
        assert (await js.get_msg(name, seq=1)).data == b"0"
    finally:
        await js.delete_stream(name)
