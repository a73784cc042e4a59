"""Domain events -> the protobuf events billing publishes, and their subjects."""

from __future__ import annotations

from evolutivo.billing.v1 import events_pb2
from google.protobuf.message import Message

from evolutivo_billing.adapters import proto
from evolutivo_billing.domain.model import BillUnitCreated

BILL_UNIT_CREATED = "evolutivo.billing.v1.bill_unit.created"


def encode(event: object) -> tuple[str, Message]:
    match event:
        case BillUnitCreated(bill_unit=unit):
            return BILL_UNIT_CREATED, events_pb2.BillUnitCreated(bill_unit=proto.unit_to_pb(unit))
    raise TypeError(f"no protobuf event for {type(event).__name__}")
