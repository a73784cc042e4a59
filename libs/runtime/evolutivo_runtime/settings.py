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
    # Deliveries of one message before it goes to the dead-letter subject.
    consumer_max_deliver: int = Field(default=5, ge=1)
    consumer_ack_wait_seconds: float = Field(default=30.0, gt=0)
    # Time allowed to finish in-flight calls on SIGTERM.
    shutdown_grace_seconds: float = Field(default=10.0, ge=0)
    db_pool_size: int = Field(default=10, ge=1)
