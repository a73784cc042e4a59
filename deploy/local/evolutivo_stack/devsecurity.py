"""Development credentials for the local stack, made on first start under ``data_dir/security``.

- ``ca.pem``/``ca-key.pem``: a development CA (ECDSA P-256), valid ten years;
- ``<service>.pem``/``<service>-key.pem``: each service's certificate, for ``localhost``,
  ``127.0.0.1``, ``::1`` and its service name, used both as server and as client (mutual TLS);
- ``client.pem``/``client-key.pem``: a client certificate for tools and tests (CN evolutivo-dev-client);
- ``jwt-signing-key.pem`` and ``jwks.json``: the development token issuer's key pair; the services
  verify tokens against ``jwks.json`` and sign their own service tokens with the key (in production
  each service has a key of its own and platforms' tokens come from the identity provider);
- ``dev-token``: a token with every scope for subject ``dev:admin``, re-signed on every start so
  that it always carries the scopes of the current RPC table (`grpcurl -H "authorization: Bearer
  $(cat .data/security/dev-token)" ...`);
- ``erp-credential-key``: the Fernet key the ERP gateway encrypts connection secrets with;
- ``customer-payment-details-key``: the Fernet key customer encrypts payment-method details with.

Existing files are kept, so certificates and keys survive restarts (delete the folder to renew).
Private keys are written with mode 0600. None of this is for production, where the same settings
point at Kubernetes secrets (docs/security.md).
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import json
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Final

from cryptography import x509
from cryptography.fernet import Fernet
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from evolutivo_runtime.security.scopes import ALL_SCOPES
from evolutivo_runtime.security.tokens import TokenIssuer, public_jwk

ISSUER: Final = "evolutivo-dev"
AUDIENCE: Final = "evolutivo"
KEY_ID: Final = "evolutivo-dev-1"
CLIENT_NAME: Final = "client"
DEV_SUBJECT: Final = "dev:admin"
_VALIDITY: Final = dt.timedelta(days=3650)


def _new_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def _write_private(path: Path, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)


def _name(common_name: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Evolutivo development"),
            x509.NameAttribute(NameOID.COMMON_NAME, common_name),
        ]
    )


class DevSecurity:
    def __init__(self, directory: Path, services: Iterable[str]) -> None:
        self.dir = directory
        self.services = tuple(services)

    # ------------------------------------------------------------------ paths

    @property
    def ca_file(self) -> Path:
        return self.dir / "ca.pem"

    def cert_file(self, name: str) -> Path:
        return self.dir / f"{name}.pem"

    def key_file(self, name: str) -> Path:
        return self.dir / f"{name}-key.pem"

    @property
    def signing_key_file(self) -> Path:
        return self.dir / "jwt-signing-key.pem"

    @property
    def jwks_file(self) -> Path:
        return self.dir / "jwks.json"

    @property
    def token_file(self) -> Path:
        return self.dir / "dev-token"

    @property
    def erp_key_file(self) -> Path:
        return self.dir / "erp-credential-key"

    @property
    def customer_key_file(self) -> Path:
        return self.dir / "customer-payment-details-key"

    # ------------------------------------------------------------------ creation

    def ensure(self) -> None:
        """Create whatever is missing; keep what exists; re-sign the development token."""
        self.dir.mkdir(parents=True, exist_ok=True)
        os.chmod(self.dir, 0o700)
        ca_key_file = self.dir / "ca-key.pem"
        if not (self.ca_file.exists() and ca_key_file.exists()):
            self._make_ca(ca_key_file)
        ca_cert = x509.load_pem_x509_certificate(self.ca_file.read_bytes())
        ca_key = serialization.load_pem_private_key(ca_key_file.read_bytes(), password=None)
        assert isinstance(ca_key, ec.EllipticCurvePrivateKey)
        for service in self.services:
            if not (self.cert_file(service).exists() and self.key_file(service).exists()):
                self._make_cert(service, ca_cert, ca_key, server=True)
        if not (self.cert_file(CLIENT_NAME).exists() and self.key_file(CLIENT_NAME).exists()):
            self._make_cert(CLIENT_NAME, ca_cert, ca_key, server=False)
        if not self.signing_key_file.exists():
            _write_private(self.signing_key_file, _key_pem(_new_key()))
        jwks = {"keys": [public_jwk(self.signing_key_file.read_bytes(), KEY_ID)]}
        self.jwks_file.write_text(json.dumps(jwks, indent=2) + "\n")
        if not self.erp_key_file.exists():
            _write_private(self.erp_key_file, Fernet.generate_key())
        if not self.customer_key_file.exists():
            _write_private(self.customer_key_file, Fernet.generate_key())
        _write_private(self.token_file, self.token(DEV_SUBJECT, ALL_SCOPES, ttl_seconds=30 * 86400).encode())

    def _make_ca(self, key_file: Path) -> None:
        key = _new_key()
        now = dt.datetime.now(dt.UTC)
        cert = (
            x509.CertificateBuilder()
            .subject_name(_name("Evolutivo development CA"))
            .issuer_name(_name("Evolutivo development CA"))
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + _VALIDITY)
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=False,
                    content_commitment=False,
                    key_encipherment=False,
                    data_encipherment=False,
                    key_agreement=False,
                    key_cert_sign=True,
                    crl_sign=True,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
            .sign(key, hashes.SHA256())
        )
        _write_private(key_file, _key_pem(key))
        self.ca_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))

    def _make_cert(
        self, name: str, ca_cert: x509.Certificate, ca_key: ec.EllipticCurvePrivateKey, *, server: bool
    ) -> None:
        key = _new_key()
        now = dt.datetime.now(dt.UTC)
        usages = [ExtendedKeyUsageOID.CLIENT_AUTH] + ([ExtendedKeyUsageOID.SERVER_AUTH] if server else [])
        builder = (
            x509.CertificateBuilder()
            .subject_name(_name(f"evolutivo-dev-{name}"))
            .issuer_name(ca_cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + _VALIDITY)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage(usages), critical=False)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
                critical=False,
            )
        )
        if server:
            builder = builder.add_extension(
                x509.SubjectAlternativeName(
                    [
                        x509.DNSName("localhost"),
                        x509.DNSName(name),
                        x509.DNSName(name.replace("_", "-")),
                        x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
                        x509.IPAddress(ipaddress.ip_address("::1")),
                    ]
                ),
                critical=False,
            )
        cert = builder.sign(ca_key, hashes.SHA256())
        _write_private(self.key_file(name), _key_pem(key))
        self.cert_file(name).write_bytes(cert.public_bytes(serialization.Encoding.PEM))

    # ------------------------------------------------------------------ use

    def issuer(self) -> TokenIssuer:
        return TokenIssuer.from_file(self.signing_key_file, KEY_ID, ISSUER, AUDIENCE)

    def token(self, subject: str, scopes: Iterable[str], ttl_seconds: float = 86400.0) -> str:
        return self.issuer().issue(subject, scopes, ttl_seconds)

    def service_env(self, service: str, prefix: str) -> dict[str, str]:
        """The security settings of one service (env variables with its prefix)."""
        env = {
            "TRANSPORT": "tls",
            "TLS_CERT_FILE": str(self.cert_file(service)),
            "TLS_KEY_FILE": str(self.key_file(service)),
            "TLS_CA_FILE": str(self.ca_file),
            "TLS_REQUIRE_CLIENT_CERT": "true",
            "AUTH_JWKS_FILE": str(self.jwks_file),
            "AUTH_ISSUERS": ISSUER,
            "AUTH_AUDIENCE": AUDIENCE,
            "AUTH_SIGNING_KEY_FILE": str(self.signing_key_file),
            "AUTH_SIGNING_KEY_ID": KEY_ID,
        }
        if service == "erp_gateway":
            env["CREDENTIAL_KEYS"] = self.erp_key_file.read_text().strip()
        if service == "customer":
            env["PAYMENT_DETAILS_KEYS"] = self.customer_key_file.read_text().strip()
        return {prefix + key: value for key, value in env.items()}
