"""Connection secrets at rest: Fernet round trip, key rotation with MultiFernet, wrong keys."""

from __future__ import annotations

import pytest
from evolutivo_erp_gateway.adapters.crypto import (
    CredentialKeyError,
    SecretCipher,
    UndecryptableSecret,
    generate_key,
)
from hypothesis import given, settings
from hypothesis import strategies as st


@settings(max_examples=25)
@given(st.text(max_size=200))
def test_round_trip(secret: str) -> None:
    cipher = SecretCipher([generate_key()])
    token = cipher.encrypt(secret)
    assert cipher.decrypt(token) == secret


def test_rotation_reads_old_tokens_and_rewrites_them_under_the_new_key() -> None:
    old, new = generate_key(), generate_key()
    token = SecretCipher([old]).encrypt("tryton-password")
    rotated_cipher = SecretCipher.from_setting(f"{new}, {old}")
    assert rotated_cipher.decrypt(token) == "tryton-password"
    rotated = rotated_cipher.rotate(token)
    # Once rotated, the old key can be dropped.
    assert SecretCipher([new]).decrypt(rotated) == "tryton-password"
    with pytest.raises(UndecryptableSecret):
        SecretCipher([new]).decrypt(token)


def test_new_secrets_are_encrypted_with_the_first_key() -> None:
    old, new = generate_key(), generate_key()
    token = SecretCipher([new, old]).encrypt("s3cret")
    assert SecretCipher([new]).decrypt(token) == "s3cret"
    with pytest.raises(UndecryptableSecret):
        SecretCipher([old]).decrypt(token)


def test_a_wrong_key_does_not_open_a_secret() -> None:
    token = SecretCipher([generate_key()]).encrypt("s3cret")
    with pytest.raises(UndecryptableSecret) as refused:
        SecretCipher([generate_key()]).decrypt(token)
    assert "s3cret" not in str(refused.value)


@pytest.mark.parametrize("setting", ["", " , ", "not-a-fernet-key"])
def test_missing_or_malformed_keys_are_refused_without_echoing_them(setting: str) -> None:
    with pytest.raises(CredentialKeyError) as refused:
        SecretCipher.from_setting(setting)
    assert "not-a-fernet-key" not in str(refused.value)
