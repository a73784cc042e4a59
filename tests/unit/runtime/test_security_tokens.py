"""Token verification: what a caller must present, and every way a token is refused."""

from __future__ import annotations

import json
import time
from collections.abc import Callable

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from evolutivo_runtime.security.tokens import (
    AuthenticationError,
    KeyConfigError,
    ServiceToken,
    TokenIssuer,
    TokenVerifier,
    load_jwks,
    public_jwk,
)


def _pem() -> bytes:
    key = ec.generate_private_key(ec.SECP256R1())
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


KEY = _pem()
OTHER_KEY = _pem()
ISSUER = TokenIssuer(KEY, "k1", "idp", "evolutivo")


def _verifier(leeway: float = 0.0) -> TokenVerifier:
    jwks = json.dumps({"keys": [public_jwk(KEY, "k1")]})
    return TokenVerifier(load_jwks(jwks), ["idp", "other-idp"], "evolutivo", leeway)


def test_a_valid_token_gives_the_subject_and_scopes() -> None:
    principal = _verifier().verify(ISSUER.issue("platform:crm", ["accounts:read", "usage:write"]))
    assert principal.subject == "platform:crm"
    assert principal.issuer == "idp"
    assert principal.scopes == {"accounts:read", "usage:write"}
    assert principal.has("usage:write") and not principal.has("payments:write")


# Tokens are made when the test runs, not when it is collected: a suite that runs for longer than a
# token's lifetime would otherwise see them all expired.
@pytest.mark.parametrize(
    ("make_token", "message"),
    [
        (lambda: ISSUER.issue("x", [], ttl_seconds=-60), "expired"),
        (lambda: TokenIssuer(OTHER_KEY, "k1", "idp", "evolutivo").issue("x", []), "signature"),
        (lambda: TokenIssuer(OTHER_KEY, "k9", "idp", "evolutivo").issue("x", []), "unknown key"),
        (lambda: ISSUER.issue("x", [], audience="someone-else"), "audience"),
        (lambda: TokenIssuer(KEY, "k1", "rogue", "evolutivo").issue("x", []), "issuer"),
        (lambda: "not-a-jwt", "well-formed"),
        (lambda: "", "well-formed"),
    ],
    ids=["expired", "other-key", "unknown-kid", "audience", "issuer", "garbage", "empty"],
)
def test_bad_tokens_are_refused(make_token: Callable[[], str], message: str) -> None:
    with pytest.raises(AuthenticationError, match=message):
        _verifier().verify(make_token())


def test_an_unsigned_token_is_refused() -> None:
    unsigned = jwt.encode(
        {"sub": "x", "iss": "idp", "aud": "evolutivo", "exp": int(time.time()) + 60, "iat": int(time.time())},
        key=None,
        algorithm="none",
        headers={"kid": "k1"},
    )
    with pytest.raises(AuthenticationError):
        _verifier().verify(unsigned)


def test_required_claims() -> None:
    private = serialization.load_pem_private_key(KEY, password=None)
    no_subject = jwt.encode(
        {"iss": "idp", "aud": "evolutivo", "exp": int(time.time()) + 60, "iat": int(time.time())},
        private,  # type: ignore[arg-type]
        algorithm="ES256",
        headers={"kid": "k1"},
    )
    with pytest.raises(AuthenticationError, match="sub"):
        _verifier().verify(no_subject)


def test_leeway_absorbs_small_clock_skew() -> None:
    token = ISSUER.issue("x", [], ttl_seconds=-5)
    assert _verifier(leeway=30).verify(token).subject == "x"


def test_a_cached_token_still_expires() -> None:
    verifier = _verifier()
    token = ISSUER.issue("x", [], issued_at=time.time() - 100, ttl_seconds=101)
    assert verifier.verify(token).subject == "x"
    time.sleep(1.5)  # past its exp, which the cache must honour
    with pytest.raises(AuthenticationError, match="expired"):
        verifier.verify(token)


def test_key_configuration_errors() -> None:
    with pytest.raises(KeyConfigError):
        load_jwks("{}")
    with pytest.raises(KeyConfigError, match="private"):
        private = json.loads(jwt.algorithms.ECAlgorithm.to_jwk(serialization.load_pem_private_key(KEY, None)))  # type: ignore[arg-type]
        load_jwks(json.dumps({"keys": [private]}))
    with pytest.raises(KeyConfigError):
        TokenVerifier(load_jwks(json.dumps(public_jwk(KEY, "k1"))), [], "evolutivo")


def test_service_token_is_renewed_before_it_expires() -> None:
    source = ServiceToken(ISSUER, "billing", {"adjustments:write"}, ttl_seconds=300)
    first = source.get()
    assert source.get() == first  # reused while fresh
    principal = _verifier().verify(first)
    assert principal.subject == "service:billing"
    assert principal.scopes == {"adjustments:write"}
