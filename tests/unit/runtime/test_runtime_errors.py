"""evolutivo_runtime.errors: ServiceError types and their google.rpc.Status form."""

from __future__ import annotations

import grpc
import pytest
from evolutivo_runtime.errors import (
    Aborted,
    AlreadyExists,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    ServiceError,
    to_rpc_status,
)
from google.rpc import code_pb2, error_details_pb2, status_pb2
from grpc_status import rpc_status

DOMAIN = "customer.evolutivo.io"


def _error_info(status: status_pb2.Status) -> error_details_pb2.ErrorInfo:
    infos = [d for d in status.details if d.Is(error_details_pb2.ErrorInfo.DESCRIPTOR)]
    assert len(infos) == 1
    info = error_details_pb2.ErrorInfo()
    assert infos[0].Unpack(info)
    return info


def _bad_requests(status: status_pb2.Status) -> list[error_details_pb2.BadRequest]:
    found = []
    for detail in status.details:
        if detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
            bad = error_details_pb2.BadRequest()
            assert detail.Unpack(bad)
            found.append(bad)
    return found


def test_invalid_argument_carries_error_info_and_field_violation() -> None:
    error = InvalidArgument("account.currency_code", "must be an ISO 4217 code", reason="CURRENCY_INVALID")
    status = to_rpc_status(error, DOMAIN)

    assert status.code == code_pb2.INVALID_ARGUMENT
    assert status.message == "account.currency_code: must be an ISO 4217 code"
    info = _error_info(status)
    assert info.reason == "CURRENCY_INVALID"
    assert info.domain == DOMAIN
    assert dict(info.metadata) == {"field": "account.currency_code"}

    [bad] = _bad_requests(status)
    assert [(v.field, v.description) for v in bad.field_violations] == [
        ("account.currency_code", "must be an ISO 4217 code")
    ]
    # ErrorInfo comes first, then the specific details.
    assert status.details[0].Is(error_details_pb2.ErrorInfo.DESCRIPTOR)


def test_invalid_argument_default_reason() -> None:
    error = InvalidArgument("page_size", "must not be negative")
    assert error.reason == "INVALID_ARGUMENT"
    assert (error.field, error.rule) == ("page_size", "must not be negative")
    assert str(error) == "page_size: must not be negative"
    assert _error_info(to_rpc_status(error, DOMAIN)).reason == "INVALID_ARGUMENT"


def test_not_found_reason_and_metadata() -> None:
    status = to_rpc_status(NotFound("account", "acc-42"), DOMAIN)
    assert status.code == code_pb2.NOT_FOUND
    assert status.message == "account 'acc-42' not found"
    info = _error_info(status)
    assert info.reason == "ACCOUNT_NOT_FOUND"
    assert info.domain == DOMAIN
    assert dict(info.metadata) == {"resource_type": "account", "resource_id": "acc-42"}
    assert _bad_requests(status) == []
    assert len(status.details) == 1


@pytest.mark.parametrize(
    ("cls", "grpc_code", "rpc_code"),
    [
        (AlreadyExists, grpc.StatusCode.ALREADY_EXISTS, code_pb2.ALREADY_EXISTS),
        (FailedPrecondition, grpc.StatusCode.FAILED_PRECONDITION, code_pb2.FAILED_PRECONDITION),
        (Aborted, grpc.StatusCode.ABORTED, code_pb2.ABORTED),
        (ServiceError, grpc.StatusCode.UNKNOWN, code_pb2.UNKNOWN),
    ],
)
def test_generic_errors(cls: type[ServiceError], grpc_code: grpc.StatusCode, rpc_code: int) -> None:
    metadata = {"account_id": "acc-1", "state": "CLOSED"}
    error = cls("ACCOUNT_CLOSED", "account acc-1 is closed", metadata)
    assert error.code == grpc_code
    status = to_rpc_status(error, DOMAIN)
    assert status.code == rpc_code
    assert status.message == "account acc-1 is closed"
    info = _error_info(status)
    assert (info.reason, info.domain, dict(info.metadata)) == ("ACCOUNT_CLOSED", DOMAIN, metadata)
    # The error keeps its own copy of the metadata.
    metadata["state"] = "OPEN"
    assert error.metadata["state"] == "CLOSED"


@pytest.mark.parametrize("cls", [InvalidArgument, NotFound, AlreadyExists, FailedPrecondition, Aborted, ServiceError])
def test_grpc_code_and_rpc_code_agree(cls: type[ServiceError]) -> None:
    assert cls.code.value[0] == cls.rpc_code


def test_status_converts_to_grpc_status_for_abort() -> None:
    error = InvalidArgument("amount", "must be positive")
    status = rpc_status.to_status(to_rpc_status(error, DOMAIN))
    assert status.code == grpc.StatusCode.INVALID_ARGUMENT
    assert status.details == "amount: must be positive"
    [(key, value)] = status.trailing_metadata
    assert key == "grpc-status-details-bin"
    decoded = status_pb2.Status.FromString(value)
    assert _error_info(decoded).reason == "INVALID_ARGUMENT"
    assert len(_bad_requests(decoded)) == 1
