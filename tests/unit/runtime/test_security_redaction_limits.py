"""Log redaction, rate limits, batch limits and encryption-key rotation."""

from __future__ import annotations

import io
import json
import logging

import pytest
from cryptography.fernet import Fernet
from evolutivo.charging.v1 import charging_service_pb2
from evolutivo_runtime.logging import JsonFormatter
from evolutivo_runtime.security.crypto import EncryptionKeyError, FieldCipher, Undecryptable, generate_key
from evolutivo_runtime.security.interceptor import oversized_field
from evolutivo_runtime.security.ratelimit import Limit, RateLimiter
from evolutivo_runtime.security.redaction import redact

JWT = "eyJhbGciOiJFUzI1NiJ9.eyJzdWIiOiJ4In0.c2lnbmF0dXJlLXZhbHVl"


@pytest.mark.parametrize(
    ("text", "leak"),
    [
        (f"authorization: Bearer {JWT}", JWT),
        (f"token={JWT}", JWT),
        ("iban BE68 5390 0754 7034 received", "5390 0754"),
        ("iban BE71 0961 2345 6769", "0961 2345"),
        ("iban DE89370400440532013000", "37040044053201"),
        ("card 4111 1111 1111 1111 refused", "4111 1111 1111"),
        ("card 5500-0000-0000-0004", "5500-0000-0000"),
        ("postgresql://app:s3cr3t@db:5432/x", "s3cr3t"),
        ("-----BEGIN PRIVATE KEY-----\nMIGHAgEAMBMG\n-----END PRIVATE KEY-----", "MIGHAgEAMBMG"),
        (f"key {Fernet.generate_key().decode()}", "="),
    ],
)
def test_secrets_are_masked(text: str, leak: str) -> None:
    assert leak not in redact(text)


def test_ordinary_text_is_kept() -> None:
    text = "account 6f1c2d9e-4a1b-4c8e-9f00-1234567890ab billed 12.34 EUR on 2027-01-31, seq 42, ref INV-2027-000123"
    assert redact(text) == text
    # Masks keep what correlates: the IBAN's country and last four, the card's last four.
    assert "BE****7034" in redact("BE68539007547034")
    assert "****1111" in redact("4111111111111111")


def test_the_log_formatter_redacts_every_field() -> None:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter("test"))
    logger = logging.getLogger("test.redaction")
    logger.addHandler(handler)
    logger.propagate = False
    try:
        logger.warning("call with Bearer %s", JWT, extra={"iban": "DE89370400440532013000"})
    finally:
        logger.removeHandler(handler)
    line = stream.getvalue()
    json.loads(line)  # still one JSON object
    assert JWT not in line and "370400440532013000" not in line


def test_rate_limit_per_caller_with_retry_hint() -> None:
    now = [0.0]
    limiter = RateLimiter({"ingest": Limit(rate=2.0, burst=3)}, now=lambda: now[0])
    assert [limiter.acquire("ingest", "a") for _ in range(3)] == [0.0, 0.0, 0.0]
    wait = limiter.acquire("ingest", "a")
    assert wait == pytest.approx(0.5)
    assert limiter.acquire("ingest", "b") == 0.0  # another caller has its own bucket
    assert limiter.acquire("unlimited", "a") == 0.0
    now[0] += 0.5
    assert limiter.acquire("ingest", "a") == 0.0


def test_oversized_repeated_fields_are_found_at_any_depth() -> None:
    batch = charging_service_pb2.RecordUsageBatchRequest()
    for i in range(3):
        batch.events.add(event_id=str(i))
    assert oversized_field(batch, 3) is None
    assert oversized_field(batch, 2) == "events"


def test_encryption_keys_rotate() -> None:
    old, new = generate_key(), generate_key()
    stored = FieldCipher([old]).encrypt(b"BE68539007547034")
    rotated_cipher = FieldCipher.from_setting(f"{new}, {old}")
    assert rotated_cipher.decrypt(stored) == b"BE68539007547034"
    rotated = rotated_cipher.rotate(stored)
    assert FieldCipher([new]).decrypt(rotated) == b"BE68539007547034"
    with pytest.raises(Undecryptable):
        FieldCipher([new]).decrypt(stored)
    with pytest.raises(EncryptionKeyError):
        FieldCipher.from_setting("")
    with pytest.raises(EncryptionKeyError):
        FieldCipher(["not-a-key"])
