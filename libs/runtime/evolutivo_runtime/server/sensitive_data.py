"""Refuses any request carrying payment-card data or control characters, for every RPC of every
service.

No service may receive a card number or a card security code: cards are held as the payment
provider's token. The check walks every string field of each request message, recursively
(nested messages, repeated fields, map keys and values, and google.protobuf.Any payloads whose type
is known), and refuses the call with INVALID_ARGUMENT naming the field path, e.g.
`payment_method.card.provider_token` or `account.labels["note"]`, when

- a value contains a card number: 13 to 19 digits, optionally separated by single spaces or
  dashes, that pass the Luhn check; or
- a field or map key is named like a card security code (cvv, cvc, cvv2, cvc2, csc,
  security_code, in any case or separator style) and has a non-empty value.

It also refuses, naming the field, a string (value or map key) holding a control character other
than tab, line feed and carriage return (NUL, escape, bell, DEL, the C1 controls...): no field of
any contract is meant to hold one, PostgreSQL text cannot store NUL at all (the insert would fail
as an internal error after validation passed), and escapes in names reach logs, terminals and
documents.

The error names the field and the rule, never the value, and nothing here logs the value. A map
key that itself contains a card number is reported as the map field, without the key.

To keep false alarms away from data that is not a card, a digit run counts only when it stands on
its own: it must not be preceded by a letter, a digit or "+" (so IBANs such as BE68539007547034
and E.164 phone numbers never match) nor followed by a letter or a digit, and UUIDs are skipped.

It is one of ServiceInterceptor's guards, which times, counts and answers the refused calls (an
InvalidArgument's ErrorInfo and BadRequest), streaming methods included:
`grpc.aio.server(interceptors=[ServiceInterceptor(domain, guards=[SensitiveDataGuard()])])`.
"""

from __future__ import annotations

import functools
import itertools
import json
import re
import unicodedata
from collections.abc import Iterable
from typing import Any, cast

import grpc
from google.protobuf import any_pb2, descriptor_pool, message_factory
from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import DecodeError, Message
from stdnum import luhn

from evolutivo_runtime.errors import InvalidArgument
from evolutivo_runtime.server.descriptors import reaches
from evolutivo_runtime.server.interceptors import INFRASTRUCTURE_PREFIXES, GuardedCall

CARD_NUMBER_RULE = "must not contain a payment card number: send the payment provider's token instead"
SECURITY_CODE_RULE = "must not carry a card security code (CVV/CVC): it is never sent to or stored by this platform"
CARD_NUMBER_IN_KEY_RULE = "a map key must not contain a payment card number"
CONTROL_CHARACTER_RULE = "must not contain control characters (NUL, escape...): only text, tabs and line breaks"
CONTROL_CHARACTER_IN_KEY_RULE = "a map key must not contain control characters"

# C0 controls but tab, line feed and carriage return; DEL; the C1 controls.
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]")

MIN_CARD_DIGITS = 13
MAX_CARD_DIGITS = 19

# Digits joined by at most one space or dash between them; standing on their own (see above).
_DIGIT_RUN = re.compile(r"(?<![0-9A-Za-z+])[0-9](?:[ -]?[0-9])*(?![0-9A-Za-z])")
_GROUP_SEPARATOR = re.compile(r"[ -]")
_UUID = re.compile(r"[0-9A-Fa-f]{8}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{12}")
_SECURITY_CODE_WORDS = frozenset({"cvv", "cvc", "cvv2", "cvc2", "csc"})
_CAMEL_BOUNDARY = re.compile(r"(?<=[a-z0-9])(?=[A-Z])")
_WORD_SEPARATOR = re.compile(r"[^0-9a-z]+")
# Every byte but the ASCII digits: `bytes.translate(None, _NOT_DIGITS)` keeps only the digits.
_NOT_DIGITS = bytes(b for b in range(256) if not chr(b).isdigit() or b > 127)


def contains_card_number(value: str) -> bool:
    """Whether the text holds a Luhn-valid run of 13-19 digits (single spaces or dashes allowed
    between them). Within a longer separated run, every stretch of whole groups is tried, so a
    number followed by more digits ("4111 1111 1111 1111 0825") is still found."""
    if value.isascii():
        # The common case, cheaply (this runs on every string of every request): NFKC leaves ASCII
        # as it is, so fewer than 13 digits in all, or a lone UUID, cannot hold a card number.
        if len(value) < MIN_CARD_DIGITS or len(value.encode().translate(None, _NOT_DIGITS)) < MIN_CARD_DIGITS:
            return False
        if _UUID.fullmatch(value):
            return False
    return _scan_for_card_number(value)


def _scan_for_card_number(value: str) -> bool:
    """contains_card_number without its shortcut for the common case."""
    # Full-width and other Unicode digits count as the ASCII digits they stand for.
    text = _UUID.sub(" ", unicodedata.normalize("NFKC", value))
    for match in _DIGIT_RUN.finditer(text):
        run = match.group()
        if sum(c.isdigit() for c in run) < MIN_CARD_DIGITS:
            continue
        groups = _GROUP_SEPARATOR.split(run)
        for start in range(len(groups)):
            digits = ""
            for group in groups[start:]:
                digits += group
                if len(digits) > MAX_CARD_DIGITS:
                    break
                if len(digits) >= MIN_CARD_DIGITS and luhn.is_valid(digits):
                    return True
    return False


@functools.lru_cache(maxsize=4096)
def is_security_code_name(name: str) -> bool:
    """cvv, CVC2, card_cvv, cardCvc, security_code, securityCode, card-security-code..."""
    words = [w for w in _WORD_SEPARATOR.split(_CAMEL_BOUNDARY.sub("_", name).lower()) if w]
    if any(w in _SECURITY_CODE_WORDS for w in words):
        return True
    return any(a == "security" and b == "code" for a, b in itertools.pairwise(words))


def _has_value(value: object) -> bool:
    """Whether a field named like a security code could be holding one (a flag cannot)."""
    if isinstance(value, bool):
        return False
    if isinstance(value, str):
        return bool(value.strip())
    if isinstance(value, Message):
        return bool(value.ListFields())
    return bool(value)


def _key_path(key: object) -> str:
    return f"[{json.dumps(key, ensure_ascii=False)}]" if isinstance(key, str) else f"[{key}]"


def _unpacked(packed: any_pb2.Any) -> Message | None:
    """The message inside an Any when its type is in the default pool (all our contracts are)."""
    try:
        descriptor = descriptor_pool.Default().FindMessageTypeByName(packed.TypeName())
    except KeyError:
        return None
    message = message_factory.GetMessageClass(descriptor)()
    try:
        return message if packed.Unpack(message) else None
    except DecodeError:
        return None


def find_card_data(message: Message, prefix: str = "") -> InvalidArgument | None:
    """The first card data in the message, as the error to answer with; None when there is none."""
    found = _find(message)
    if found is None:
        return None
    steps, rule, reason = found
    path = prefix
    for step in reversed(steps):
        path = path + step if step.startswith("[") or not path else f"{path}.{step}"
    return InvalidArgument(path, rule, reason=reason)


# A finding: the steps of its path, innermost first (a field name, "[3]", '["key"]'); the rule;
# the reason. The path is only spelt out for a finding, not for every field a clean request has.
_Finding = tuple[list[str], str, str]
_CARD = "CARD_DATA_REFUSED"
_CONTROL_REASON = "CONTROL_CHARACTER"
_ANY = any_pb2.Any.DESCRIPTOR.full_name
# How a field is checked (beyond its name): not at all, as text, as a message, as a map.
_SKIP, _TEXT, _MESSAGE, _MAP = range(4)


def _looked_at(field: FieldDescriptor) -> bool:
    """A field the check reads: text, a name like a security code's, or an Any (any payload)."""
    return (
        field.type == FieldDescriptor.TYPE_STRING
        or is_security_code_name(field.name)
        or (field.message_type is not None and field.message_type.full_name == _ANY)
    )


@functools.cache
def _how(field: FieldDescriptor) -> int:
    message_type = field.message_type
    if message_type is not None and message_type.GetOptions().map_entry:
        return _MAP
    if field.type == FieldDescriptor.TYPE_STRING:
        return _TEXT
    if message_type is not None and reaches(message_type, _looked_at):
        return _MESSAGE
    return _SKIP  # numbers, flags, bytes, and messages of those only (a Timestamp, say)


def _find(message: Message) -> _Finding | None:
    if message.DESCRIPTOR.full_name == _ANY:
        inner = _unpacked(cast(any_pb2.Any, message))
        return _find(inner) if inner is not None else None
    for field, value in message.ListFields():
        if is_security_code_name(field.name) and _has_value(value):
            return [field.name], SECURITY_CODE_RULE, _CARD
        how = _how(field)
        if how == _SKIP:
            continue
        if how == _MAP:
            found = _find_in_map(field, value)
        elif field.is_repeated:
            found = _find_in_items(how, value)
        else:
            found = _find_in_value(how, value)
        if found is not None:
            found[0].append(field.name)
            return found
    return None


def _find_in_items(how: int, items: Iterable[Any]) -> _Finding | None:
    for i, item in enumerate(items):
        found = _find_in_value(how, item)
        if found is not None:
            found[0].append(f"[{i}]")
            return found
    return None


def _find_in_value(how: int, value: Any) -> _Finding | None:
    if how == _TEXT:
        if contains_card_number(value):
            return [], CARD_NUMBER_RULE, _CARD
        if _CONTROL.search(value):
            return [], CONTROL_CHARACTER_RULE, _CONTROL_REASON
        return None
    if how == _MESSAGE:
        return _find(value)
    return None


def _find_in_map(field: FieldDescriptor, entries: Any) -> _Finding | None:
    assert field.message_type is not None  # a map's entry type
    value_how = _how(field.message_type.fields_by_name["value"])
    for key in entries:
        if isinstance(key, str):
            # The map field is named, not the key: the key itself would be the card number.
            if contains_card_number(key):
                return [], CARD_NUMBER_IN_KEY_RULE, _CARD
            if _CONTROL.search(key):
                return [], CONTROL_CHARACTER_IN_KEY_RULE, _CONTROL_REASON
        entry = entries[key]
        if isinstance(key, str) and is_security_code_name(key) and _has_value(entry):
            found: _Finding | None = ([], SECURITY_CODE_RULE, _CARD)
        else:
            found = _find_in_value(value_how, entry)
        if found is not None:
            found[0].append(_key_path(key))
            return found
    return None


class _CardDataCheck(GuardedCall):
    def inspect(self, request: object) -> None:
        error = find_card_data(request) if isinstance(request, Message) else None
        if error is not None:
            raise error


_CHECK = _CardDataCheck()


class SensitiveDataGuard:
    """Refuses card data and control characters in every request, as one of ServiceInterceptor's
    guards (server/interceptors.py), which answers with the InvalidArgument's rich status."""

    def prepare(self, details: grpc.HandlerCallDetails) -> GuardedCall | None:
        method: str = details.method
        # Health checks and reflection carry names of services and symbols only.
        return None if method.startswith(INFRASTRUCTURE_PREFIXES) else _CHECK
