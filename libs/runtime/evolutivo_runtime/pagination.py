"""AIP-158 pagination helpers: page-size rules and opaque page tokens."""

from __future__ import annotations

import base64
import binascii

from evolutivo_runtime.errors import InvalidArgument

DEFAULT_PAGE_SIZE = 100
MAX_PAGE_SIZE = 1000


def page_size(requested: int) -> int:
    if requested < 0:
        raise InvalidArgument("page_size", "must not be negative")
    return min(requested or DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE)


def encode_token(cursor: str) -> str:
    return base64.urlsafe_b64encode(cursor.encode()).decode()


def decode_token(token: str) -> str:
    """The cursor inside a token; "" for the first page."""
    if not token:
        return ""
    try:
        # validate=True: a token with foreign characters is refused, not silently read as "".
        return base64.b64decode(token.encode("ascii"), altchars=b"-_", validate=True).decode()
    except (binascii.Error, UnicodeError) as exc:
        raise InvalidArgument("page_token", "is not a token this service issued") from exc


def parse_int_token(token: str) -> int:
    """For lists paged by a sequence number, where the token is the last number seen."""
    if not token:
        return 0
    if not (token.isascii() and token.isdigit()):
        raise InvalidArgument("page_token", "is not a token this service issued")
    return int(token)


def encode_keyset(*values: str) -> str:
    """A page token from the sort key of the last row returned (e.g. its time and id)."""
    return encode_token("\x1f".join(values))


def decode_keyset(token: str, parts: int) -> list[str] | None:
    """The sort key inside a token from encode_keyset; None for the first page."""
    cursor = decode_token(token)
    if not cursor:
        return None
    values = cursor.split("\x1f")
    if len(values) != parts:
        raise InvalidArgument("page_token", "is not a token this service issued")
    return values
