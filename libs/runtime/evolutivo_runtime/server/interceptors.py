"""One interceptor for every RPC: request id, structured logging, metrics and error mapping."""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import grpc
from grpc_status import rpc_status
from prometheus_client import Counter, Histogram

from evolutivo_runtime.errors import ServiceError, to_rpc_status
from evolutivo_runtime.logging import request_id_var

log = logging.getLogger("evolutivo.rpc")

RPC_HANDLED = Counter("grpc_server_handled_total", "RPCs completed", ["grpc_service", "grpc_method", "grpc_code"])
RPC_LATENCY = Histogram(
    "grpc_server_handling_seconds",
    "RPC latency",
    ["grpc_service", "grpc_method"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0),
)

REQUEST_ID_METADATA = "x-request-id"
# Health and reflection are polled constantly; they are neither logged nor timed.
_QUIET_PREFIXES = ("/grpc.health.", "/grpc.reflection.")


class ServiceInterceptor(grpc.aio.ServerInterceptor):  # type: ignore[type-arg]
    def __init__(self, error_domain: str) -> None:
        # ErrorInfo.domain, e.g. "customer.evolutivo.io".
        self._domain = error_domain

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler[Any, Any]]],
        details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler[Any, Any]:
        handler = await continuation(details)
        method: str = details.method
        if handler is None or method.startswith(_QUIET_PREFIXES):
            return handler
        if handler.unary_unary is not None:
            return grpc.unary_unary_rpc_method_handler(
                self._wrap(method, handler.unary_unary, details),
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer,
            )
        if handler.stream_unary is not None:
            return grpc.stream_unary_rpc_method_handler(
                self._wrap(method, handler.stream_unary, details),
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer,
            )
        # Server-streaming methods get request ids and logs from their own code for now.
        return handler

    def _wrap(
        self, method: str, behaviour: Callable[..., Any], details: Any
    ) -> Callable[[Any, grpc.aio.ServicerContext[Any, Any]], Awaitable[Any]]:
        _, service, name = method.split("/")
        metadata = dict(details.invocation_metadata or ())
        domain = self._domain

        async def wrapped(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
            request_id = str(metadata.get(REQUEST_ID_METADATA) or uuid.uuid4())
            token = request_id_var.set(request_id)
            started = time.perf_counter()
            code = grpc.StatusCode.OK
            try:
                return await behaviour(request, context)
            except ServiceError as error:
                code = error.code
                status = rpc_status.to_status(to_rpc_status(error, domain))
                log.info("rpc refused", extra={"rpc": method, "code": code.name, "reason": error.reason})
                await context.abort(status.code, status.details, status.trailing_metadata)
            except grpc.aio.AbortError:
                code = context.code() or grpc.StatusCode.UNKNOWN
                raise
            except Exception:
                code = grpc.StatusCode.INTERNAL
                log.exception("rpc failed", extra={"rpc": method})
                await context.abort(grpc.StatusCode.INTERNAL, "internal error; see the service log for " + request_id)
            finally:
                elapsed = time.perf_counter() - started
                RPC_HANDLED.labels(service, name, code.name if hasattr(code, "name") else str(code)).inc()
                RPC_LATENCY.labels(service, name).observe(elapsed)
                request_id_var.reset(token)

        return wrapped
