"""Runs one service: gRPC server, health, reflection, outbox relay and event consumers.

Lifecycle (after the official grpc aio and nats.py examples):
  start serving NOT_SERVING -> wait for migrated database and NATS -> declare streams and
  consumers -> relay, consumers and background loops running -> SERVING -> SIGTERM -> NOT_SERVING,
  consumers stop fetching and background loops stop, in-flight RPCs finish within the grace
  period, the relay drains, NATS drains.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import grpc
from evolutivo.admin.v1 import audit_admin_service_pb2, clock_admin_service_pb2, dead_letter_admin_service_pb2
from evolutivo.admin.v1 import audit_admin_service_pb2_grpc as audit_grpc
from evolutivo.admin.v1 import clock_admin_service_pb2_grpc as clock_grpc
from evolutivo.admin.v1 import dead_letter_admin_service_pb2_grpc as dlq_grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection
from nats.aio.client import Client as NatsClient
from nats.js import JetStreamContext
from prometheus_client import start_http_server
from sqlalchemy import Table
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from evolutivo_runtime import clients
from evolutivo_runtime.clock import Clock, SharedClock, SystemClock
from evolutivo_runtime.db import session_factory
from evolutivo_runtime.logging import configure_logging
from evolutivo_runtime.messaging.consumer import EventConsumer, Subscription
from evolutivo_runtime.messaging.dead_letters import DeadLetterQueue
from evolutivo_runtime.messaging.streams import declare_dlq_stream, declare_service_stream
from evolutivo_runtime.migrations import is_migrated
from evolutivo_runtime.progress import consumer_task
from evolutivo_runtime.security import scopes
from evolutivo_runtime.security.audit import AuditAdminServicer
from evolutivo_runtime.security.interceptor import AuthGuard
from evolutivo_runtime.security.ratelimit import Limit, RateLimiter
from evolutivo_runtime.security.tokens import ServiceToken, TokenIssuer, TokenVerifier, load_jwks
from evolutivo_runtime.security.transport import server_credentials, tls_files
from evolutivo_runtime.server import loop_lag
from evolutivo_runtime.server.admin import ClockAdminServicer, DeadLetterAdminServicer
from evolutivo_runtime.server.background import open_connections, supervise
from evolutivo_runtime.server.interceptors import ServiceInterceptor
from evolutivo_runtime.server.relay_thread import RelayThread
from evolutivo_runtime.server.sensitive_data import SensitiveDataGuard
from evolutivo_runtime.settings import ServiceSettings
from evolutivo_runtime.uow import UnitOfWork

log = logging.getLogger(__name__)

# The largest response a server sends (bill PDFs); the largest request is a setting.
MAX_MESSAGE_BYTES = clients.MAX_MESSAGE_BYTES


@dataclass
class Runtime:
    """What a service's wiring is built from."""

    name: str
    settings: ServiceSettings
    engine: AsyncEngine
    sessions: async_sessionmaker[AsyncSession]
    nc: NatsClient
    js: JetStreamContext
    clock: Clock


@dataclass
class Servicer:
    add_to_server: Callable[[Any, grpc.aio.Server], None]
    servicer: Any
    # Full protobuf name, e.g. "evolutivo.customer.v1.CustomerService": for health and reflection.
    full_name: str


@dataclass
class Wiring:
    servicers: list[Servicer]
    uow_factory: Callable[[], UnitOfWork]
    subscriptions: Sequence[Subscription[Any]] = field(default_factory=list)
    # Streams of other services this one consumes, declared (idempotently) before binding.
    upstream_services: Sequence[str] = field(default_factory=list)
    # Loops every replica runs in the background (e.g. billing's cycle closer): each is called
    # with an event set at shutdown, started and stopped with the consumers, restarted if it crashes.
    background: Sequence[Callable[[asyncio.Event], Awaitable[None]]] = field(default_factory=list)


@dataclass
class ServiceDefinition:
    name: str
    settings: ServiceSettings
    migrations_dir: Path
    outbox: Table
    inbox: Table
    wire: Callable[[Runtime], Wiring]


def _verifier(settings: ServiceSettings) -> TokenVerifier:
    if settings.auth_jwks_file:
        text = Path(settings.auth_jwks_file).read_text()
    elif settings.auth_jwks:
        text = settings.auth_jwks
    else:
        raise ValueError("no token verification keys: set AUTH_JWKS_FILE or AUTH_JWKS (docs/security.md)")
    return TokenVerifier(
        load_jwks(text), settings.accepted_issuers(), settings.auth_audience, settings.auth_leeway_seconds
    )


def configure_clients(name: str, settings: ServiceSettings) -> None:
    """This service's outgoing channels: TLS with its certificate, and its own signed token."""
    token = None
    if settings.auth_signing_key_file:
        issuer = TokenIssuer.from_file(
            settings.auth_signing_key_file,
            settings.auth_signing_key_id or name,
            settings.auth_service_issuer or settings.accepted_issuers()[0],
            settings.auth_audience,
        )
        source = ServiceToken(
            issuer, name, scopes.SERVICE_SCOPES.get(name, ()), settings.auth_service_token_ttl_seconds
        )
        token = source.get
    elif scopes.SERVICE_SCOPES.get(name):
        log.warning("no AUTH_SIGNING_KEY_FILE: calls to other services will be refused (UNAUTHENTICATED)")
    clients.configure(clients.ClientSecurity(tls_files(settings), token, settings.tls_server_name))


async def serve(definition: ServiceDefinition) -> None:
    settings = definition.settings
    name = definition.name
    configure_logging(name, settings.log_level)
    if settings.metrics_port:
        start_http_server(settings.metrics_port, addr=settings.grpc_host)

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)

    # Security first: a service whose keys or certificates are missing stops here, before it
    # serves anything (docs/security.md).
    verifier = _verifier(settings)
    credentials = server_credentials(settings)
    configure_clients(name, settings)
    limiter = RateLimiter(
        {
            "ingest": Limit(settings.rate_limit_ingest_per_second, settings.rate_limit_ingest_burst),
            "expensive_read": Limit(settings.rate_limit_read_per_second, settings.rate_limit_read_burst),
        }
    )

    connections = await open_connections(
        settings.database_url, settings.db_pool_size, settings.nats_url, stop, f"evolutivo-{name}"
    )
    if connections is None:
        return
    engine, nc = connections
    sessions = session_factory(engine)
    js = nc.jetstream(publish_async_max_pending=settings.publish_max_in_flight)
    clock: Clock
    if settings.clock_mode == "controllable":
        shared = SharedClock()
        await shared.start(js)
        clock = shared
    else:
        clock = SystemClock()

    domain = f"{name}.evolutivo.io"
    server = grpc.aio.server(
        interceptors=[
            ServiceInterceptor(
                domain,
                guards=[
                    AuthGuard(verifier, limiter, settings.max_repeated_items, clock, sessions),
                    SensitiveDataGuard(),
                ],
            )
        ],
        options=[
            ("grpc.max_receive_message_length", settings.max_message_bytes),
            ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
        ],
        maximum_concurrent_rpcs=settings.max_concurrent_rpcs or None,
    )

    # Every handler is registered before the server starts (grpc.aio requires it); the health
    # service answers NOT_SERVING until the database is migrated and the consumers are bound.
    runtime = Runtime(name, settings, engine, sessions, nc, js, clock)
    wiring = definition.wire(runtime)
    for svc in wiring.servicers:
        svc.add_to_server(svc.servicer, server)
    dead_letters = DeadLetterQueue(js, name, clock)
    dlq_grpc.add_DeadLetterAdminServiceServicer_to_server(DeadLetterAdminServicer(dead_letters), server)
    names = [svc.full_name for svc in wiring.servicers]
    names.append(dead_letter_admin_service_pb2.DESCRIPTOR.services_by_name["DeadLetterAdminService"].full_name)
    audit_grpc.add_AuditAdminServiceServicer_to_server(AuditAdminServicer(sessions), server)
    names.append(audit_admin_service_pb2.DESCRIPTOR.services_by_name["AuditAdminService"].full_name)
    if isinstance(clock, SharedClock):
        clock_grpc.add_ClockAdminServiceServicer_to_server(ClockAdminServicer(clock), server)
        names.append(clock_admin_service_pb2.DESCRIPTOR.services_by_name["ClockAdminService"].full_name)
    health_servicer = health.aio.HealthServicer()  # type: ignore[attr-defined]  # grpc-stubs lags grpcio
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    reflection.enable_server_reflection([*names, health.SERVICE_NAME, reflection.SERVICE_NAME], server)
    for service_name in ["", *names]:
        await health_servicer.set(service_name, health_pb2.HealthCheckResponse.NOT_SERVING)
    address = f"{settings.grpc_host}:{settings.grpc_port}"
    if credentials is None:
        log.warning("serving in PLAINTEXT (transport=plaintext): for development only")
        port = server.add_insecure_port(address)
    else:
        port = server.add_secure_port(address, credentials)
    health_server: grpc.aio.Server | None = None
    if settings.health_port:
        health_server = grpc.aio.server()
        health_pb2_grpc.add_HealthServicer_to_server(health_servicer, health_server)
        health_server.add_insecure_port(f"{settings.grpc_host}:{settings.health_port}")
        await health_server.start()
    await server.start()
    log.info(
        "grpc listening",
        extra={
            "address": f"{settings.grpc_host}:{port}",
            "transport": settings.transport,
            "mutual_tls": credentials is not None and settings.tls_require_client_cert,
        },
    )

    # Readiness: the database must stand at the head of this service's migrations.
    while not await _migrated(engine, definition.migrations_dir):
        log.info("waiting for database migrations")
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), timeout=1.0)
        if stop.is_set():
            await server.stop(0)
            if health_server is not None:
                await health_server.stop(0)
            await nc.close()
            await engine.dispose()
            return

    await declare_service_stream(js, name, settings.stream_replicas, settings.duplicate_window_seconds)
    await declare_dlq_stream(js, settings.stream_replicas, settings.duplicate_window_seconds)
    for upstream in wiring.upstream_services:
        await declare_service_stream(js, upstream, settings.stream_replicas, settings.duplicate_window_seconds)

    consumers = [
        EventConsumer(
            js,
            sub,
            wiring.uow_factory,
            definition.inbox,
            dead_letters,
            settings.consumer_batch_size,
            settings.consumer_max_deliver,
            settings.consumer_ack_wait_seconds,
            linger=settings.consumer_linger_seconds,
        )
        for sub in wiring.subscriptions
    ]
    for consumer in consumers:
        await consumer.setup()

    consumer_stop = asyncio.Event()
    tasks = [
        asyncio.create_task(
            supervise(consumer_task(c.subscription.durable), partial(c.run, consumer_stop), consumer_stop)
        )
        for c in consumers
    ]
    tasks += [
        asyncio.create_task(
            supervise(
                f"background:{getattr(loop_fn, '__qualname__', repr(loop_fn))}",
                partial(loop_fn, consumer_stop),
                consumer_stop,
            )
        )
        for loop_fn in wiring.background
    ]
    tasks.append(
        asyncio.create_task(supervise("background:loop_lag", partial(loop_lag.watch, consumer_stop), consumer_stop))
    )
    # Its own thread and event loop, so its round trips do not queue behind the RPCs' (relay_thread.py).
    relay = RelayThread(name, settings, definition.outbox, on_crash=lambda: loop.call_soon_threadsafe(stop.set))
    relay.start()

    for service_name in ["", *names]:
        await health_servicer.set(service_name, health_pb2.HealthCheckResponse.SERVING)
    log.info("serving", extra={"port": port, "services": names})

    await stop.wait()
    log.info("shutting down")
    await health_servicer.enter_graceful_shutdown()
    consumer_stop.set()
    await asyncio.gather(*tasks, return_exceptions=True)
    await server.stop(settings.shutdown_grace_seconds)
    if health_server is not None:
        await health_server.stop(0)
    # RPCs are done, so the outbox holds everything they wrote: publish it, then stop.
    relay.stop()
    if not await relay.join(timeout=max(settings.shutdown_grace_seconds, 5.0)):
        log.warning("outbox relay did not finish in time; what it did not publish waits in the outbox")
    if isinstance(clock, SharedClock):
        await clock.stop()
    for consumer in consumers:
        await consumer.close()
    try:
        await nc.drain()
    except Exception as exc:  # NATS already gone: nothing left to flush
        log.warning("NATS drain incomplete", extra={"nats_error": repr(exc)})
        await nc.close()
    await engine.dispose()
    log.info("stopped")


async def _migrated(engine: AsyncEngine, migrations_dir: Path) -> bool:
    try:
        return await is_migrated(engine, migrations_dir)
    except Exception as exc:  # database not reachable yet
        log.warning("database not ready", extra={"db_error": repr(exc)})
        return False
