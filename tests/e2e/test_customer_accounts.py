"""Customer accounts over gRPC as an internal platform calls them: bad input refused naming the
field and changing nothing, retries that create nothing twice, updates by mask, search and pages."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import asyncpg
import grpc
import pytest
from evolutivo.customer.v1 import account_pb2, payment_method_pb2
from evolutivo.customer.v1 import customer_service_pb2 as pb
from evolutivo.customer.v1 import customer_service_pb2_grpc as pb_grpc
from evolutivo_runtime.testing import eventually
from evolutivo_stack.stack import Stack
from google.protobuf.field_mask_pb2 import FieldMask
from google.rpc import error_details_pb2
from google.type import date_pb2, money_pb2
from grpc_status import rpc_status

pytestmark = pytest.mark.e2e


@pytest.fixture
async def customer(stack: Stack) -> AsyncIterator[pb_grpc.CustomerServiceStub]:
    async with stack.channel("customer") as channel:
        yield pb_grpc.CustomerServiceStub(channel)


@pytest.fixture
async def customer_db(stack: Stack) -> AsyncIterator[asyncpg.Connection]:
    conn = await asyncpg.connect(stack.database_url("customer"))
    yield conn
    await conn.close()


def account(**overrides: object) -> account_pb2.Account:
    fields: dict[str, object] = {
        "type": account_pb2.ACCOUNT_TYPE_BUSINESS,
        "display_name": "Ferretería López SL",
        "currency_code": "EUR",
        "time_zone": "Europe/Madrid",
        "locale": "es-ES",
        "country_code": "ES",
        "tax_id": "B12345674",
        "billing_profile": account_pb2.BillingProfile(bill_cycle_day=28, payment_terms_days=30),
    }
    fields.update(overrides)
    return account_pb2.Account(**fields)  # type: ignore[arg-type]


def violated_field(error: grpc.aio.AioRpcError) -> str:
    status = rpc_status.from_call(error)  # type: ignore[arg-type]
    assert status is not None, "the error carries a google.rpc.Status"
    for detail in status.details:
        if detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
            bad = error_details_pb2.BadRequest()
            detail.Unpack(bad)
            return bad.field_violations[0].field
    raise AssertionError("no BadRequest detail")


BAD_ACCOUNTS = [
    (account(currency_code="ZZZ"), "account.currency_code"),
    (account(time_zone="Europe/Atlantis"), "account.time_zone"),
    (account(billing_profile=account_pb2.BillingProfile(bill_cycle_day=0)), "account.billing_profile.bill_cycle_day"),
    (account(billing_profile=account_pb2.BillingProfile(bill_cycle_day=32)), "account.billing_profile.bill_cycle_day"),
    (account(display_name="x" * 201), "account.display_name"),
    (account(tax_id="B12345670"), "account.tax_id"),
    (account(type=account_pb2.ACCOUNT_TYPE_UNSPECIFIED), "account.type"),
    (
        account(
            billing_profile=account_pb2.BillingProfile(
                bill_cycle_day=5, threshold_amount=money_pb2.Money(currency_code="USD", units=100)
            )
        ),
        "account.billing_profile.threshold_amount.currency_code",
    ),
]


@pytest.mark.parametrize(("bad", "field"), BAD_ACCOUNTS)
async def test_bad_accounts_are_refused_naming_the_field_and_change_nothing(
    customer: pb_grpc.CustomerServiceStub, customer_db: asyncpg.Connection, bad: account_pb2.Account, field: str
) -> None:
    before = await customer_db.fetchval("select count(*) from accounts")
    requests_before = await customer_db.fetchval("select count(*) from request_log")
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await customer.CreateAccount(pb.CreateAccountRequest(request_id=str(uuid.uuid4()), account=bad))
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert violated_field(refused.value) == field
    assert await customer_db.fetchval("select count(*) from accounts") == before
    assert await customer_db.fetchval("select count(*) from request_log") == requests_before


async def test_retries_with_the_same_request_id_create_one_account(
    customer: pb_grpc.CustomerServiceStub, customer_db: asyncpg.Connection
) -> None:
    request = pb.CreateAccountRequest(request_id=str(uuid.uuid4()), account=account(display_name="Retry Once SL"))
    first = await customer.CreateAccount(request)
    second = await customer.CreateAccount(request)
    assert first == second
    assert await customer_db.fetchval("select count(*) from accounts where display_name = 'Retry Once SL'") == 1
    with pytest.raises(grpc.aio.AioRpcError) as reused:
        await customer.SuspendAccount(
            pb.SuspendAccountRequest(
                account_id=first.account.account_id,
                reason="x",
                actor=account_pb2.STATUS_ACTOR_MANUAL,
                request_id=request.request_id,
            )
        )
    assert reused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert violated_field(reused.value) == "request_id"


async def test_update_by_mask_changes_only_the_named_fields(customer: pb_grpc.CustomerServiceStub) -> None:
    created = (await customer.CreateAccount(pb.CreateAccountRequest(account=account(display_name="Mask SL")))).account
    change = account_pb2.Account(
        account_id=created.account_id,
        display_name="Mask Iberia SL",
        locale="ca-ES",  # not in the mask: must stay es-ES
        billing_profile=account_pb2.BillingProfile(bill_cycle_day=10),
        etag=created.etag,
    )
    updated = (
        await customer.UpdateAccount(
            pb.UpdateAccountRequest(
                account=change, update_mask=FieldMask(paths=["display_name", "billing_profile.bill_cycle_day"])
            )
        )
    ).account
    assert updated.display_name == "Mask Iberia SL"
    assert updated.locale == "es-ES"
    assert updated.billing_profile.bill_cycle_day == 10
    assert updated.billing_profile.payment_terms_days == 30
    assert updated.etag != created.etag

    stale = account_pb2.Account(account_id=created.account_id, display_name="Lost Update SL", etag=created.etag)
    with pytest.raises(grpc.aio.AioRpcError) as conflict:
        await customer.UpdateAccount(
            pb.UpdateAccountRequest(account=stale, update_mask=FieldMask(paths=["display_name"]))
        )
    assert conflict.value.code() == grpc.StatusCode.ABORTED

    for paths, field in ((["status"], "update_mask"), ([], "update_mask")):
        with pytest.raises(grpc.aio.AioRpcError) as bad_mask:
            await customer.UpdateAccount(pb.UpdateAccountRequest(account=change, update_mask=FieldMask(paths=paths)))
        assert bad_mask.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert violated_field(bad_mask.value) == field
    with pytest.raises(grpc.aio.AioRpcError) as bad_day:
        await customer.UpdateAccount(
            pb.UpdateAccountRequest(
                account=account_pb2.Account(
                    account_id=created.account_id, billing_profile=account_pb2.BillingProfile(bill_cycle_day=32)
                ),
                update_mask=FieldMask(paths=["billing_profile.bill_cycle_day"]),
            )
        )
    assert violated_field(bad_day.value) == "account.billing_profile.bill_cycle_day"
    unchanged = (await customer.GetAccount(pb.GetAccountRequest(account_id=created.account_id))).account
    assert unchanged == updated


async def test_list_filters_searches_and_pages(customer: pb_grpc.CustomerServiceStub) -> None:
    tag = uuid.uuid4().hex[:8]
    made = [
        (
            await customer.CreateAccount(
                pb.CreateAccountRequest(account=account(display_name=f"Paging {tag} {i}", type=kind))
            )
        ).account
        for i, kind in enumerate([account_pb2.ACCOUNT_TYPE_BUSINESS] * 5 + [account_pb2.ACCOUNT_TYPE_INDIVIDUAL] * 2)
    ]
    seen: list[str] = []
    token = ""
    while True:
        page = await customer.ListAccounts(pb.ListAccountsRequest(query=tag.upper(), page_size=2, page_token=token))
        assert len(page.accounts) <= 2
        seen += [a.account_id for a in page.accounts]
        token = page.next_page_token
        if not token:
            break
    assert seen == [a.account_id for a in made], "every match once, in account-number order"
    people = await customer.ListAccounts(
        pb.ListAccountsRequest(query=tag, type=account_pb2.ACCOUNT_TYPE_INDIVIDUAL, page_size=10)
    )
    assert [a.account_id for a in people.accounts] == [a.account_id for a in made[5:]]
    by_number = await customer.ListAccounts(pb.ListAccountsRequest(query=made[3].account_number))
    assert [a.account_id for a in by_number.accounts] == [made[3].account_id]
    with pytest.raises(grpc.aio.AioRpcError) as bad_token:
        await customer.ListAccounts(pb.ListAccountsRequest(page_token="!!not-ours"))
    assert violated_field(bad_token.value) == "page_token"


async def test_status_changes_need_a_reason_and_an_actor(customer: pb_grpc.CustomerServiceStub) -> None:
    created = (await customer.CreateAccount(pb.CreateAccountRequest(account=account(display_name="Status SL")))).account
    with pytest.raises(grpc.aio.AioRpcError) as no_actor:
        await customer.SuspendAccount(pb.SuspendAccountRequest(account_id=created.account_id, reason="unpaid"))
    assert violated_field(no_actor.value) == "actor"
    request = pb.SuspendAccountRequest(
        account_id=created.account_id,
        reason="unpaid",
        actor=account_pb2.STATUS_ACTOR_COLLECTIONS,
        request_id=str(uuid.uuid4()),
    )
    first = await customer.SuspendAccount(request)
    assert first.account.status == account_pb2.ACCOUNT_STATUS_SUSPENDED
    assert first.account.last_status_change.actor == account_pb2.STATUS_ACTOR_COLLECTIONS
    assert await customer.SuspendAccount(request) == first, "a retried suspension returns the first answer"
    with pytest.raises(grpc.aio.AioRpcError) as twice:
        await customer.SuspendAccount(
            pb.SuspendAccountRequest(
                account_id=created.account_id, reason="again", actor=account_pb2.STATUS_ACTOR_MANUAL
            )
        )
    assert twice.value.code() == grpc.StatusCode.FAILED_PRECONDITION


async def test_close_asks_balance_and_refuses_when_it_cannot_tell(
    stack: Stack, customer: pb_grpc.CustomerServiceStub
) -> None:
    created = (await customer.CreateAccount(pb.CreateAccountRequest(account=account(display_name="Close SL")))).account
    close = pb.CloseAccountRequest(
        account_id=created.account_id, reason="moving", actor=account_pb2.STATUS_ACTOR_MANUAL
    )
    stack.stop_service("balance")
    try:
        with pytest.raises(grpc.aio.AioRpcError) as unknown:
            await customer.CloseAccount(close)
        assert unknown.value.code() == grpc.StatusCode.UNAVAILABLE
        still = (await customer.GetAccount(pb.GetAccountRequest(account_id=created.account_id))).account
        assert still.status == account_pb2.ACCOUNT_STATUS_ACTIVE
    finally:
        stack.start_service("balance")
    # UNAVAILABLE is retryable: once customer reconnects to the restarted balance, the close goes through.
    closed = (
        await eventually(lambda: customer.CloseAccount(close), timeout=20, what="the close to go through")
    ).account
    assert closed.status == account_pb2.ACCOUNT_STATUS_CLOSED
    assert closed.last_status_change.reason == "moving"


async def test_a_bad_iban_or_card_data_anywhere_is_refused_and_nothing_is_stored(
    customer: pb_grpc.CustomerServiceStub, customer_db: asyncpg.Connection
) -> None:
    created = (await customer.CreateAccount(pb.CreateAccountRequest(account=account(display_name="Pagos SL")))).account
    methods_before = await customer_db.fetchval("select count(*) from payment_methods")
    sepa = payment_method_pb2.SepaDirectDebitDetails(
        iban="ES9121000418450200051333",  # check digits do not match (ISO 13616 mod-97)
        mandate_id="MANDATE-1",
        mandate_signature_date=date_pb2.Date(year=2026, month=1, day=5),
    )
    with pytest.raises(grpc.aio.AioRpcError) as bad_iban:
        await customer.AddPaymentMethod(
            pb.AddPaymentMethodRequest(
                account_id=created.account_id, payment_method=payment_method_pb2.PaymentMethod(sepa_direct_debit=sepa)
            )
        )
    assert bad_iban.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert violated_field(bad_iban.value) == "payment_method.sepa_direct_debit.iban"

    card_number = "4111 1111 1111 1111"
    card = payment_method_pb2.CardDetails(
        provider="stripe", provider_token=card_number, brand="visa", last4="1111", expiry_month=12, expiry_year=2030
    )
    for request, field in (
        (
            pb.AddPaymentMethodRequest(
                account_id=created.account_id, payment_method=payment_method_pb2.PaymentMethod(card=card)
            ),
            "payment_method.card.provider_token",
        ),
        (
            pb.CreateAccountRequest(account=account(labels={"note": f"card {card_number}"})),
            'account.labels["note"]',
        ),
        (pb.CreateAccountRequest(account=account(labels={"cvv": "123"})), 'account.labels["cvv"]'),
    ):
        method = (
            customer.AddPaymentMethod if isinstance(request, pb.AddPaymentMethodRequest) else customer.CreateAccount
        )
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await method(request)  # type: ignore[operator]
        assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert violated_field(refused.value) == field
        assert "4111" not in (refused.value.details() or ""), "the error never echoes card data"
    assert await customer_db.fetchval("select count(*) from payment_methods") == methods_before
    assert await customer_db.fetchval("select count(*) from accounts where labels ? 'note' or labels ? 'cvv'") == 0
