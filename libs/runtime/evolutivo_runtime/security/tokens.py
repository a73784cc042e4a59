"""Caller identities: JWTs verified against configured public keys, and the service's own tokens.

Verification (PyJWT): the signing key is picked by the token's `kid` from the configured JWKS (a
token without `kid` is accepted only when exactly one key is configured), and the algorithm is
the key's own (never the token header's choice, so no algorithm confusion). `exp`, `iat`, `iss`,
`aud` and `sub` are required; the issuer must be one of the configured issuers, the audience the
configured one; `leeway` absorbs clock skew. Expiry is checked against the wall clock, never the
controllable test clock: moving business time forward does not expire anybody.

Scopes come from the `scope` claim, space-separated (RFC 9068), or a `scp` list.
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

REQUIRED_CLAIMS = ["exp", "iat", "iss", "aud", "sub"]
# A verified token is remembered (until it expires) so a busy caller's every call does not pay
# for a signature check; bounded so a flood of distinct tokens cannot grow memory.
_CACHE_SIZE = 10_000


class AuthenticationError(Exception):
    """The credential is missing, malformed, expired, forged or not meant for us. The message is
    safe to return to the caller: it never contains the token."""


class KeyConfigError(ValueError):
    """The configured keys cannot be used."""


@dataclass(frozen=True)
class Principal:
    """Who is calling: the verified token's subject and what it may do."""

    subject: str
    issuer: str
    scopes: frozenset[str]
    expires_at: float

    def has(self, scope: str) -> bool:
        return scope in self.scopes


def load_jwks(text: str) -> dict[str, jwt.PyJWK]:
    """kid -> key, from a JWKS document (``{"keys": [...]}``) or a single JWK."""
    try:
        document = json.loads(text)
    except json.JSONDecodeError as exc:
        raise KeyConfigError(f"the JWKS is not JSON: {exc.msg}") from None
    entries = document.get("keys") if isinstance(document, dict) and "keys" in document else [document]
    if not isinstance(entries, list) or not entries:
        raise KeyConfigError("the JWKS holds no key")
    keys: dict[str, jwt.PyJWK] = {}
    for index, entry in enumerate(entries):
        if not isinstance(entry, dict):
            raise KeyConfigError(f"JWKS key {index} is not an object")
        if "d" in entry:
            # Only public keys belong in a verifier's configuration.
            raise KeyConfigError(f"JWKS key {index} holds a private key; configure public keys only")
        try:
            key = jwt.PyJWK(entry)
        except jwt.PyJWTError as exc:
            raise KeyConfigError(f"JWKS key {index} is not usable: {exc}") from None
        keys[str(entry.get("kid") or f"key-{index}")] = key
    return keys


def public_jwk(private_key_pem: bytes, kid: str) -> dict[str, Any]:
    """The public JWK (with kid and alg) of a PEM private key: what verifiers are configured with."""
    key = serialization.load_pem_private_key(private_key_pem, password=None)
    algorithm = _algorithm_of(key)
    jwk: dict[str, Any] = json.loads(jwt.get_algorithm_by_name(algorithm).to_jwk(key.public_key()))
    jwk.update({"kid": kid, "alg": algorithm, "use": "sig"})
    return jwk


def _algorithm_of(key: object) -> str:
    if isinstance(key, ec.EllipticCurvePrivateKey):
        return {"secp256r1": "ES256", "secp384r1": "ES384", "secp521r1": "ES512"}[key.curve.name]
    if isinstance(key, rsa.RSAPrivateKey):
        return "RS256"
    if isinstance(key, ed25519.Ed25519PrivateKey):
        return "EdDSA"
    raise KeyConfigError(f"unsupported signing key type {type(key).__name__}")


class TokenVerifier:
    def __init__(self, keys: dict[str, jwt.PyJWK], issuers: Iterable[str], audience: str, leeway: float = 30.0):
        if not keys:
            raise KeyConfigError("no token verification key is configured")
        self._keys = keys
        self._issuers = [i for i in issuers if i]
        if not self._issuers:
            raise KeyConfigError("no accepted token issuer is configured")
        if not audience:
            raise KeyConfigError("no token audience is configured")
        self._audience = audience
        self._leeway = leeway
        self._cache: OrderedDict[str, Principal] = OrderedDict()
        self._lock = threading.Lock()

    def verify(self, token: str) -> Principal:
        now = time.time()
        with self._lock:
            cached = self._cache.get(token)
            if cached is not None:
                if cached.expires_at + self._leeway > now:
                    self._cache.move_to_end(token)
                    return cached
                del self._cache[token]
        principal = self._verify(token)
        with self._lock:
            self._cache[token] = principal
            while len(self._cache) > _CACHE_SIZE:
                self._cache.popitem(last=False)
        return principal

    def _verify(self, token: str) -> Principal:
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError:
            raise AuthenticationError("the bearer token is not a well-formed JWT") from None
        kid = header.get("kid")
        if kid is None and len(self._keys) == 1:
            key = next(iter(self._keys.values()))
        elif isinstance(kid, str) and kid in self._keys:
            key = self._keys[kid]
        else:
            raise AuthenticationError("the token is signed by an unknown key")
        try:
            claims = jwt.decode(
                token,
                key,
                algorithms=[key.algorithm_name],
                audience=self._audience,
                issuer=self._issuers,
                leeway=self._leeway,
                options={"require": REQUIRED_CLAIMS},
            )
        except jwt.ExpiredSignatureError:
            raise AuthenticationError("the token has expired") from None
        except jwt.InvalidAudienceError:
            raise AuthenticationError("the token is not meant for this audience") from None
        except jwt.InvalidIssuerError:
            raise AuthenticationError("the token's issuer is not trusted") from None
        except jwt.InvalidSignatureError:
            raise AuthenticationError("the token's signature does not verify") from None
        except jwt.MissingRequiredClaimError as exc:
            raise AuthenticationError(f"the token lacks the {exc.claim!r} claim") from None
        except jwt.PyJWTError:
            raise AuthenticationError("the token is not valid") from None
        subject = claims.get("sub")
        if not isinstance(subject, str) or not subject:
            raise AuthenticationError("the token has no subject")
        return Principal(subject, str(claims["iss"]), _scopes(claims), float(claims["exp"]))


def _scopes(claims: dict[str, Any]) -> frozenset[str]:
    scope = claims.get("scope")
    if isinstance(scope, str):
        return frozenset(scope.split())
    scp = claims.get("scp")
    if isinstance(scp, list):
        return frozenset(str(s) for s in scp)
    return frozenset()


class TokenIssuer:
    """Signs tokens with a private key: a service's own identity for the calls it makes, and the
    development stack's tokens. Production platforms get theirs from the company's identity provider."""

    def __init__(self, private_key_pem: bytes, kid: str, issuer: str, audience: str) -> None:
        try:
            self._key = serialization.load_pem_private_key(private_key_pem, password=None)
        except (ValueError, TypeError):
            raise KeyConfigError("the signing key is not an unencrypted PEM private key") from None
        self._algorithm = _algorithm_of(self._key)
        self._kid = kid
        self.issuer = issuer
        self.audience = audience

    @classmethod
    def from_file(cls, path: str | Path, kid: str, issuer: str, audience: str) -> TokenIssuer:
        return cls(Path(path).read_bytes(), kid, issuer, audience)

    def issue(
        self,
        subject: str,
        scopes: Iterable[str],
        ttl_seconds: float = 300.0,
        *,
        audience: str | None = None,
        issued_at: float | None = None,
    ) -> str:
        now = time.time() if issued_at is None else issued_at
        claims = {
            "sub": subject,
            "iss": self.issuer,
            "aud": audience or self.audience,
            "iat": int(now),
            "nbf": int(now),
            "exp": int(now + ttl_seconds),
            "jti": str(uuid.uuid4()),
            "scope": " ".join(sorted(set(scopes))),
        }
        return jwt.encode(claims, self._key, algorithm=self._algorithm, headers={"kid": self._kid})  # type: ignore[arg-type]


class ServiceToken:
    """A service's own token for its outgoing calls, re-signed shortly before it expires."""

    def __init__(self, issuer: TokenIssuer, service: str, scopes: Iterable[str], ttl_seconds: float = 300.0) -> None:
        self._issuer = issuer
        self.subject = f"service:{service}"
        self._scopes = frozenset(scopes)
        self._ttl = ttl_seconds
        self._token = ""
        self._renew_at = 0.0
        self._lock = threading.Lock()

    def get(self) -> str:
        now = time.time()
        with self._lock:
            if now >= self._renew_at:
                self._token = self._issuer.issue(self.subject, self._scopes, self._ttl, issued_at=now)
                # Renew at two thirds of the lifetime, so a call never leaves with a token about to lapse.
                self._renew_at = now + self._ttl * 2 / 3
            return self._token
