"""Bad input refused, and nothing changed (issue 9, item 4): a table-driven suite over every RPC
in protos/ (tests/e2e/bad_input holds the cases, per service), against the five services as
processes over gRPC.

Each case is one call with one thing wrong (a missing or malformed field; a negative, zero, huge
or malformed amount or a NaN quantity; an unknown or wrong currency; an invalid time zone or date;
over-long or odd Unicode text; SQL- or script-looking text; an oversized batch or message; a
request id reused with another payload; an operation on a suspended or closed account...). It must
get the expected status, with INVALID_ARGUMENT naming the field in its google.rpc.BadRequest, and
leave every table of every service's database exactly as it was (row count and digest of the rows,
tests/e2e/bad_input/snapshot.py) and the shared clock where it was. A case documented to keep
something (charging keeps refused usage as REJECTED) names the table it may write.

A new RPC without a case fails `test_every_rpc_in_protos_has_a_case`.
"""

from __future__ import annotations

import asyncio
import importlib
import pkgutil
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass

import evolutivo
import grpc
import pytest
import pytest_asyncio
from bad_input import INVALID, OK, Case
from bad_input.cases import ALL_CASES, NO_ARGUMENT_TO_GET_WRONG
from bad_input.customer import account
from bad_input.snapshot import Snapshots, changed
from bad_input.values import RTL, SCRIPT, SQL
from bad_input.world import World, make_world
from evolutivo.admin.v1 import clock_admin_service_pb2 as clock_pb
from evolutivo.admin.v1 import clock_admin_service_pb2_grpc as clock_grpc
from evolutivo.customer.v1 import customer_service_pb2 as customer_pb
from evolutivo.customer.v1 import customer_service_pb2_grpc as customer_grpc
from evolutivo_runtime.testing import eventually
from evolutivo_stack.embedded import scratch_dir
from evolutivo_stack.stack import SERVICES, Stack
from google.protobuf import descriptor_pool, message_factory
from google.protobuf.descriptor import MethodDescriptor
from google.rpc import error_details_pb2
from grpc_status import rpc_status
from support.rpc import violated_fields

pytestmark = pytest.mark.e2e
# The cases share the module's stack, world and database connections: one event loop for them all.
in_module_loop = pytest.mark.asyncio(loop_scope="module")

# The package of a method's service -> the service that serves it (admin services: every one).
OWNER = {
    "evolutivo.customer.v1": "customer",
    "evolutivo.charging.v1": "charging",
    "evolutivo.balance.v1": "balance",
    "evolutivo.billing.v1": "billing",
    "evolutivo.erp_gateway.v1": "erp_gateway",
}


def all_methods() -> dict[str, MethodDescriptor]:
    """Every method of every service in the generated descriptors (gen/python: all of protos/)."""
    methods: dict[str, MethodDescriptor] = {}
    for module_info in pkgutil.walk_packages(evolutivo.__path__, "evolutivo."):
        if module_info.name.endswith("_pb2"):
            module = importlib.import_module(module_info.name)
            for service in module.DESCRIPTOR.services_by_name.values():
                for method in service.methods:
                    methods[f"/{service.full_name}/{method.name}"] = method
    return methods


METHODS = all_methods()


def test_every_rpc_in_protos_has_a_case() -> None:
    assert len(METHODS) > 90  # the walk found the services: an empty walk would pass vacuously
    covered = {case.method for case in ALL_CASES}
    missing = sorted(set(METHODS) - covered)
    assert missing == [], f"RPCs without a bad-input case in tests/e2e/bad_input: {missing}"
    unknown = sorted(covered - set(METHODS))
    assert unknown == [], f"cases for RPCs that do not exist: {unknown}"


def test_every_rpc_with_an_argument_has_an_invalid_argument_case() -> None:
    refused = {case.method for case in ALL_CASES if case.code == INVALID}
    lacking = sorted(set(METHODS) - refused - set(NO_ARGUMENT_TO_GET_WRONG))
    assert lacking == [], f"RPCs without an INVALID_ARGUMENT case (or an exemption with its reason): {lacking}"
    assert all(NO_ARGUMENT_TO_GET_WRONG.values()), "every exemption says why"


def test_admin_cases_reach_every_service() -> None:
    for method in (m for m in METHODS if m.startswith("/evolutivo.admin.")):
        assert {c.service for c in ALL_CASES if c.method == method} >= set(SERVICES), method


@pytest.fixture(scope="module")
def stack() -> Iterator[Stack]:
    # The read rate limits (50/s per caller) would refuse a suite that reads this fast; the
    # limits have their own test (test_security.py).
    env = {}
    for service in SERVICES:
        env[f"{service.upper()}_RATE_LIMIT_READ_PER_SECOND"] = "100000"
        env[f"{service.upper()}_RATE_LIMIT_READ_BURST"] = "100000"
    with scratch_dir("stack") as data_dir:
        with Stack(data_dir, base_port=None, clock_mode="controllable", env=env) as running:
            yield running


@dataclass
class Suite:
    channels: dict[str, grpc.aio.Channel]
    world: World
    snapshots: Snapshots

    async def clock_revision(self) -> int:
        stub = clock_grpc.ClockAdminServiceStub(self.channels["charging"])
        return int((await stub.GetClock(clock_pb.GetClockRequest())).revision)

    async def state(self) -> dict[str, tuple[int, str]]:
        """Every table of every database, and the shared clock (kept in NATS, not in a database)."""
        taken = await self.snapshots.take()
        taken["nats.clock"] = (await self.clock_revision(), "")
        return taken

    async def quiet(self) -> dict[str, tuple[int, str]]:
        """The state once nothing is in flight: three equal snapshots in a row, half a second apart."""
        seen: list[dict[str, tuple[int, str]]] = []

        async def settled() -> dict[str, tuple[int, str]] | None:
            seen.append(await self.state())
            if len(seen) >= 3 and seen[-1] == seen[-2] == seen[-3]:
                return seen[-1]
            await asyncio.sleep(0.4)  # between two snapshots of the poll
            return None

        return await eventually(settled, timeout=60, what="the databases to settle")


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def suite(stack: Stack) -> AsyncIterator[Suite]:
    channels = {service: stack.channel(service) for service in SERVICES}
    snapshots = await Snapshots.open({service: stack.database_url(service) for service in SERVICES})
    try:
        world = await make_world(channels)
        running = Suite(channels, world, snapshots)
        await running.quiet()
        yield running
    finally:
        await snapshots.close()
        for channel in channels.values():
            await channel.close(None)


async def call(channel: grpc.aio.Channel, method: str, request: object) -> grpc.StatusCode:
    """Invokes `method` with `request` (a list of messages for a client stream); the status code."""
    descriptor = METHODS[method]
    response_class = message_factory.GetMessageClass(
        descriptor_pool.Default().FindMessageTypeByName(descriptor.output_type.full_name)
    )
    if descriptor.client_streaming:
        stream = channel.stream_unary(
            method, request_serializer=lambda m: m.SerializeToString(), response_deserializer=response_class.FromString
        )
        await stream(iter(request), timeout=30)  # type: ignore[call-overload]
    else:
        unary = channel.unary_unary(
            method, request_serializer=lambda m: m.SerializeToString(), response_deserializer=response_class.FromString
        )
        await unary(request, timeout=30)
    return grpc.StatusCode.OK


def error_reason(error: grpc.aio.AioRpcError) -> str | None:
    status = rpc_status.from_call(error)  # type: ignore[arg-type]
    for detail in status.details if status is not None else []:
        if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            info = error_details_pb2.ErrorInfo()
            detail.Unpack(info)
            return str(info.reason)
    return None


@in_module_loop
@pytest.mark.parametrize("case", ALL_CASES, ids=lambda c: c.id)
async def test_bad_input_is_refused_and_changes_nothing(suite: Suite, case: Case) -> None:
    service = case.service or OWNER[case.method.split("/")[1].rsplit(".", 1)[0]]
    request = case.build(suite.world)
    before = await suite.state()
    fields: list[str] = []
    reason: str | None = None
    message = ""
    try:
        code = await call(suite.channels[service], case.method, request)
    except grpc.aio.AioRpcError as error:
        code, message, reason = error.code(), error.details() or "", error_reason(error)
        status = rpc_status.from_call(error)  # type: ignore[arg-type]
        fields = violated_fields(status) if status is not None else []
    after = await suite.state()
    differences = changed(before, after, case.writes)
    try:
        assert code == case.code, f"{code.name}, not {case.code.name}: {message}"
        assert differences == {}, f"the refused call changed {differences}"
        if case.field is not None:
            # The field itself or a part of it (e.g. "amount.units" names "amount").
            named = [f for f in fields if f == case.field or f.startswith((f"{case.field}.", f"{case.field}["))]
            assert named, f"BadRequest names {fields}, not {case.field!r}: {message}"
        if case.reason is not None:
            assert reason == case.reason, message
        if case.code != OK:
            assert message, "a refusal says what was wrong"
    except AssertionError:
        # What the wrong call set going (events, scheduled work) must not land in the next case.
        await suite.quiet()
        raise


@in_module_loop
async def test_sql_and_script_looking_text_is_data_where_text_is_allowed(suite: Suite) -> None:
    """Where free text is allowed, SQL-, script- and right-to-left-looking text is nobody's command:
    stored and read back exactly, and a search finds it as itself. (Runs after the refusal cases:
    it changes the customer database.)"""
    customer = customer_grpc.CustomerServiceStub(suite.channels["customer"])
    name = f"{SQL} {SCRIPT} {RTL} Zoë"
    created = (
        await customer.CreateAccount(customer_pb.CreateAccountRequest(account=account(display_name=name)))
    ).account
    read = (await customer.GetAccount(customer_pb.GetAccountRequest(account_id=created.account_id))).account
    assert read.display_name == name
    found = (await customer.ListAccounts(customer_pb.ListAccountsRequest(query="' OR '1'='1"))).accounts
    assert [a.account_id for a in found] == [created.account_id]
    # The seeded account is still there: nothing was dropped or rewritten by the text.
    seeded = (await customer.GetAccount(customer_pb.GetAccountRequest(account_id=suite.world.account_id))).account
    assert seeded.display_name == "Entrada Mala SL"
