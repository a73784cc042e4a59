"""Exit codes scripts can rely on, and gRPC errors told the way the services encode them.

The services answer a refused call with a gRPC status whose `grpc-status-details-bin` trailer is
a google.rpc.Status carrying an ErrorInfo (reason, domain, metadata) and, for INVALID_ARGUMENT, a
BadRequest naming the field and the rule (libs/runtime/evolutivo_runtime/errors.py).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import IntEnum
from typing import Any

import grpc
from google.rpc import error_details_pb2, status_pb2


class ExitCode(IntEnum):
    OK = 0
    #: Bad flags or arguments, an unreadable input file or config (nothing was sent).
    USAGE = 1
    NOT_FOUND = 2
    INVALID_ARGUMENT = 3
    #: The call broke a rule of the resource's state (FAILED_PRECONDITION, ABORTED, OUT_OF_RANGE).
    FAILED_PRECONDITION = 4
    #: The service did not answer (UNAVAILABLE, DEADLINE_EXCEEDED, RESOURCE_EXHAUSTED), or a concurrent
    #: transaction got in the way (ABORTED with RETRY_REASONS): retry later.
    UNAVAILABLE = 5
    ALREADY_EXISTS = 6
    #: UNAUTHENTICATED or PERMISSION_DENIED: check the token.
    PERMISSION_DENIED = 7
    #: The service does not serve that call (e.g. the clock admin on a system clock).
    UNIMPLEMENTED = 8
    #: Any other server error (INTERNAL, UNKNOWN, DATA_LOSS...).
    SERVER_ERROR = 9
    #: A wait (demo, bill run) gave up before the suite did what was expected.
    TIMEOUT = 10
    #: Interrupted with Ctrl-C (work done so far is kept; long commands say how to resume).
    INTERRUPTED = 130


_BY_STATUS: dict[grpc.StatusCode, ExitCode] = {
    grpc.StatusCode.NOT_FOUND: ExitCode.NOT_FOUND,
    grpc.StatusCode.INVALID_ARGUMENT: ExitCode.INVALID_ARGUMENT,
    grpc.StatusCode.OUT_OF_RANGE: ExitCode.FAILED_PRECONDITION,
    grpc.StatusCode.FAILED_PRECONDITION: ExitCode.FAILED_PRECONDITION,
    grpc.StatusCode.ABORTED: ExitCode.FAILED_PRECONDITION,
    grpc.StatusCode.UNAVAILABLE: ExitCode.UNAVAILABLE,
    grpc.StatusCode.DEADLINE_EXCEEDED: ExitCode.UNAVAILABLE,
    grpc.StatusCode.RESOURCE_EXHAUSTED: ExitCode.UNAVAILABLE,
    grpc.StatusCode.ALREADY_EXISTS: ExitCode.ALREADY_EXISTS,
    grpc.StatusCode.UNAUTHENTICATED: ExitCode.PERMISSION_DENIED,
    grpc.StatusCode.PERMISSION_DENIED: ExitCode.PERMISSION_DENIED,
    grpc.StatusCode.UNIMPLEMENTED: ExitCode.UNIMPLEMENTED,
}

_DETAILS_KEY = "grpc-status-details-bin"

# ABORTED for these reasons is a transaction that lost to a concurrent one, not the resource's state
# (evolutivo_runtime.transient_errors): the same command, run again, may well succeed.
RETRY_REASONS = frozenset({"TRANSACTION_CONFLICT", "LOCK_TIMEOUT"})
# UNAVAILABLE for these: the service answered, but its database or NATS did not.
DEPENDENCY_REASONS = {"DATABASE_UNAVAILABLE": "database", "MESSAGING_UNAVAILABLE": "NATS server"}


def exit_code_for(code: grpc.StatusCode) -> ExitCode:
    return _BY_STATUS.get(code, ExitCode.SERVER_ERROR)


def status_code(number: int) -> grpc.StatusCode:
    """The grpc.StatusCode of a google.rpc.Code number (e.g. from a google.rpc.Status)."""
    for code in grpc.StatusCode:
        if code.value[0] == number:
            return code
    return grpc.StatusCode.UNKNOWN


class CliError(Exception):
    """An error the CLI itself found (before or between calls), with the exit code to leave with."""

    def __init__(self, message: str, code: ExitCode = ExitCode.USAGE, hint: str = "") -> None:
        super().__init__(message)
        self.message = message
        self.code = code
        self.hint = hint


@dataclass
class Violation:
    field: str
    description: str


@dataclass
class CallError:
    """A failed gRPC call, decoded."""

    code: grpc.StatusCode
    message: str
    reason: str = ""
    domain: str = ""
    metadata: dict[str, str] = field(default_factory=dict)
    violations: list[Violation] = field(default_factory=list)
    service: str = ""
    address: str = ""
    method: str = ""

    @property
    def exit_code(self) -> ExitCode:
        if self.code == grpc.StatusCode.ABORTED and self.reason in RETRY_REASONS:
            return ExitCode.UNAVAILABLE
        return exit_code_for(self.code)

    def hint(self) -> str:
        where = f"{self.service} at {self.address}" if self.service else "the service"
        if self.reason == "MESSAGING_TIMEOUT":
            return (
                f"{where} answered, but its NATS server did not in time: the change may have been made; "
                "check before running the command again."
            )
        if self.reason in DEPENDENCY_REASONS:
            return f"{where} answered, but its {DEPENDENCY_REASONS[self.reason]} did not: run the command again later."
        if self.code == grpc.StatusCode.ABORTED and self.reason in RETRY_REASONS:
            return "A concurrent change got in the way and nothing was changed: run the command again."
        if self.code in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED):
            variable = f"EVOLUTIVO_{self.service.upper()}_ADDRESS" if self.service else "EVOLUTIVO_<SVC>_ADDRESS"
            return (
                f"{where} did not answer. Is the suite running (`make up`)? Otherwise point the CLI at it with "
                f"--{self.service.replace('_', '-') or '<svc>'}-address or {variable} (docs/cli.md)."
            )
        if self.code == grpc.StatusCode.UNIMPLEMENTED and "ClockAdmin" in self.method:
            return (
                f"{where} runs with the system clock: the clock can only be moved on a stack with --clock controllable."
            )
        if self.code == grpc.StatusCode.UNIMPLEMENTED:
            return f"{where} does not serve {self.method or 'this call'} (an older version of the service?)."
        if self.code in (grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.PERMISSION_DENIED):
            return "Check the token (--token, EVOLUTIVO_TOKEN or token in the config file)."
        if self.violations:
            return "Fix the field(s) above and run the command again; nothing was changed."
        return ""

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"code": self.code.name, "message": self.message, "exit_code": int(self.exit_code)}
        if self.reason:
            out["reason"] = self.reason
        if self.domain:
            out["domain"] = self.domain
        if self.metadata:
            out["metadata"] = dict(self.metadata)
        if self.violations:
            out["field_violations"] = [{"field": v.field, "description": v.description} for v in self.violations]
        if self.service:
            out["service"] = self.service
            out["address"] = self.address
        if self.method:
            out["method"] = self.method
        return out


def decode_status(code: grpc.StatusCode, message: str, details: bytes | None) -> CallError:
    """The error from a status code, its message and the serialized google.rpc.Status (if any)."""
    error = CallError(code=code, message=message)
    if not details:
        return error
    try:
        status = status_pb2.Status.FromString(details)
    except Exception:  # a trailer we cannot read still leaves the code and message
        return error
    for detail in status.details:
        if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            info = error_details_pb2.ErrorInfo()
            detail.Unpack(info)
            error.reason, error.domain, error.metadata = info.reason, info.domain, dict(info.metadata)
        elif detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
            bad = error_details_pb2.BadRequest()
            detail.Unpack(bad)
            error.violations += [Violation(v.field, v.description) for v in bad.field_violations]
        elif detail.Is(error_details_pb2.PreconditionFailure.DESCRIPTOR):
            failure = error_details_pb2.PreconditionFailure()
            detail.Unpack(failure)
            error.violations += [Violation(v.subject, v.description) for v in failure.violations]
    return error


def decode(error: grpc.RpcError) -> CallError:
    """A CallError from what a stub raised (a grpc.Call), with the target the CLI tagged it with."""
    call: Any = error
    code = call.code() if hasattr(call, "code") else grpc.StatusCode.UNKNOWN
    message = (call.details() if hasattr(call, "details") else "") or ""
    details = None
    trailing = call.trailing_metadata() if hasattr(call, "trailing_metadata") else None
    for key, value in trailing or ():
        if key == _DETAILS_KEY:
            details = value if isinstance(value, bytes) else str(value).encode()
    decoded = decode_status(code, message, details)
    target = getattr(error, "evolutivo_target", None)
    if target is not None:
        decoded.service, decoded.address, decoded.method = target
    return decoded
