"""One interceptor for every RPC: request id, structured logging, metrics and error mapping, and
the guards every call passes (authentication, card data: security/interceptor.py,
sensitive_data.py).

The guards run inside this interceptor's one wrapper rather than as interceptors of their own: in
grpc.aio each interceptor costs every call an intercept step, a handler object and a coroutine
more, which on a balance read was ~13% of the service's CPU for three interceptors.
"""

from __future__ import annotations

import inspect
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import Any, NoReturn, Protocol

import grpc
from grpc_status import rpc_status
from prometheus_client import Counter, Histogram

from evolutivo_runtime import transient_errors
from evolutivo_runtime.errors import InvalidArgument, ServiceError, to_rpc_status
from evolutivo_runtime.ids import new_uuid
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
INFRASTRUCTURE_PREFIXES = ("/grpc.health.", "/grpc.reflection.")

Behaviour = Callable[..., Any]
Context = grpc.aio.ServicerContext[Any, Any]


def new_request_id() -> str:
    # Unique, not secret: evolutivo_runtime.ids (uuid4's os.urandom per call cost ~10 us of CPU
    # on a balance read).
    return str(new_uuid())


class _Meters:
    """A method's labelled metrics, looked up once (prometheus' labels() hashes and locks)."""

    def __init__(self, method: str) -> None:
        _, self._service, self._name = method.split("/")
        self.latency = RPC_LATENCY.labels(self._service, self._name)
        self._handled: dict[str, Any] = {}

    def handled(self, code: Any) -> Any:
        name = code.name if hasattr(code, "name") else str(code)
        counter = self._handled.get(name)
        if counter is None:
            counter = self._handled[name] = RPC_HANDLED.labels(self._service, self._name, name)
        return counter


class GuardedCall:
    """What a guard does for one call. Each step refuses the call by raising a ServiceError,
    before the handler runs, so a refused call changes nothing. The defaults do nothing."""

    def admit(self) -> None:
        """Before anything is read (who calls, how often)."""

    def inspect(self, request: object) -> None:
        """Each request, each streamed one too."""

    def enter(self, request: object | None) -> object:
        """Once admitted, around the handler: what `done` and `leave` are given back."""
        return None

    def done(self, entered: object) -> Awaitable[None] | None:
        """After the handler succeeded: work to await, or None."""
        return None

    def leave(self, entered: object) -> None:
        """After the handler, whatever its outcome."""


class Guard(Protocol):
    def prepare(self, details: grpc.HandlerCallDetails) -> GuardedCall | None:
        """The guard's work for this call, decided from its method and metadata; None: none."""
        ...


class _Guarded:
    """The guards of one call, run in order (and left in reverse)."""

    def __init__(self, calls: Sequence[GuardedCall]) -> None:
        self.calls = calls

    def check(self, request: object | None) -> None:
        for call in self.calls:
            call.admit()
        if request is not None:
            self.inspect(request)

    def inspect(self, request: object) -> None:
        for call in self.calls:
            call.inspect(request)

    def enter(self, request: object | None) -> list[object]:
        return [call.enter(request) for call in self.calls]

    async def done(self, entered: list[object]) -> None:
        for call, state in zip(reversed(self.calls), reversed(entered), strict=True):
            pending = call.done(state)
            if pending is not None:
                await pending

    def leave(self, entered: list[object]) -> None:
        for call, state in zip(reversed(self.calls), reversed(entered), strict=True):
            call.leave(state)


class ServiceInterceptor(grpc.aio.ServerInterceptor):  # type: ignore[type-arg]
    def __init__(self, error_domain: str, guards: Sequence[Guard] = ()) -> None:
        # ErrorInfo.domain, e.g. "customer.evolutivo.io".
        self._domain = error_domain
        self._guards = tuple(guards)
        self._meters: dict[str, _Meters] = {}

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler[Any, Any]]],
        details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler[Any, Any]:
        handler = await continuation(details)
        if handler is None:
            return handler
        method: str = details.method
        guarded = _Guarded([c for g in self._guards if (c := g.prepare(details)) is not None])
        quiet = method.startswith(INFRASTRUCTURE_PREFIXES)
        if quiet and not guarded.calls:
            return handler
        serializers = {
            "request_deserializer": handler.request_deserializer,
            "response_serializer": handler.response_serializer,
        }
        if handler.unary_unary is not None:
            return grpc.unary_unary_rpc_method_handler(
                self._unary(method, handler.unary_unary, details, guarded, quiet), **serializers
            )
        if handler.stream_unary is not None:
            return grpc.stream_unary_rpc_method_handler(
                self._unary(method, handler.stream_unary, details, guarded, quiet, streamed=True), **serializers
            )
        # Server-streaming methods get request ids and logs from their own code for now; the
        # guards still run.
        if handler.unary_stream is not None:
            return grpc.unary_stream_rpc_method_handler(
                self._streaming(method, handler.unary_stream, guarded, streamed=False), **serializers
            )
        if handler.stream_stream is not None:
            return grpc.stream_stream_rpc_method_handler(
                self._streaming(method, handler.stream_stream, guarded, streamed=True), **serializers
            )
        return handler

    def _inspected(
        self, method: str, guarded: _Guarded, requests: AsyncIterator[Any], context: Context
    ) -> AsyncIterator[Any]:
        """A client stream, each request inspected as the handler takes it; a refused one aborts
        the call there (grpc's AbortError, which a handler does not take for its own error). A
        handler that reads with context.read() instead is not covered; no contract of ours does."""

        async def inspected() -> AsyncIterator[Any]:
            async for request in requests:
                try:
                    guarded.inspect(request)
                except ServiceError as error:
                    await self._refuse(method, context, error)
                yield request

        return inspected()

    async def _refuse(self, method: str, context: Context, error: ServiceError) -> None:
        # The field path and the reason only: never a value, never the token.
        extra = {"rpc": method, "code": error.code.name, "reason": error.reason}
        if isinstance(error, InvalidArgument):
            extra["field"] = error.field
        log.info("rpc refused", extra=extra)
        await self._answer(context, error)

    async def _answer(self, context: Context, error: ServiceError) -> NoReturn:
        status = rpc_status.to_status(to_rpc_status(error, self._domain))
        await context.abort(status.code, status.details, status.trailing_metadata)

    def _unary(
        self,
        method: str,
        behaviour: Behaviour,
        details: grpc.HandlerCallDetails,
        guarded: _Guarded,
        quiet: bool,
        streamed: bool = False,
    ) -> Callable[[Any, Context], Awaitable[Any]]:
        """A call answered once (unary or client-streaming): timed, counted, its errors mapped."""
        meters = self._meters.get(method)
        if meters is None:
            meters = self._meters[method] = _Meters(method)
        metadata = dict(details.invocation_metadata or ())

        async def wrapped(request: Any, context: Context) -> Any:
            request_id = str(metadata.get(REQUEST_ID_METADATA) or new_request_id())
            token = request_id_var.set(request_id)
            started = time.perf_counter()
            code = grpc.StatusCode.OK
            try:
                guarded.check(None if streamed else request)
                entered = guarded.enter(None if streamed else request)
                try:
                    requests = self._inspected(method, guarded, request, context) if streamed else request
                    result = await behaviour(requests, context)
                    await guarded.done(entered)
                    return result
                finally:
                    guarded.leave(entered)
            except ServiceError as error:
                code = error.code
                await self._refuse(method, context, error)
            except grpc.aio.AbortError:
                code = context.code() or grpc.StatusCode.UNKNOWN
                raise
            except Exception as error:
                # A deadlock, a database or NATS restarting is not a bug: the caller may retry (transient_errors).
                retry = transient_errors.retryable(error)
                if retry is not None:
                    code = retry.code
                    log.warning(
                        "rpc failed on the database or NATS; answered retryable",
                        extra={"rpc": method, "reason": retry.reason, **retry.metadata},
                        exc_info=True,
                    )
                    await self._answer(context, retry)
                code = grpc.StatusCode.INTERNAL
                log.exception("rpc failed", extra={"rpc": method})
                await context.abort(grpc.StatusCode.INTERNAL, "internal error; see the service log for " + request_id)
            finally:
                if not quiet:
                    meters.latency.observe(time.perf_counter() - started)
                    meters.handled(code).inc()
                request_id_var.reset(token)

        return wrapped

    def _streaming(self, method: str, behaviour: Behaviour, guarded: _Guarded, streamed: bool) -> Behaviour:
        """A server-streaming call: the guards only. It keeps the handler's form: grpc.aio lets a
        coroutine write with context.write() and iterates a generator."""

        async def admitted(request: Any, context: Context) -> list[object]:
            try:
                guarded.check(None if streamed else request)
            except ServiceError as error:
                await self._refuse(method, context, error)
            return guarded.enter(None if streamed else request)

        def requests(request: Any, context: Context) -> Any:
            return self._inspected(method, guarded, request, context) if streamed else request

        if inspect.iscoroutinefunction(behaviour):

            async def writer(request: Any, context: Context) -> None:
                entered = await admitted(request, context)
                try:
                    await behaviour(requests(request, context), context)
                    await guarded.done(entered)
                finally:
                    guarded.leave(entered)

            return writer

        async def generator(request: Any, context: Context) -> AsyncIterator[Any]:
            entered = await admitted(request, context)
            try:
                async for response in _responses(behaviour(requests(request, context), context)):
                    yield response
                await guarded.done(entered)
            finally:
                guarded.leave(entered)

        return generator


async def _responses(responses: Any) -> AsyncIterator[Any]:
    if hasattr(responses, "__aiter__"):
        async for response in responses:
            yield response
    else:
        for response in responses:
            yield response
