"""Who may call what, how often and how much: a guard on every RPC (AuthGuard).

For every method except the public health check, in this order:

1. authentication: `authorization: Bearer <JWT>` must verify (tokens.py) -> else UNAUTHENTICATED;
2. authorisation: the method must be in scopes.RULES and the token carry its scope -> else
   PERMISSION_DENIED (a method missing from the table is denied, never allowed);
3. rate limit: the rule's bucket, per caller (the token subject) -> else RESOURCE_EXHAUSTED with a
   google.rpc.RetryInfo saying when to come back;
4. batch limit: no repeated field of a request may hold more than `max_repeated_items` items ->
   else INVALID_ARGUMENT naming the field;
5. audit: a method whose rule mutates runs inside an AuditContext (audit.py).

Each refusal happens before the handler runs, so a refused call changes nothing. It is one of
ServiceInterceptor's guards (which counts, logs and answers the refusals), before
SensitiveDataGuard (which need not look at unauthenticated requests):
`ServiceInterceptor(domain, guards=[AuthGuard(...), SensitiveDataGuard()])`.
"""

from __future__ import annotations

import contextvars
from collections.abc import Awaitable, Iterable
from typing import Any, cast

import grpc
from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import Message
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from evolutivo_runtime.clock import Clock
from evolutivo_runtime.errors import (
    InvalidArgument,
    PermissionDenied,
    ResourceExhausted,
    ServiceError,
    Unauthenticated,
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
from evolutivo_runtime.server.descriptors import reaches
from evolutivo_runtime.server.interceptors import GuardedCall

current_principal: contextvars.ContextVar[Principal | None] = contextvars.ContextVar("principal", default=None)


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


class AuthGuard:
    """Authentication, scopes, rate limits, batch sizes and the audit context, as a guard that
    ServiceInterceptor runs around every call (server/interceptors.py)."""

    def __init__(
        self,
        verifier: TokenVerifier,
        limiter: RateLimiter,
        max_repeated_items: int,
        clock: Clock,
        audit_sessions: async_sessionmaker[AsyncSession] | None = None,
        rules: dict[str, scopes.Rule] | None = None,
    ) -> None:
        self._verifier = verifier
        self._limiter = limiter
        self._max_items = max_repeated_items
        self._clock = clock
        self._audit_sessions = audit_sessions
        self._rules = scopes.RULES if rules is None else rules

    def prepare(self, details: grpc.HandlerCallDetails) -> GuardedCall | None:
        method: str = details.method
        if scopes.is_public(method):
            return None
        # Decided before the handler is entered; the call only acts on the decision.
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
        return _AuthorizedCall(self, method, rule, principal, refusal)


_Entered = tuple[contextvars.Token[Any], contextvars.Token[Any] | None, AuditContext | None]


class _AuthorizedCall(GuardedCall):
    def __init__(
        self,
        owner: AuthGuard,
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

    def admit(self) -> None:
        """Authentication, scope and rate limit."""
        if self._refusal is not None:
            raise self._refusal
        assert self._principal is not None and self._rule is not None
        if self._rule.rate is not None:
            wait = self._owner._limiter.acquire(self._rule.rate, self._principal.subject)
            if wait > 0:
                raise ResourceExhausted(
                    "RATE_LIMITED",
                    f"too many {self._rule.rate} calls from {self._principal.subject}; retry in {wait:.3f}s",
                    wait,
                    {"bucket": self._rule.rate},
                )

    def inspect(self, request: object) -> None:
        if isinstance(request, Message):
            path = oversized_field(request, self._owner._max_items)
            if path is not None:
                raise InvalidArgument(
                    path, f"must hold at most {self._owner._max_items} items", reason="BATCH_TOO_LARGE"
                )

    def enter(self, request: object | None) -> _Entered:
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

    def done(self, entered: object) -> Awaitable[None] | None:
        audit = cast(_Entered, entered)[2]
        return record_after_call(audit) if audit is not None else None

    def leave(self, entered: object) -> None:
        principal_token, audit_token, _ = cast(_Entered, entered)
        if audit_token is not None:
            current_audit.reset(audit_token)
        current_principal.reset(principal_token)
