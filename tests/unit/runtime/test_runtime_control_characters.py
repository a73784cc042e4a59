"""SensitiveDataGuard's text rule: a string (value or map key) with a control character other
than tab, line feed and carriage return is refused with INVALID_ARGUMENT naming the field (NUL
cannot even be stored in PostgreSQL text); ordinary Unicode text passes."""

from __future__ import annotations

import pytest
from evolutivo.customer.v1 import account_pb2, contact_pb2
from evolutivo.customer.v1 import customer_service_pb2 as pb
from evolutivo_runtime.server.sensitive_data import find_card_data
from google.type import postal_address_pb2


@pytest.mark.parametrize("text", ["Acme\x00Ltd", "\x1b[31mred", "bell\x07", "del\x7f", "c1\x85", "\x0bvertical tab"])
def test_control_characters_are_refused_naming_the_field(text: str) -> None:
    error = find_card_data(pb.CreateAccountRequest(account=account_pb2.Account(display_name=text)))
    assert error is not None
    assert (error.field, error.reason) == ("account.display_name", "CONTROL_CHARACTER")
    assert text not in error.message


def test_repeated_and_map_values_and_keys_are_checked() -> None:
    address = contact_pb2.Contact(
        postal_address=postal_address_pb2.PostalAddress(region_code="ES", address_lines=["Mayor 1", "piso\x002"])
    )
    error = find_card_data(pb.AddContactRequest(contact=address))
    assert error is not None and error.field == "contact.postal_address.address_lines[1]"
    error = find_card_data(pb.CreateAccountRequest(account=account_pb2.Account(labels={"note": "a\x00"})))
    assert error is not None and error.field == 'account.labels["note"]'
    error = find_card_data(pb.CreateAccountRequest(account=account_pb2.Account(labels={"no\x00te": "a"})))
    assert error is not None and error.field == "account.labels"


@pytest.mark.parametrize(
    "text",
    [
        "line one\nline two\r\n\ttabbed",
        "Zoë Ñúñez",
        "\u202eRTL override",
        "\U0001f600 emoji",
        "日本語",
        "\u200bzero width",
    ],
)
def test_text_tabs_line_breaks_and_unicode_pass(text: str) -> None:
    assert find_card_data(pb.CreateAccountRequest(account=account_pb2.Account(display_name=text))) is None
