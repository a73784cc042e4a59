"""Connection secrets encrypted at rest with Fernet (AES-128-CBC + HMAC-SHA256).

The keys come from settings (ERP_GATEWAY_CREDENTIAL_KEYS, comma-separated, newest first). Rotation:
put the new key first and keep the old ones after it; MultiFernet decrypts with any of them and
encrypts with the first, and `rotate` re-encrypts a stored token under the newest key.
"""

from __future__ import annotations

from cryptography.fernet import Fernet, InvalidToken, MultiFernet


class CredentialKeyError(ValueError):
    """No key, or a malformed one, in the settings."""


class UndecryptableSecret(ValueError):
    """A stored secret none of the configured keys opens (a key was dropped too early)."""


class SecretCipher:
    def __init__(self, keys: list[str]) -> None:
        if not keys:
            raise CredentialKeyError("at least one credential key is required")
        try:
            self._fernet = MultiFernet([Fernet(key.encode()) for key in keys])
        except ValueError as exc:
            # Never echo the key itself.
            raise CredentialKeyError("a credential key is not a valid Fernet key (32 url-safe base64 bytes)") from exc

    @classmethod
    def from_setting(cls, value: str) -> SecretCipher:
        return cls([key.strip() for key in value.split(",") if key.strip()])

    def encrypt(self, secret: str) -> bytes:
        return self._fernet.encrypt(secret.encode())

    def decrypt(self, token: bytes) -> str:
        try:
            return self._fernet.decrypt(token).decode()
        except InvalidToken:
            raise UndecryptableSecret("no configured credential key opens this secret") from None

    def rotate(self, token: bytes) -> bytes:
        try:
            return self._fernet.rotate(token)
        except InvalidToken:
            raise UndecryptableSecret("no configured credential key opens this secret") from None


def generate_key() -> str:
    return Fernet.generate_key().decode()
