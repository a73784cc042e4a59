"""Errors a service raises from its domain or service layer, and their gRPC form.

The classes say which rule was broken; the server interceptor turns them into a gRPC status
with a google.rpc.ErrorInfo (and BadRequest field violations for invalid arguments).
"""

from __future__ import annotations

import grpc
from google.protobuf import any_pb2
from google.rpc import code_pb2, error_details_pb2, status_pb2


class ServiceError(Exception):
    """Base of every error that maps to a gRPC status other than INTERNAL."""

    code: grpc.StatusCode = grpc.StatusCode.UNKNOWN
    rpc_code: int = code_pb2.UNKNOWN

    def __init__(self, reason: str, message: str, metadata: dict[str, str] | None = None) -> None:
        super().__init__(message)
        # UPPER_SNAKE_CASE machine-readable reason, e.g. "CURRENCY_INVALID" (AIP-193).
        self.reason = reason
        self.message = message
        self.metadata = dict(metadata or {})

    def details(self) -> list[any_pb2.Any]:
        return []


class InvalidArgument(ServiceError):
    """A request field breaks a rule: names the field and the rule."""

    code = grpc.StatusCode.INVALID_ARGUMENT
    rpc_code = code_pb2.INVALID_ARGUMENT

    def __init__(self, field: str, rule: str, reason: str = "INVALID_ARGUMENT") -> None:
        super().__init__(reason, f"{field}: {rule}", {"field": field})
        self.field = field
        self.rule = rule

    def details(self) -> list[any_pb2.Any]:
        violation = error_details_pb2.BadRequest.FieldViolation(field=self.field, description=self.rule)
        packed = any_pb2.Any()
        packed.Pack(error_details_pb2.BadRequest(field_violations=[violation]))
        return [packed]


class NotFound(ServiceError):
    code = grpc.StatusCode.NOT_FOUND
    rpc_code = code_pb2.NOT_FOUND

    def __init__(self, resource_type: str, resource_id: str) -> None:
        super().__init__(
            f"{resource_type.upper()}_NOT_FOUND",
            f"{resource_type} {resource_id!r} not found",
            {"resource_type": resource_type, "resource_id": resource_id},
        )


class AlreadyExists(ServiceError):
    code = grpc.StatusCode.ALREADY_EXISTS
    rpc_code = code_pb2.ALREADY_EXISTS


class FailedPrecondition(ServiceError):
    code = grpc.StatusCode.FAILED_PRECONDITION
    rpc_code = code_pb2.FAILED_PRECONDITION


class Aborted(ServiceError):
    code = grpc.StatusCode.ABORTED
    rpc_code = code_pb2.ABORTED


def to_rpc_status(error: ServiceError, domain: str) -> status_pb2.Status:
    """google.rpc.Status carrying ErrorInfo(reason, domain, metadata) plus any specific details."""
    info = any_pb2.Any()
    info.Pack(error_details_pb2.ErrorInfo(reason=error.reason, domain=domain, metadata=error.metadata))
    return status_pb2.Status(code=error.rpc_code, message=error.message, details=[info, *error.details()])


class Unavailable(ServiceError):
    """Something this call depends on (a service, the database, NATS) did not answer; the call may
    be retried (a write with its request id: a commit cut short may or may not have taken effect)."""

    code = grpc.StatusCode.UNAVAILABLE
    rpc_code = code_pb2.UNAVAILABLE


class DeadlineExceeded(ServiceError):
    """Something this call depends on did not answer in time, after the call may have taken effect."""

    code = grpc.StatusCode.DEADLINE_EXCEEDED
    rpc_code = code_pb2.DEADLINE_EXCEEDED


class Unauthenticated(ServiceError):
    """No caller identity, or one that does not verify (docs/security.md)."""

    code = grpc.StatusCode.UNAUTHENTICATED
    rpc_code = code_pb2.UNAUTHENTICATED


class PermissionDenied(ServiceError):
    """The caller is known but its token lacks the scope the method requires."""

    code = grpc.StatusCode.PERMISSION_DENIED
    rpc_code = code_pb2.PERMISSION_DENIED


class ResourceExhausted(ServiceError):
    """The caller went over its rate limit; carries a google.rpc.RetryInfo with the wait."""

    code = grpc.StatusCode.RESOURCE_EXHAUSTED
    rpc_code = code_pb2.RESOURCE_EXHAUSTED

    def __init__(self, reason: str, message: str, retry_after_seconds: float, metadata: dict[str, str] | None = None):
        super().__init__(reason, message, metadata)
        self.retry_after_seconds = retry_after_seconds

    def details(self) -> list[any_pb2.Any]:
        from google.protobuf.duration_pb2 import Duration

        delay = Duration()
        delay.FromNanoseconds(max(1, int(self.retry_after_seconds * 1e9)))
        packed = any_pb2.Any()
        packed.Pack(error_details_pb2.RetryInfo(retry_delay=delay))
        return [packed]
