"""Domain events -> the protobuf events customer publishes, and their subjects.

`encode` dispatches on the event's type; each feature's module registers its own events
(e.g. adapters/contact_events.py) with `@encode.register`.
"""

from __future__ import annotations

import functools

from evolutivo.customer.v1 import events_pb2
from evolutivo_runtime.timestamps import to_timestamp
from google.protobuf.message import Message

from evolutivo_customer.adapters import proto
from evolutivo_customer.domain import model

SUBJECT = "evolutivo.customer.v1"


@functools.singledispatch
def encode(event: object) -> tuple[str, Message]:
    raise TypeError(f"no protobuf event for {type(event).__name__}")


@encode.register
def _(event: model.AccountCreated) -> tuple[str, Message]:
    return f"{SUBJECT}.account.created", events_pb2.AccountCreated(account=proto.account_to_pb(event.account))


@encode.register
def _(event: model.AccountUpdated) -> tuple[str, Message]:
    return f"{SUBJECT}.account.updated", events_pb2.AccountUpdated(
        account=proto.account_to_pb(event.account), changed_fields=event.changed_fields
    )


@encode.register
def _(event: model.BillingProfileChanged) -> tuple[str, Message]:
    return f"{SUBJECT}.account.billing_profile_changed", events_pb2.BillingProfileChanged(
        account=proto.account_to_pb(event.account),
        previous=proto.profile_to_pb(event.previous, event.account.details.currency_code),
        change_time=to_timestamp(event.change_time),
        effective_from_next_cycle=True,
    )


@encode.register
def _(event: model.AccountStatusChanged) -> tuple[str, Message]:
    account = proto.account_to_pb(event.account)
    return f"{SUBJECT}.account.status_changed", events_pb2.AccountStatusChanged(
        account=account,
        previous_status=proto._STATUSES_PB[event.previous_status],  # type: ignore[arg-type]
        change=account.last_status_change,
        services=[proto.service_to_pb(s) for s in event.services],
    )


@encode.register
def _(event: model.PersonalDataErased) -> tuple[str, Message]:
    return f"{SUBJECT}.account.personal_data_erased", events_pb2.PersonalDataErased(
        account=proto.account_to_pb(event.account), erase_time=to_timestamp(event.erase_time)
    )


@encode.register
def _(event: model.ServiceChanged) -> tuple[str, Message]:
    kind = events_pb2.CHANGE_KIND_ADDED if event.previous_status is None else events_pb2.CHANGE_KIND_UPDATED
    return f"{SUBJECT}.provisioned_service.changed", events_pb2.ProvisionedServiceChanged(
        kind=kind,
        service=proto.service_to_pb(event.service),
        previous_status=proto.service_status_to_pb(event.previous_status),  # type: ignore[arg-type]
    )
