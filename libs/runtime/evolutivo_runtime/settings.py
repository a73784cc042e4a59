"""Settings every service shares; each service subclasses with its own env prefix."""

from __future__ import annotations

from typing import Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class ServiceSettings(BaseSettings):
    """Read from the environment, e.g. CUSTOMER_DATABASE_URL for the customer service."""

    model_config = SettingsConfigDict(env_prefix="EVOLUTIVO_", extra="ignore")

    # The service's own database, e.g. postgresql://user@host:5432/evolutivo_customer
    database_url: str = "postgresql://postgres@127.0.0.1:5432/postgres"
    nats_url: str = "nats://127.0.0.1:4222"
    grpc_host: str = "127.0.0.1"
    grpc_port: int = 0
    # 0 disables the Prometheus endpoint.
    metrics_port: int = 0
    log_level: str = "INFO"
    # "controllable" shares one movable clock between services (development, tests, demo only).
    clock_mode: Literal["system", "controllable"] = "system"
    # JetStream stream replicas: 1 locally, 3 on a NATS cluster.
    stream_replicas: int = Field(default=1, ge=1, le=5)
    # How long JetStream remembers Nats-Msg-Id values to drop duplicate publishes.
    duplicate_window_seconds: float = 120.0
    outbox_batch_size: int = Field(default=500, ge=1)
    outbox_poll_seconds: float = Field(default=1.0, gt=0)
    publish_max_in_flight: int = Field(default=2000, ge=1)
    consumer_batch_size: int = Field(default=100, ge=1)
    # After a fetch that found fewer messages than a batch, wait this long before the next one, so
    # that under a steady trickle (single calls) each transaction applies several messages instead
    # of one: a few ms more delay per hop for a fraction of the CPU per event (docs/performance.md).
    consumer_linger_seconds: float = Field(default=0.01, ge=0, le=1)
    # The outbox relay makes at most one pass per this long when commits wake it: under load a
    # pass publishes several commits' events (and the consumers downstream get them together);
    # after a quiet spell a commit is published at once. 50 ms: +30-40% single calls per second
    # on 2 cores for at most 50 ms more per hop (docs/performance.md, "Sixth round").
    outbox_linger_seconds: float = Field(default=0.05, ge=0, le=1)
    # The outbox relay reads after what it published; every this long it reads the whole outbox
    # once all the same, for what its bookkeeping cannot foresee (messaging/outbox_cursor.py).
    outbox_sweep_seconds: float = Field(default=60.0, gt=0)
    # Deliveries of one message before it goes to the dead-letter subject.
    consumer_max_deliver: int = Field(default=5, ge=1)
    consumer_ack_wait_seconds: float = Field(default=30.0, gt=0)
    # `migrate`: how long a migration waits for a table lock before it rolls back and is tried
    # again (a lock queued behind a long transaction stalls every query on the table behind it),
    # and how many times in all (deploy/README.md, "Upgrades without downtime").
    migration_lock_timeout_seconds: float = Field(default=5.0, gt=0)
    migration_attempts: int = Field(default=10, ge=1)
    # Time allowed to finish in-flight calls on SIGTERM.
    shutdown_grace_seconds: float = Field(default=10.0, ge=0)
    db_pool_size: int = Field(default=10, ge=1)
    # RPCs one replica runs at once; gRPC answers the ones beyond RESOURCE_EXHAUSTED at once
    # instead of queueing them, so a flood cannot pile requests (and memory) up. 0: no limit.
    max_concurrent_rpcs: int = Field(default=100, ge=0)

    # --- Security (docs/security.md). Secure by default: a service without keys or certificates
    # refuses to start instead of serving in the clear.
    # "tls" (the default): serve and call over TLS with the files below. "plaintext": development only.
    transport: Literal["tls", "plaintext"] = "tls"
    # PEM files: this service's certificate (chain) and key, presented as server and as client,
    # and the CA that signs the peers' certificates.
    tls_cert_file: str = ""
    tls_key_file: str = ""
    tls_ca_file: str = ""
    # Mutual TLS: callers must present a certificate signed by tls_ca_file.
    tls_require_client_cert: bool = True
    # Name expected in the other services' certificates when their address is not in them.
    tls_server_name: str = ""
    # >0: grpc.health.v1 alone, in plaintext, on this port too (Kubernetes' gRPC probes cannot
    # speak TLS). It reveals only SERVING/NOT_SERVING.
    health_port: int = Field(default=0, ge=0, le=65535)
    # Token verification: public keys as a JWKS file or inline JSON, the accepted issuers
    # (comma-separated), our audience and the clock-skew leeway.
    auth_jwks_file: str = ""
    auth_jwks: str = ""
    auth_issuers: str = "evolutivo"
    auth_audience: str = "evolutivo"
    auth_leeway_seconds: float = Field(default=30.0, ge=0, le=300)
    # This service's own identity for the calls it makes: a PEM private key (its public half in
    # the others' JWKS under auth_signing_key_id), the issuer it signs as and the token lifetime.
    auth_signing_key_file: str = ""
    auth_signing_key_id: str = ""
    auth_service_issuer: str = ""
    auth_service_token_ttl_seconds: float = Field(default=300.0, ge=30, le=3600)
    # Limits on every server: the largest request (bytes) and the most items in any repeated field.
    max_message_bytes: int = Field(default=4 * 1024 * 1024, ge=64 * 1024)
    max_repeated_items: int = Field(default=1000, ge=1)
    # Per-caller token buckets, per replica: calls per second and burst, for the usage ingest and for
    # the expensive reads (scopes.py names which RPCs draw on which).
    # Ingest counts calls, not events: 5000/s lets one platform send the 1,500 single-event calls
    # per second issue 10 asks a replica to take (docs/performance.md), with room to spare.
    rate_limit_ingest_per_second: float = Field(default=5000.0, gt=0)
    rate_limit_ingest_burst: int = Field(default=10000, ge=1)
    rate_limit_read_per_second: float = Field(default=50.0, gt=0)
    rate_limit_read_burst: int = Field(default=100, ge=1)

    def accepted_issuers(self) -> list[str]:
        return [i.strip() for i in self.auth_issuers.split(",") if i.strip()]
