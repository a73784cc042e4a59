"""Who may call what, how often and how much: one server interceptor for every RPC.

For every method except the public health check, in this order:

1. authentication: `authorization: Bearer <JWT>` must verify (tokens.py) -> else UNAUTHENTICATED;
2. authorisation: the method must be in scopes.RULES and the token carry its scope -> else
   PERMISSION_DENIED (a method missing from the table is denied, never allowed);
3. rate limit: the rule's bucket, per caller (the token subject) -> else RESOURCE_EXHAUSTED with a
   google.rpc.RetryInfo saying when to come back;
4. batch limit: no repeated field of a request may hold more than `max_repeated_items` items ->
   else INVALID_ARGUMENT naming the field;
5. audit: a method whose rule mutates runs inside an AuditContext (audit.py).

Each refusal happens before the handler runs, so a refused call changes nothing. Register it
after ServiceInterceptor (which then counts and logs the refusals) and before
SensitiveDataInterceptor (which need not look at unauthenticated requests).
"""

from __future__ import annotations

import contextvars
import inspect
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from typing import Any

import grpc
from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import Message
from grpc_status import rpc_status
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from evolutivo_runtime.clock import Clock
from evolutivo_runtime.errors import (
    InvalidArgument,
    PermissionDenied,
    ResourceExhausted,
    ServiceError,
    Unauthenticated,
    to_rpc_status,
)
from evolutivo_runtime.logging import request_id_var
from evolutivo_runtime.security import scopes
from evolutivo_runtime.security.audit import (
    AuditContext,
    current_audit,
    record_after_call,
    request_digest,
    resource_ids,
)
from evolutivo_runtime.security.ratelimit import RateLimiter
from evolutivo_runtime.security.tokens import AuthenticationError, Principal, TokenVerifier
from evolutivo_runtime.security.transport import AUTHORIZATION_METADATA
from evolutivo_runtime.server import Context
from evolutivo_runtime.server.descriptors import reaches

log = logging.getLogger("evolutivo.rpc")

current_principal: contextvars.ContextVar[Principal | None] = contextvars.ContextVar("principal", default=None)

Behaviour = Callable[..., Any]


def oversized_field(message: Message, limit: int, prefix: str = "") -> str | None:
    """Path of the first repeated field (at any depth) holding more than `limit` items."""
    found = _oversized(message, limit)
    if found is None:
        return None
    return ".".join([prefix, *reversed(found)] if prefix else reversed(found))


def _repeated(field: FieldDescriptor) -> bool:
    return field.is_repeated


def _oversized(message: Message, limit: int) -> list[str] | None:
    # The path's field names, innermost first: spelt out only for an oversized field.
    for fd, value in message.ListFields():
        if fd.is_repeated and len(value) > limit:
            return [fd.name]
        nested = fd.message_type
        # A map's entries are not descended into; nor is a type with no list at any depth (a batch
        # of usage events is not walked event by event for their Timestamps).
        if nested is None or nested.GetOptions().map_entry or not reaches(nested, _repeated):
            continue
        items: Iterable[Message] = value if fd.is_repeated else (value,)
        for item in items:
            found = _oversized(item, limit)
            if found is not None:
                found.append(fd.name)
                return found
    return None


def _bearer(details: grpc.HandlerCallDetails) -> str | None:
    for key, value in details.invocation_metadata or ():
        if key == AUTHORIZATION_METADATA:
            text = value.decode() if isinstance(value, bytes) else str(value)
            scheme, _, token = text.partition(" ")
            return token.strip() if scheme.lower() == "bearer" and token.strip() else ""
    return None


class AuthInterceptor(grpc.aio.ServerInterceptor):  # type: ignore[type-arg]
    def __init__(
        self,
        error_domain: str,
        verifier: TokenVerifier,
        limiter: RateLimiter,
        max_repeated_items: int,
        clock: Clock,
        audit_sessions: async_sessionmaker[AsyncSession] | None = None,
        rules: dict[str, scopes.Rule] | None = None,
    ) -> None:
        self._domain = error_domain
        self._verifier = verifier
        self._limiter = limiter
        self._max_items = max_repeated_items
        self._clock = clock
        self._audit_sessions = audit_sessions
        self._rules = scopes.RULES if rules is None else rules

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler[Any, Any]]],
        details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler[Any, Any]:
        handler = await continuation(details)
        method: str = details.method
        if handler is None or scopes.is_public(method):
            return handler
        # Decided before the handler is entered; the wrappers below only act on the decision.
        refusal: ServiceError | None = None
        principal: Principal | None = None
        rule = self._rules.get(method)
        token = _bearer(details)
        if token is None:
            refusal = Unauthenticated("TOKEN_MISSING", "this call needs a bearer token (authorization metadata)")
        else:
            try:
                principal = self._verifier.verify(token)
            except AuthenticationError as exc:
                refusal = Unauthenticated("TOKEN_INVALID", str(exc))
        if principal is not None:
            if rule is None:
                refusal = PermissionDenied("METHOD_NOT_DECLARED", f"{method} has no declared scope: nobody may call it")
            elif not principal.has(rule.scope):
                refusal = PermissionDenied(
                    "SCOPE_MISSING", f"{method} needs the scope {rule.scope!r}", {"scope": rule.scope}
                )
        serializers = {
            "request_deserializer": handler.request_deserializer,
            "response_serializer": handler.response_serializer,
        }
        call = _Call(self, method, rule, principal, refusal)
        if handler.unary_unary is not None:
            return grpc.unary_unary_rpc_method_handler(call.unary_unary(handler.unary_unary), **serializers)
        if handler.unary_stream is not None:
            return grpc.unary_stream_rpc_method_handler(call.unary_stream(handler.unary_stream), **serializers)
        if handler.stream_unary is not None:
            return grpc.stream_unary_rpc_method_handler(call.stream_unary(handler.stream_unary), **serializers)
        if handler.stream_stream is not None:
            return grpc.stream_stream_rpc_method_handler(call.stream_stream(handler.stream_stream), **serializers)
        return handler


class _Call:
    def __init__(
        self,
        owner: AuthInterceptor,
        method: str,
        rule: scopes.Rule | None,
        principal: Principal | None,
        refusal: ServiceError | None,
    ) -> None:
        self._owner = owner
        self._method = method
        self._rule = rule
        self._principal = principal
        self._refusal = refusal

    async def _abort(self, context: Context, error: ServiceError) -> None:
        # Never the token: only the method, the code and the reason.
        log.info("rpc refused", extra={"rpc": self._method, "code": error.code.name, "reason": error.reason})
        status = rpc_status.to_status(to_rpc_status(error, self._owner._domain))
        await context.abort(status.code, status.details, status.trailing_metadata)

    async def _admit(self, context: Context) -> None:
        """Authentication, scope and rate limit: aborts the call when one fails."""
        if self._refusal is not None:
            await self._abort(context, self._refusal)
        assert self._principal is not None and self._rule is not None
        if self._rule.rate is not None:
            wait = self._owner._limiter.acquire(self._rule.rate, self._principal.subject)
            if wait > 0:
                await self._abort(
                    context,
                    ResourceExhausted(
                        "RATE_LIMITED",
                        f"too many {self._rule.rate} calls from {self._principal.subject}; retry in {wait:.3f}s",
                        wait,
                        {"bucket": self._rule.rate},
                    ),
                )

    async def _check_size(self, request: object, context: Context) -> None:
        if isinstance(request, Message):
            path = oversized_field(request, self._owner._max_items)
            if path is not None:
                await self._abort(
                    context,
                    InvalidArgument(
                        path, f"must hold at most {self._owner._max_items} items", reason="BATCH_TOO_LARGE"
                    ),
                )

    def _enter(
        self, request: object
    ) -> tuple[contextvars.Token[Any], contextvars.Token[Any] | None, AuditContext | None]:
        assert self._principal is not None and self._rule is not None
        principal_token = current_principal.set(self._principal)
        if not self._rule.mutates:
            return principal_token, None, None
        audit = AuditContext(
            actor=self._principal.subject,
            actor_issuer=self._principal.issuer,
            rpc=self._method,
            request_id=request_id_var.get() or "",
            request_ids=resource_ids(request) if isinstance(request, Message) else {},
            sessions=self._owner._audit_sessions,
            clock=self._owner._clock,
            request_digest=request_digest(request) if isinstance(request, Message) else "",
        )
        return principal_token, current_audit.set(audit), audit

    @staticmethod
    def _leave(tokens: tuple[contextvars.Token[Any], contextvars.Token[Any] | None, AuditContext | None]) -> None:
        principal_token, audit_token, _ = tokens
        if audit_token is not None:
            current_audit.reset(audit_token)
        current_principal.reset(principal_token)

    async def _done(self, audit: AuditContext | None) -> None:
        if audit is not None:
            await record_after_call(audit)

    def _checked(self, requests: AsyncIterator[Any], context: Context) -> AsyncIterator[Any]:
        async def checked() -> AsyncIterator[Any]:
            async for request in requests:
                await self._check_size(request, context)
                yield request

        return checked()

    def unary_unary(self, behaviour: Behaviour) -> Behaviour:
        async def wrapped(request: Any, context: Context) -> Any:
            await self._admit(context)
            await self._check_size(request, context)
            tokens = self._enter(request)
            try:
                result = await _result(behaviour(request, context))
                await self._done(tokens[2])
                return result
            finally:
                self._leave(tokens)

        return wrapped

    def stream_unary(self, behaviour: Behaviour) -> Behaviour:
        async def wrapped(requests: AsyncIterator[Any], context: Context) -> Any:
            await self._admit(context)
            tokens = self._enter(None)
            try:
                result = await _result(behaviour(self._checked(requests, context), context))
                await self._done(tokens[2])
                return result
            finally:
                self._leave(tokens)

        return wrapped

    def unary_stream(self, behaviour: Behaviour) -> Behaviour:
        if inspect.iscoroutinefunction(behaviour):

            async def writer(request: Any, context: Context) -> None:
                await self._admit(context)
                await self._check_size(request, context)
                tokens = self._enter(request)
                try:
                    await behaviour(request, context)
                    await self._done(tokens[2])
                finally:
                    self._leave(tokens)

            return writer

        async def generator(request: Any, context: Context) -> AsyncIterator[Any]:
            await self._admit(context)
            await self._check_size(request, context)
            tokens = self._enter(request)
            try:
                async for response in _responses(behaviour(request, context)):
                    yield response
                await self._done(tokens[2])
            finally:
                self._leave(tokens)

        return generator

    def stream_stream(self, behaviour: Behaviour) -> Behaviour:
        if inspect.iscoroutinefunction(behaviour):

            async def writer(requests: AsyncIterator[Any], context: Context) -> None:
                await self._admit(context)
                tokens = self._enter(None)
                try:
                    await behaviour(self._checked(requests, context), context)
                    await self._done(tokens[2])
                finally:
                    self._leave(tokens)

            return writer

        async def generator(requests: AsyncIterator[Any], context: Context) -> AsyncIterator[Any]:
            await self._admit(context)
            tokens = self._enter(None)
            try:
                async for response in _responses(behaviour(self._checked(requests, context), context)):
                    yield response
                await self._done(tokens[2])
            finally:
                self._leave(tokens)

        return generator


async def _result(result: Any) -> Any:
    return await result if inspect.isawaitable(result) else result


async def _responses(responses: Any) -> AsyncIterator[Any]:
    if hasattr(responses, "__aiter__"):
        async for response in responses:
            yield response
    else:
        for response in responses:
            yield response
