"""The request checks skip nested messages whose type cannot hold what they look for
(server/descriptors.py): what a type can hold is worked out exactly, recursive types included, and
what the checks find deep inside a request is unchanged."""

from __future__ import annotations

from typing import Any

from evolutivo_runtime.security.interceptor import oversized_field
from evolutivo_runtime.server.descriptors import reaches
from evolutivo_runtime.server.sensitive_data import find_card_data
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory, struct_pb2, timestamp_pb2
from google.protobuf.descriptor import FieldDescriptor

T = descriptor_pb2.FieldDescriptorProto
OPTIONAL, REPEATED = T.LABEL_OPTIONAL, T.LABEL_REPEATED


def _is_text(field: FieldDescriptor) -> bool:
    return field.type == FieldDescriptor.TYPE_STRING


def _is_list(field: FieldDescriptor) -> bool:
    return field.is_repeated


def _types() -> descriptor_pool.DescriptorPool:
    """Outer { Middle middle; Timestamp at }  Middle { repeated int32 xs; Inner inner; Timestamp at }
    Inner { int32 security_code }  Node { Node next; int32 n }  (Node refers to itself)."""
    file = descriptor_pb2.FileDescriptorProto(
        name="nested.proto", package="nested", syntax="proto3", dependency=["google/protobuf/timestamp.proto"]
    )
    outer = file.message_type.add(name="Outer")
    outer.field.add(name="middle", number=1, type=T.TYPE_MESSAGE, type_name=".nested.Middle", label=OPTIONAL)
    outer.field.add(name="at", number=2, type=T.TYPE_MESSAGE, type_name=".google.protobuf.Timestamp", label=OPTIONAL)
    middle = file.message_type.add(name="Middle")
    middle.field.add(name="xs", number=1, type=T.TYPE_INT32, label=REPEATED)
    middle.field.add(name="inner", number=2, type=T.TYPE_MESSAGE, type_name=".nested.Inner", label=OPTIONAL)
    middle.field.add(name="at", number=3, type=T.TYPE_MESSAGE, type_name=".google.protobuf.Timestamp", label=OPTIONAL)
    inner = file.message_type.add(name="Inner")
    inner.field.add(name="security_code", number=1, type=T.TYPE_INT32, label=OPTIONAL)
    node = file.message_type.add(name="Node")
    node.field.add(name="next", number=1, type=T.TYPE_MESSAGE, type_name=".nested.Node", label=OPTIONAL)
    node.field.add(name="n", number=2, type=T.TYPE_INT32, label=OPTIONAL)
    pool = descriptor_pool.DescriptorPool()
    timestamp = descriptor_pb2.FileDescriptorProto()
    timestamp_pb2.DESCRIPTOR.CopyToProto(timestamp)
    pool.Add(timestamp)
    pool.Add(file)
    return pool


POOL = _types()


def _class(name: str) -> Any:  # a generated class: its fields are known at run time only
    return message_factory.GetMessageClass(POOL.FindMessageTypeByName(f"nested.{name}"))


def test_what_a_type_can_hold_is_found_at_any_depth() -> None:
    assert not reaches(timestamp_pb2.Timestamp.DESCRIPTOR, _is_text)
    assert reaches(struct_pb2.ListValue.DESCRIPTOR, _is_text)  # ListValue -> Value -> string_value
    outer = POOL.FindMessageTypeByName("nested.Outer")
    assert reaches(outer, _is_list)  # two levels down
    assert not reaches(outer, _is_text)


def test_a_recursive_type_is_searched_once_and_exactly() -> None:
    node = POOL.FindMessageTypeByName("nested.Node")
    assert not reaches(node, _is_text)
    assert reaches(node, lambda f: f.name == "n")  # a fresh test: its own cache entry


def test_a_code_named_number_under_types_without_text_is_still_refused() -> None:
    outer, middle, inner = _class("Outer"), _class("Middle"), _class("Inner")
    error = find_card_data(outer(middle=middle(inner=inner(security_code=123))))
    assert error is not None and error.field == "middle.inner.security_code"
    assert find_card_data(outer(middle=middle(xs=[4, 1, 1, 1]))) is None


def test_a_list_two_levels_down_is_named_by_its_path() -> None:
    outer, middle = _class("Outer"), _class("Middle")
    request = outer(middle=middle(xs=[1, 2, 3]))
    assert oversized_field(request, 3) is None
    assert oversized_field(request, 2) == "middle.xs"
    assert oversized_field(request, 2, "batch") == "batch.middle.xs"
