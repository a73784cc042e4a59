"""evolutivo_runtime.pagination: AIP-158 page sizes and page tokens."""

from __future__ import annotations

import pytest
from evolutivo_runtime.errors import InvalidArgument
from evolutivo_runtime.pagination import (
    DEFAULT_PAGE_SIZE,
    MAX_PAGE_SIZE,
    decode_token,
    encode_token,
    page_size,
    parse_int_token,
)
from hypothesis import given
from hypothesis import strategies as st


@pytest.mark.parametrize(
    ("requested", "expected"),
    [
        (0, DEFAULT_PAGE_SIZE),
        (1, 1),
        (50, 50),
        (MAX_PAGE_SIZE, MAX_PAGE_SIZE),
        (MAX_PAGE_SIZE + 1, MAX_PAGE_SIZE),
        (10**9, MAX_PAGE_SIZE),
    ],
)
def test_page_size(requested: int, expected: int) -> None:
    assert page_size(requested) == expected


def test_defaults() -> None:
    assert DEFAULT_PAGE_SIZE == 100
    assert MAX_PAGE_SIZE == 1000


@pytest.mark.parametrize("requested", [-1, -1000])
def test_negative_page_size_is_invalid_argument(requested: int) -> None:
    with pytest.raises(InvalidArgument) as excinfo:
        page_size(requested)
    assert excinfo.value.field == "page_size"


# Cursors are text a service builds (ids, timestamps, composite keys): anything encodable as UTF-8.
cursors = st.text(alphabet=st.characters(exclude_categories=["Cs"]), min_size=0, max_size=200)


@given(cursors)
def test_token_round_trip(cursor: str) -> None:
    token = encode_token(cursor)
    assert decode_token(token) == cursor


@given(cursors.filter(bool))
def test_tokens_are_url_safe(cursor: str) -> None:
    token = encode_token(cursor)
    assert token
    assert set(token) <= set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_=")


def test_empty_token_is_first_page() -> None:
    assert decode_token("") == ""
    assert parse_int_token("") == 0


@pytest.mark.parametrize(
    "token",
    [
        "abc",  # bad padding
        "_w==",  # decodes to b"\xff": not UTF-8
    ],
)
def test_malformed_token_is_invalid_argument(token: str) -> None:
    with pytest.raises(InvalidArgument) as excinfo:
        decode_token(token)
    assert excinfo.value.field == "page_token"


@pytest.mark.parametrize("token", ["!!!!", "****", "é"])
def test_token_of_foreign_characters_is_invalid_argument(token: str) -> None:
    """A token made only of non-base64 characters is not one the service issued; it must not
    silently decode to "" (which would restart the listing at its first page)."""
    with pytest.raises(InvalidArgument):
        decode_token(token)


@pytest.mark.parametrize(("token", "expected"), [("0", 0), ("1", 1), ("42", 42), ("000123", 123)])
def test_int_token(token: str, expected: int) -> None:
    assert parse_int_token(token) == expected


@pytest.mark.parametrize("token", ["-1", "1.5", "abc", " 1", "1 ", "0x10", "+1"])
def test_int_token_rejects_non_digits(token: str) -> None:
    with pytest.raises(InvalidArgument) as excinfo:
        parse_int_token(token)
    assert excinfo.value.field == "page_token"


@pytest.mark.parametrize("token", ["²", "①", "1²"])
def test_int_token_rejects_unicode_digit_characters(token: str) -> None:
    """str.isdigit() is true for "²" and "①" but int() refuses them: the caller must get
    INVALID_ARGUMENT, not a ValueError (which the interceptor turns into INTERNAL)."""
    with pytest.raises(InvalidArgument):
        parse_int_token(token)


@given(st.integers(min_value=0, max_value=2**63))
def test_int_token_round_trip(n: int) -> None:
    assert parse_int_token(str(n)) == n
