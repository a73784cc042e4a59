"""What must never reach a log line: tokens, keys, passwords, full IBANs and card numbers.

`redact` is applied by the runtime's log formatter to every line it writes (message, extra
fields and tracebacks alike), so a careless `log.info(..., extra={"request": str(request)})` still
leaks nothing. Masks keep enough to correlate (an IBAN's country and last four characters, a
card's last four digits), never enough to use.
"""

from __future__ import annotations

import re

from stdnum import iban, luhn

_PEM_PRIVATE_KEY = re.compile(r"-----BEGIN [A-Z ]*PRIVATE KEY-----.*?-----END [A-Z ]*PRIVATE KEY-----", re.DOTALL)
_BEARER = re.compile(r"(?i)\b(bearer)\s+[A-Za-z0-9._~+/=-]+")
_JWT = re.compile(r"\beyJ[A-Za-z0-9_-]{5,}\.[A-Za-z0-9_-]{5,}\.[A-Za-z0-9_-]*")
_FERNET_TOKEN = re.compile(r"\bgAAAAA[A-Za-z0-9_-]{20,}=*")
# A Fernet key: 32 bytes in url-safe base64.
_FERNET_KEY = re.compile(r"(?<![A-Za-z0-9_-])[A-Za-z0-9_-]{43}=(?![A-Za-z0-9_=-])")
_URL_PASSWORD = re.compile(r"(?P<head>[a-z][a-z0-9+.-]*://[^/\s:@]+):[^@/\s]+@")
# Digits separated by at most single spaces or dashes, standing on their own.
_DIGIT_RUN = re.compile(r"(?<![0-9A-Za-z])[0-9](?:[ -]?[0-9]){12,22}(?![0-9A-Za-z])")
_IBAN = re.compile(r"(?<![A-Za-z0-9])[A-Z]{2}[0-9]{2}(?:[ ]?[A-Za-z0-9]){11,30}(?![A-Za-z0-9])")


def _card(match: re.Match[str]) -> str:
    digits = re.sub(r"[ -]", "", match.group())
    for start in range(len(digits)):
        for end in range(len(digits), start + 12, -1):
            part = digits[start:end]
            if 13 <= len(part) <= 19 and luhn.is_valid(part):
                return f"[CARD ****{digits[-4:]}]"
    return match.group()


def _iban(match: re.Match[str]) -> str:
    text = match.group()
    # The pattern is greedy ("BE68 5390 0754 7034 received" runs on into the next word): the
    # longest prefix that is a valid IBAN is masked, the rest kept.
    for end in range(len(text), 14, -1):
        compact = text[:end].replace(" ", "")
        if text[end - 1] != " " and iban.is_valid(compact, check_country=False):
            return f"[IBAN {compact[:2]}****{compact[-4:]}]" + text[end:]
    return text


def redact(text: str) -> str:
    text = _PEM_PRIVATE_KEY.sub("[PRIVATE KEY]", text)
    text = _BEARER.sub(r"\1 [TOKEN]", text)
    text = _JWT.sub("[TOKEN]", text)
    text = _FERNET_TOKEN.sub("[ENCRYPTED]", text)
    text = _FERNET_KEY.sub("[KEY]", text)
    text = _URL_PASSWORD.sub(r"\g<head>:***@", text)
    text = _IBAN.sub(_iban, text)
    return _DIGIT_RUN.sub(_card, text)
