"""Encryption at rest for the few fields that must be readable again (payment-method details, ERP
credentials): Fernet (AES-128-CBC + HMAC-SHA256) under keys from settings, with rotation.

Keys are a comma-separated list, newest first. MultiFernet encrypts with the first and decrypts with
any, so rotation is: put a new key first, re-encrypt stored values with `rotate` (or let writes do
it), then drop the old key. The ERP gateway keeps its own copy of this (adapters/crypto.py, same
scheme and setting format); services holding other secrets use this one.
"""

from __future__ import annotations

from cryptography.fernet import Fernet, InvalidToken, MultiFernet


class EncryptionKeyError(ValueError):
    """No key, or a malformed one (the message never contains the key)."""


class Undecryptable(ValueError):
    """None of the configured keys opens the stored value (a key was dropped too early)."""


class FieldCipher:
    def __init__(self, keys: list[str]) -> None:
        if not keys:
            raise EncryptionKeyError("at least one encryption key is required")
        try:
            self._fernet = MultiFernet([Fernet(key.encode()) for key in keys])
        except ValueError:
            raise EncryptionKeyError("an encryption key is not a valid Fernet key (32 url-safe base64 bytes)") from None

    @classmethod
    def from_setting(cls, value: str) -> FieldCipher:
        return cls([key.strip() for key in value.split(",") if key.strip()])

    def encrypt(self, plaintext: bytes) -> bytes:
        return self._fernet.encrypt(plaintext)

    def decrypt(self, token: bytes) -> bytes:
        try:
            return self._fernet.decrypt(token)
        except InvalidToken:
            raise Undecryptable("no configured key opens this value") from None

    def rotate(self, token: bytes) -> bytes:
        """The same value encrypted under the newest key."""
        try:
            return self._fernet.rotate(token)
        except InvalidToken:
            raise Undecryptable("no configured key opens this value") from None


def generate_key() -> str:
    return Fernet.generate_key().decode()
