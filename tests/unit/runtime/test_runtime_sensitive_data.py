"""SensitiveDataGuard: card numbers and security codes anywhere in a request are refused with
INVALID_ARGUMENT naming the field, never echoing or logging the value; other data passes."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from typing import Any

import grpc
import pytest
from evolutivo.customer.v1 import account_pb2, contact_pb2, payment_method_pb2
from evolutivo.customer.v1 import customer_service_pb2 as pb
from evolutivo_runtime.errors import InvalidArgument
from evolutivo_runtime.server.interceptors import ServiceInterceptor
from evolutivo_runtime.server.sensitive_data import (
    SensitiveDataGuard,
    _scan_for_card_number,
    contains_card_number,
    find_card_data,
    is_security_code_name,
)
from google.protobuf import any_pb2, descriptor_pb2, descriptor_pool, message_factory, struct_pb2
from google.protobuf.message import Message
from google.rpc import error_details_pb2
from google.type import postal_address_pb2
from grpc_status import rpc_status
from hypothesis import given, settings
from hypothesis import strategies as st

VISA = "4111111111111111"
FULL_WIDTH_DIGITS = str.maketrans("0123456789", "".join(chr(0xFF10 + d) for d in range(10)))
DOMAIN = "test.evolutivo.io"


# Card numbers.


@pytest.mark.parametrize(
    "text",
    [
        VISA,
        "4111 1111 1111 1111",
        "4111-1111-1111-1111",
        "378282246310005",  # Amex, 15 digits
        "3782 822463 10005",
        "6011000990139424",
        "4000056655665556",
        "6759649826438453",  # Maestro
        "6275980000000000006",  # 19 digits
        "pay with 4111111111111111 please",
        "card:4111111111111111",
        "card_4111111111111111",
        "(4111 1111 1111 1111)",
        "4111 1111 1111 1111 0825",  # followed by the expiry
        "4111 1111 1111 1111 123",  # and the CVV
        "ref 12 4111 1111 1111 1111",
        VISA.translate(FULL_WIDTH_DIGITS),
    ],
)
def test_card_numbers_are_found(text: str) -> None:
    assert contains_card_number(text)


@pytest.mark.parametrize(
    "text",
    [
        "",
        "4111111111111112",  # fails Luhn
        "411111111111",  # 12 digits
        "41111111111111111111",  # 20 digits, unseparated
        "4111  1111  1111  1111",  # double spaces: not one number
        "DK5000400440116243",  # an IBAN whose digits pass Luhn
        "DK50 0040 0440 1162 43",
        "ES91 2100 0418 4502 0005 1332",
        "+4915112345603",  # an E.164 number whose digits pass Luhn
        "+49 151 1234 5603",
        "5000400440116243abc",
        "x5000400440116243",
        "12345678-1234-5678-1234-567812345678",  # a UUID of digits
        "00000000-4111-1111-1111-111111111111",
        "A-00000001",
        "2026-03-31 2026-04-30",
        "B12345674",
    ],
)
def test_other_numbers_are_not_card_numbers(text: str) -> None:
    assert not contains_card_number(text)


@pytest.mark.parametrize(
    ("name", "is_code"),
    [
        ("cvv", True),
        ("CVV", True),
        ("cvc", True),
        ("cvv2", True),
        ("cvc2", True),
        ("csc", True),
        ("security_code", True),
        ("securityCode", True),
        ("card-security-code", True),
        ("card_cvv", True),
        ("cardCvc", True),
        ("Card CVV2", True),
        ("provider_token", False),
        ("security", False),
        ("code", False),
        ("cvvx", False),
        ("csc_region", True),
        ("discount_code", False),
    ],
)
def test_security_code_names(name: str, is_code: bool) -> None:
    assert is_security_code_name(name) is is_code


# Walking messages.


def violation(message: Message) -> InvalidArgument:
    found = find_card_data(message)
    assert found is not None
    return found


def test_a_nested_field_is_named_by_its_path() -> None:
    request = pb.AddPaymentMethodRequest(
        account_id="0d7e3a7e-3c1f-4f5e-9f53-1b0e8f3d2a11",
        payment_method=payment_method_pb2.PaymentMethod(
            card=payment_method_pb2.CardDetails(provider="stripe", provider_token=VISA, last4="1111")
        ),
    )
    error = violation(request)
    assert error.field == "payment_method.card.provider_token"
    assert error.reason == "CARD_DATA_REFUSED"
    assert VISA not in error.message and "1111" not in error.message


def test_map_values_are_named_by_their_key() -> None:
    request = pb.CreateAccountRequest(account=account_pb2.Account(labels={"ok": "fine", "note": f"card {VISA}"}))
    assert violation(request).field == 'account.labels["note"]'


def test_a_security_code_under_a_map_key_is_refused() -> None:
    request = pb.CreateAccountRequest(account=account_pb2.Account(labels={"CVV": "123"}))
    assert violation(request).field == 'account.labels["CVV"]'
    assert find_card_data(pb.CreateAccountRequest(account=account_pb2.Account(labels={"cvv": " "}))) is None


def test_a_card_number_as_a_map_key_is_refused_without_echoing_the_key() -> None:
    request = pb.CreateAccountRequest(account=account_pb2.Account(labels={VISA: "x"}))
    error = violation(request)
    assert error.field == "account.labels"
    assert VISA not in error.message


def test_repeated_fields_are_named_by_their_index() -> None:
    request = pb.AddContactRequest(
        contact=contact_pb2.Contact(
            postal_address=postal_address_pb2.PostalAddress(
                region_code="ES", address_lines=["Calle Mayor 1", "4111-1111-1111-1111"]
            )
        )
    )
    assert violation(request).field == "contact.postal_address.address_lines[1]"


def test_struct_values_are_walked() -> None:
    payload = struct_pb2.Struct()
    payload.update({"customer": {"notes": ["ok", f"pan {VISA}"]}})
    assert (
        violation(payload).field == 'fields["customer"].struct_value.fields["notes"].list_value.values[1].string_value'
    )
    code = struct_pb2.Struct()
    code.update({"cvc": "999"})
    assert violation(code).field == 'fields["cvc"]'


def test_any_payloads_are_walked() -> None:
    packed = any_pb2.Any()
    packed.Pack(account_pb2.Account(display_name=VISA))
    assert violation(packed).field == "display_name"
    assert find_card_data(any_pb2.Any(type_url="type.googleapis.com/unknown.Type", value=b"\x01")) is None


def _message_with_fields(*fields: tuple[str, int]) -> type[Message]:
    """A message type of our own, with fields named as a careless client might name them."""
    file = descriptor_pb2.FileDescriptorProto(name="careless.proto", package="careless", syntax="proto3")
    message = file.message_type.add(name="Payment")
    for number, (name, kind) in enumerate(fields, start=1):
        message.field.add(name=name, number=number, type=kind, label=descriptor_pb2.FieldDescriptorProto.LABEL_OPTIONAL)
    pool = descriptor_pool.DescriptorPool()
    pool.Add(file)
    return message_factory.GetMessageClass(pool.FindMessageTypeByName("careless.Payment"))


def test_fields_named_like_a_security_code_are_refused_when_set() -> None:
    t = descriptor_pb2.FieldDescriptorProto
    payment = _message_with_fields(
        ("card_cvv", t.TYPE_STRING), ("security_code", t.TYPE_INT32), ("cvv_checked", t.TYPE_BOOL)
    )
    assert violation(payment(card_cvv="123")).field == "card_cvv"
    assert violation(payment(security_code=123)).field == "security_code"
    assert find_card_data(payment(cvv_checked=True)) is None  # a flag holds no code
    assert find_card_data(payment()) is None


def test_clean_requests_pass() -> None:
    request = pb.AddPaymentMethodRequest(
        account_id="0d7e3a7e-3c1f-4f5e-9f53-1b0e8f3d2a11",
        request_id="41111111-1111-4111-8111-111111111111",
        payment_method=payment_method_pb2.PaymentMethod(
            sepa_direct_debit=payment_method_pb2.SepaDirectDebitDetails(
                iban="DK5000400440116243", mandate_id="M-2026-0001", account_holder="Ana"
            )
        ),
    )
    assert find_card_data(request) is None
    contact = pb.AddContactRequest(contact=contact_pb2.Contact(phone="+4915112345603", name="Ana"))
    assert find_card_data(contact) is None


# On a real server, behind ServiceInterceptor.


SERVICE = "evolutivo.test.v1.Sensitive"
calls: list[str] = []


async def unary(request: account_pb2.Account, context: Any) -> account_pb2.Account:
    calls.append("unary")
    return account_pb2.Account(display_name="ok")


async def server_stream(request: account_pb2.Account, context: Any) -> AsyncIterator[account_pb2.Account]:
    calls.append("server_stream")
    yield account_pb2.Account(display_name="one")
    yield account_pb2.Account(display_name="two")


async def client_stream(requests: AsyncIterator[account_pb2.Account], context: Any) -> account_pb2.Account:
    names = [r.display_name async for r in requests]
    calls.append("client_stream")
    return account_pb2.Account(display_name=",".join(names))


async def both_ways(requests: AsyncIterator[account_pb2.Account], context: Any) -> AsyncIterator[account_pb2.Account]:
    async for request in requests:
        calls.append(f"both_ways:{request.display_name}")
        yield account_pb2.Account(display_name=request.display_name.upper())


def _handlers() -> grpc.GenericRpcHandler[Any, Any]:
    codec = {
        "request_deserializer": account_pb2.Account.FromString,
        "response_serializer": account_pb2.Account.SerializeToString,
    }
    return grpc.method_handlers_generic_handler(
        SERVICE,
        {
            "Unary": grpc.unary_unary_rpc_method_handler(unary, **codec),
            "ServerStream": grpc.unary_stream_rpc_method_handler(server_stream, **codec),
            "ClientStream": grpc.stream_unary_rpc_method_handler(client_stream, **codec),
            "BothWays": grpc.stream_stream_rpc_method_handler(both_ways, **codec),
        },
    )


@pytest.fixture
async def channel() -> AsyncIterator[grpc.aio.Channel]:
    calls.clear()
    server = grpc.aio.server(interceptors=[ServiceInterceptor(DOMAIN, guards=[SensitiveDataGuard()])])
    server.add_generic_rpc_handlers((_handlers(),))
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as ch:
            yield ch
    finally:
        await server.stop(None)


def _codec() -> dict[str, Any]:
    return {
        "request_serializer": account_pb2.Account.SerializeToString,
        "response_deserializer": account_pb2.Account.FromString,
    }


async def _refusal(call: Any) -> tuple[grpc.aio.AioRpcError, list[str], error_details_pb2.ErrorInfo]:
    with pytest.raises(grpc.aio.AioRpcError) as excinfo:
        await call
    error = excinfo.value
    status = rpc_status.from_call(error)  # type: ignore[arg-type]
    assert status is not None
    fields, info = [], error_details_pb2.ErrorInfo()
    for detail in status.details:
        if detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
            bad = error_details_pb2.BadRequest()
            detail.Unpack(bad)
            fields += [v.field for v in bad.field_violations]
        elif detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            detail.Unpack(info)
    return error, fields, info


async def test_a_card_number_is_refused_before_the_handler_runs(
    channel: grpc.aio.Channel, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    call = channel.unary_unary(f"/{SERVICE}/Unary", **_codec())(
        account_pb2.Account(display_name="Ana", labels={"note": f"my card is {VISA}"})
    )
    error, fields, info = await _refusal(call)
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert fields == ['labels["note"]']
    assert (info.reason, info.domain) == ("CARD_DATA_REFUSED", DOMAIN)
    assert VISA not in (error.details() or "") and VISA not in str(error.trailing_metadata())
    assert calls == []
    assert not [r for r in caplog.records if VISA in r.getMessage() or VISA in str(r.__dict__)]
    assert any(getattr(r, "field", None) == 'labels["note"]' for r in caplog.records)


async def test_a_clean_request_reaches_the_handler(channel: grpc.aio.Channel) -> None:
    response = await channel.unary_unary(f"/{SERVICE}/Unary", **_codec())(account_pb2.Account(display_name="Ana"))
    assert response.display_name == "ok"
    assert calls == ["unary"]


async def test_streaming_methods_are_checked_too(channel: grpc.aio.Channel) -> None:
    streamed = channel.unary_stream(f"/{SERVICE}/ServerStream", **_codec())
    assert [r.display_name async for r in streamed(account_pb2.Account(display_name="fine"))] == ["one", "two"]
    error, fields, _ = await _refusal(_collect(streamed(account_pb2.Account(tax_id=VISA))))
    assert (error.code(), fields) == (grpc.StatusCode.INVALID_ARGUMENT, ["tax_id"])

    uploading = channel.stream_unary(f"/{SERVICE}/ClientStream", **_codec())
    response = await uploading(_requests("a", "b"))
    assert response.display_name == "a,b"
    error, fields, _ = await _refusal(uploading(_requests("a", VISA)))
    assert (error.code(), fields) == (grpc.StatusCode.INVALID_ARGUMENT, ["display_name"])
    assert calls == ["server_stream", "client_stream"]

    chatting = channel.stream_stream(f"/{SERVICE}/BothWays", **_codec())
    assert [r.display_name async for r in chatting(_requests("a", "b"))] == ["A", "B"]
    # The first request is answered; the second, refused, ends the call before the handler sees it.
    error, fields, _ = await _refusal(_collect(chatting(_requests("c", VISA, "d"))))
    assert (error.code(), fields) == (grpc.StatusCode.INVALID_ARGUMENT, ["display_name"])
    assert calls[2:] == ["both_ways:a", "both_ways:b", "both_ways:c"]


async def _collect(responses: Any) -> list[Any]:
    return [r async for r in responses]


async def _requests(*names: str) -> AsyncIterator[account_pb2.Account]:
    for name in names:
        yield account_pb2.Account(display_name=name)


# ASCII text made of what card numbers, UUIDs and their neighbours are made of.
_CARD_LIKE = st.lists(
    st.one_of(
        st.sampled_from([VISA, "4111 1111 1111 1111", "5500-0000-0000-0004", "550e8400-e29b-41d4-a716-446655440000"]),
        st.text(alphabet="0123456789 -+abcfXZ", max_size=30),
    ),
    max_size=4,
).map("".join)


@settings(max_examples=400, deadline=None)
@given(_CARD_LIKE)
def test_the_shortcut_for_ascii_text_finds_what_the_full_scan_finds(value: str) -> None:
    assert contains_card_number(value) == _scan_for_card_number(value)
