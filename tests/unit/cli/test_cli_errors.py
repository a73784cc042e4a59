"""`evolutivo` exit codes and error messages: a refused call names the field and rule the service
put in google.rpc details; the token travels as `authorization: Bearer`. The CLI talks to an
in-process gRPC server that answers like the services' interceptor does."""

from __future__ import annotations

import json
from collections.abc import Iterator
from concurrent import futures

import grpc
import pytest
from evolutivo.customer.v1 import account_pb2
from evolutivo.customer.v1 import customer_service_pb2 as pb
from evolutivo.customer.v1 import customer_service_pb2_grpc as pb_grpc
from evolutivo_cli.app import app
from evolutivo_cli.errors import ExitCode
from google.protobuf import any_pb2
from google.rpc import code_pb2, error_details_pb2, status_pb2
from grpc_status import rpc_status
from typer.testing import CliRunner


def refusal(code: int, message: str, reason: str, *details: object) -> grpc.Status:
    info = any_pb2.Any()
    info.Pack(error_details_pb2.ErrorInfo(reason=reason, domain="customer.evolutivo.io", metadata={"k": "v"}))
    packed = [info]
    for detail in details:
        extra = any_pb2.Any()
        extra.Pack(detail)  # type: ignore[arg-type]
        packed.append(extra)
    return rpc_status.to_status(status_pb2.Status(code=code, message=message, details=packed))


# Account ids GetAccountOverview refuses, with the status the services' interceptor would send.
REFUSALS: dict[str, tuple[int, str, str]] = {
    "missing": (code_pb2.NOT_FOUND, "account 'missing' not found", "ACCOUNT_NOT_FOUND"),
    "closed": (code_pb2.FAILED_PRECONDITION, "the account is closed", "ACCOUNT_CLOSED"),
    "stale": (code_pb2.ABORTED, "the account changed meanwhile", "ETAG_MISMATCH"),
    "locked": (code_pb2.ABORTED, "held too long; retry", "LOCK_TIMEOUT"),
    "nats_slow": (code_pb2.DEADLINE_EXCEEDED, "no answer in time", "MESSAGING_TIMEOUT"),
    "db_down": (code_pb2.UNAVAILABLE, "database restarting", "DATABASE_UNAVAILABLE"),
}


class Customer(pb_grpc.CustomerServiceServicer):
    def __init__(self) -> None:
        self.metadata: list[dict[str, str]] = []

    def GetAccountOverview(
        self, request: pb.GetAccountOverviewRequest, context: grpc.ServicerContext
    ) -> pb.GetAccountOverviewResponse:
        self.metadata.append(dict(context.invocation_metadata()))
        refused = REFUSALS.get(request.account_id)
        if refused is not None:
            context.abort_with_status(refusal(*refused))
        return pb.GetAccountOverviewResponse()

    def CreateAccount(
        self, request: pb.CreateAccountRequest, context: grpc.ServicerContext
    ) -> pb.CreateAccountResponse:
        self.metadata.append(dict(context.invocation_metadata()))
        if request.account.currency_code != "EUR":
            violation = error_details_pb2.BadRequest.FieldViolation(
                field="account.currency_code", description="must be an ISO 4217 code"
            )
            context.abort_with_status(
                refusal(
                    code_pb2.INVALID_ARGUMENT,
                    "account.currency_code: must be an ISO 4217 code",
                    "CURRENCY_INVALID",
                    error_details_pb2.BadRequest(field_violations=[violation]),
                )
            )
        created = account_pb2.Account()
        created.CopyFrom(request.account)
        created.account_id = "0b6f2c1e-0000-4000-8000-000000000001"
        created.status = account_pb2.ACCOUNT_STATUS_ACTIVE
        return pb.CreateAccountResponse(account=created)

    def ListAccounts(self, request: pb.ListAccountsRequest, context: grpc.ServicerContext) -> pb.ListAccountsResponse:
        # Two pages of one account each: the CLI follows the token up to --limit.
        page = int(request.page_token or "0")
        account = account_pb2.Account(account_id=f"acc-{page}", display_name=f"Account {page}", currency_code="EUR")
        return pb.ListAccountsResponse(accounts=[account], next_page_token=str(page + 1) if page < 1 else "")


@pytest.fixture(scope="module")
def server() -> Iterator[tuple[str, Customer]]:
    servicer = Customer()
    grpc_server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    pb_grpc.add_CustomerServiceServicer_to_server(servicer, grpc_server)
    port = grpc_server.add_insecure_port("127.0.0.1:0")
    grpc_server.start()
    yield f"127.0.0.1:{port}", servicer
    grpc_server.stop(None)


def run(address: str, *args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(
        app,
        ["--customer-address", address, *args],
        env={"EVOLUTIVO_CONFIG": "/nonexistent", "EVOLUTIVO_DATA_DIR": "/nonexistent"},
    )
    return result.exit_code, result.stdout, result.stderr


def test_invalid_argument_exits_3_and_names_the_field_and_rule(server: tuple[str, Customer]) -> None:
    code, _, err = run(server[0], "accounts", "create", "--name", "Acme", "--currency", "XXX")
    assert code == ExitCode.INVALID_ARGUMENT == 3
    assert "INVALID_ARGUMENT" in err
    assert "account.currency_code: must be an ISO 4217 code" in err
    assert "CURRENCY_INVALID" in err
    assert "customer CreateAccount at" in err


def test_with_json_output_the_error_is_json_on_stderr(server: tuple[str, Customer]) -> None:
    code, out, err = run(server[0], "accounts", "create", "--name", "Acme", "--currency", "XXX", "-o", "json")
    assert code == 3
    assert out == ""
    error = json.loads(err)["error"]
    assert error["code"] == "INVALID_ARGUMENT"
    assert error["field_violations"] == [{"field": "account.currency_code", "description": "must be an ISO 4217 code"}]
    assert (error["reason"], error["exit_code"], error["service"], error["method"]) == (
        "CURRENCY_INVALID",
        3,
        "customer",
        "CreateAccount",
    )


@pytest.mark.parametrize(
    ("account_id", "exit_code", "reason"),
    [("missing", ExitCode.NOT_FOUND, "ACCOUNT_NOT_FOUND"), ("closed", ExitCode.FAILED_PRECONDITION, "ACCOUNT_CLOSED")],
)
def test_status_codes_map_to_documented_exit_codes(
    server: tuple[str, Customer], account_id: str, exit_code: ExitCode, reason: str
) -> None:
    code, _, err = run(server[0], "accounts", "get", account_id)
    assert code == exit_code
    assert f"reason: {reason} (customer.evolutivo.io) k=v" in err
    assert "customer GetAccountOverview at" in err


def test_unimplemented_call_exits_8_with_a_hint(server: tuple[str, Customer]) -> None:
    code, _, err = run(server[0], "accounts", "suspend", "anything")
    assert code == ExitCode.UNIMPLEMENTED == 8
    assert "does not serve SuspendAccount" in err


def test_nothing_listening_exits_5_and_says_where_it_looked() -> None:
    code, _, err = run("127.0.0.1:1", "--timeout", "2", "accounts", "list")
    assert code == ExitCode.UNAVAILABLE == 5
    assert "customer at 127.0.0.1:1 did not answer" in err
    assert "EVOLUTIVO_CUSTOMER_ADDRESS" in err


def test_bad_flags_are_a_usage_error_exit_1(server: tuple[str, Customer]) -> None:
    assert run(server[0], "accounts", "list", "--no-such-flag")[0] == ExitCode.USAGE == 1
    assert run(server[0], "-o", "yaml", "accounts", "list")[0] == 1
    assert run(server[0], "accounts", "list", "--status", "sleeping")[0] == 1


def test_json_lists_follow_pages_and_parse(server: tuple[str, Customer]) -> None:
    code, out, _ = run(server[0], "accounts", "list", "-o", "json")
    assert code == 0
    listed = json.loads(out)
    assert [a["account_id"] for a in listed["accounts"]] == ["acc-0", "acc-1"]
    code, out, _ = run(server[0], "accounts", "list", "-n", "1", "-o", "json")
    assert [a["account_id"] for a in json.loads(out)["accounts"]] == ["acc-0"]
    assert json.loads(out)["next_page_token"] == "1"


def test_the_token_is_sent_as_a_bearer_authorization(server: tuple[str, Customer]) -> None:
    address, servicer = server
    code, out, _ = run(address, "--token", "s3cret", "accounts", "create", "--name", "Acme", "-o", "json")
    assert code == 0
    assert json.loads(out)["display_name"] == "Acme"
    assert servicer.metadata[-1]["authorization"] == "Bearer s3cret"


@pytest.mark.parametrize(
    ("account_id", "exit_code", "hint"),
    [
        ("stale", ExitCode.FAILED_PRECONDITION, ""),
        ("locked", ExitCode.UNAVAILABLE, "A concurrent change got in the way and nothing was changed"),
        ("db_down", ExitCode.UNAVAILABLE, "answered, but its database did not"),
        ("nats_slow", ExitCode.UNAVAILABLE, "the change may have been made; check before running"),
    ],
)
def test_a_retryable_answer_exits_5_with_its_hint(
    server: tuple[str, Customer], account_id: str, exit_code: ExitCode, hint: str
) -> None:
    """ABORTED for a stale etag is the resource's state (4); for a lock timeout or a transaction
    conflict, and UNAVAILABLE because the service's database is down, running again may work (5)."""
    code, _, err = run(server[0], "accounts", "get", account_id)
    assert code == exit_code
    if hint:
        assert hint in err
    else:
        assert "run the command again" not in err
