"""What a message type can hold, worked out once per type for the checks every request goes
through (sensitive_data.py, security/interceptor.py): a batch of 500 usage events is ~2,500
fields, and a walk that descends into every nested message (each event's Timestamp...) costs
more than the rating of the batch's cheapest events. A check skips a nested message whose type
cannot hold anything it looks for."""

from __future__ import annotations

import functools
from collections.abc import Callable

from google.protobuf.descriptor import Descriptor, FieldDescriptor

FieldTest = Callable[[FieldDescriptor], bool]


@functools.cache
def reaches(descriptor: Descriptor, test: FieldTest) -> bool:
    """Whether a field of this message type, or of a message type inside it at any depth (map
    entries included), passes `test`. Cached per type and test: `test` must be a module-level
    function, so that it is the same object on every call."""
    return _search(descriptor, test, set())


def _search(descriptor: Descriptor, test: FieldTest, seen: set[Descriptor]) -> bool:
    # Depth first over the types, each once: a recursive type (Struct -> Value -> Struct) is
    # searched when it is first met, so skipping it when it comes round again loses nothing.
    seen.add(descriptor)
    for field in descriptor.fields:
        if test(field):
            return True
        nested = field.message_type
        if nested is not None and nested not in seen and _search(nested, test, seen):
            return True
    return False
