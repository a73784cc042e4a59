"""The ERP gateway over the running stack, against a real Tryton: a bill issued in billing ends up
as a posted invoice in Tryton with the same total, and a payment booked in Tryton comes back into
balance once (and pays the bill in billing) without being sent back to Tryton; a credit note's
credit goes in Tryton where billing gave it (its own bill, then the next bill), and the books
reconcile."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import date, timedelta
from decimal import Decimal

import grpc
import pytest
from e2e_support import (
    advance_to,
    at,
    clock_now,
    metered_account,
    metric_samples,
    metric_sum,
    tryton_connection,
)
from evolutivo.balance.v1 import balance_service_pb2 as balance_pb
from evolutivo.balance.v1 import balance_service_pb2_grpc as balance_grpc
from evolutivo.balance.v1 import payment_pb2
from evolutivo.billing.v1 import bill_cycle_pb2, bill_pb2
from evolutivo.billing.v1 import billing_service_pb2 as billing_pb
from evolutivo.billing.v1 import billing_service_pb2_grpc as billing_grpc
from evolutivo.charging.v1 import charging_service_pb2 as charging_pb
from evolutivo.charging.v1 import charging_service_pb2_grpc as charging_grpc
from evolutivo.charging.v1 import usage_pb2
from evolutivo.customer.v1 import customer_service_pb2 as customer_pb
from evolutivo.customer.v1 import customer_service_pb2_grpc as customer_grpc
from evolutivo.customer.v1 import purchase_pb2
from evolutivo.erp_gateway.v1 import connection_pb2, sync_job_pb2, sync_state_pb2
from evolutivo.erp_gateway.v1 import erp_gateway_service_pb2 as erp_pb
from evolutivo.erp_gateway.v1 import erp_gateway_service_pb2_grpc as erp_grpc
from evolutivo_erp_gateway.adapters.crypto import generate_key
from evolutivo_erp_gateway.adapters.tryton import TrytonClient
from evolutivo_runtime.money import from_money, to_money
from evolutivo_runtime.testing import eventually
from evolutivo_runtime.timestamps import to_timestamp
from evolutivo_stack.embedded import scratch_dir
from evolutivo_stack.stack import Stack
from reconciliation import reconciled
from support.tryton import ADMIN, ADMIN_PASSWORD, Tryton, tryton  # noqa: F401  (the session's Tryton)

pytestmark = pytest.mark.e2e

SUCCEEDED = sync_job_pb2.SYNC_JOB_STATE_SUCCEEDED


@pytest.fixture(scope="module")
def stack() -> Iterator[Stack]:
    with scratch_dir("stack") as data_dir:
        with Stack(
            data_dir,
            base_port=None,
            clock_mode="controllable",
            env={
                "BILLING_CYCLE_CHECK_SECONDS": "0.5",
                "BILLING_LATE_USAGE_DELAY_SECONDS": "0",
                "BILLING_TAX_RATES": '{"standard": "0.21", "reduced": "0.10", "exempt": "0"}',
                "ERP_GATEWAY_CREDENTIAL_KEYS": generate_key(),
                "ERP_GATEWAY_SYNC_POLL_SECONDS": "0.5",
                "ERP_GATEWAY_IMPORT_POLL_SECONDS": "1",
            },
        ) as running:
            yield running


async def issued_bill(channels: dict[str, grpc.aio.Channel]) -> bill_pb2.Bill:
    """An account with one metered purchase, 150 calls at 0.01 and its cycle closed: its bill."""
    customer = customer_grpc.CustomerServiceStub(channels["customer"])
    code, account_id = await metered_account(channels, "Tryton Clientes SL")
    await customer.CreatePurchase(
        customer_pb.CreatePurchaseRequest(account_id=account_id, purchase=purchase_pb2.Purchase(charge_offer_code=code))
    )
    return await next_bill(channels, account_id, billed=0)


async def next_bill(channels: dict[str, grpc.aio.Channel], account_id: str, billed: int) -> bill_pb2.Bill:
    """150 more calls at 0.01 (1.50, 1.82 with tax) and the account's open cycle closed: its bill
    (the account had `billed` bills)."""
    charging = charging_grpc.ChargingServiceStub(channels["charging"])
    billing = billing_grpc.BillingServiceStub(channels["billing"])
    event = usage_pb2.UsageEvent(
        event_id=f"e2e-{uuid.uuid4().hex}",
        account_id=account_id,
        event_type="api.call",
        event_time=to_timestamp(await clock_now(channels, "charging")),
        quantity="150",
    )
    await charging.RecordUsage(charging_pb.RecordUsageRequest(event=event))

    async def rated() -> usage_pb2.UsageResult | None:
        (result,) = (await charging.ResubmitUsage(charging_pb.ResubmitUsageRequest(event_ids=[event.event_id]))).results
        return result if result.status == usage_pb2.USAGE_STATUS_RATED else None

    await eventually(rated, what="the usage to be rated")

    async def billed_cycle() -> bool | None:
        items = (await billing.ListUnbilledItems(billing_pb.ListUnbilledItemsRequest(account_id=account_id))).items
        return True if items else None

    await eventually(billed_cycle, what="billing to receive the charge")
    cycles = (await billing.ListBillCycles(billing_pb.ListBillCyclesRequest(account_id=account_id))).bill_cycles
    (cycle,) = [c for c in cycles if c.status == bill_cycle_pb2.BILL_CYCLE_STATUS_OPEN]
    await advance_to(
        channels,
        at(cycle.end_time) + timedelta(seconds=5),
        services=("billing", "charging", "erp_gateway"),
        timeout=30,
        via="charging",
    )

    async def issued() -> bill_pb2.Bill | None:
        found = (await billing.ListBills(billing_pb.ListBillsRequest(account_id=account_id))).bills
        return found[0] if len(found) > billed else None

    return await eventually(issued, what="the bill to be issued")


async def test_an_issued_bill_becomes_a_posted_tryton_invoice_and_a_tryton_payment_comes_back(
    stack: Stack,
    channels: dict[str, grpc.aio.Channel],
    tryton: Tryton,  # noqa: F811
) -> None:
    erp = erp_grpc.ErpGatewayServiceStub(channels["erp_gateway"])
    connection = await the_tryton_connection(erp, tryton)

    bill = await issued_bill(channels)

    async def synced(entity_type: int, entity_id: str) -> sync_job_pb2.SyncJob | None:
        state = await erp.GetSyncState(erp_pb.GetSyncStateRequest(entity_type=entity_type, entity_id=entity_id))  # type: ignore[arg-type]
        jobs = [j for j in state.jobs if j.connection_id == connection.connection_id]
        return jobs[0] if jobs and jobs[0].state == SUCCEEDED else None

    customer_job = await eventually(
        lambda: synced(sync_state_pb2.ENTITY_TYPE_CUSTOMER, bill.account_id), timeout=120, what="the party in Tryton"
    )
    invoice_job = await eventually(
        lambda: synced(sync_state_pb2.ENTITY_TYPE_INVOICE, bill.bill_id), timeout=120, what="the invoice in Tryton"
    )
    # What an operator watches: the gateway counted the attempts, and serves its jobs by state.
    metrics_url = stack.replicas("erp_gateway")[0].metrics_url
    succeeded = 'evolutivo_erp_sync_attempts_total{entity_type="invoice",outcome="succeeded"}'
    assert metric_sum(metrics_url, succeeded) >= 1
    assert len(metric_samples(metrics_url, 'evolutivo_erp_sync_jobs{state="dead"}')) == 1
    client = TrytonClient(tryton.url, ADMIN, ADMIN_PASSWORD, 60.0)
    try:
        invoices = await client.search("account.invoice", [("reference", "=", bill.bill_number)])
        assert [str(i) for i in invoices] == [invoice_job.erp_id]
        (row,) = await client.read("account.invoice", invoices, ["state", "total_amount", "party", "invoice_date"])
        assert row["state"] == "posted"
        assert row["total_amount"] == from_money(bill.total) == Decimal("1.82")
        assert str(row["party"]) == customer_job.erp_id
        assert row["invoice_date"] == date(bill.issue_date.year, bill.issue_date.month, bill.issue_date.day)

        # The customer pays at the bank; the accountant books it in Tryton.
        accounts = tryton.accounts
        move = await client.create(
            "account.move",
            {
                "journal": tryton.journals["cash"],
                "date": row["invoice_date"],
                "period": (
                    await client.search(
                        "account.period",
                        [("start_date", "<=", row["invoice_date"]), ("end_date", ">=", row["invoice_date"])],
                        1,
                    )
                )[0],
                "description": "bank statement",
                "lines": [
                    (
                        "create",
                        [
                            {"account": accounts["cash"], "debit": Decimal("1.82"), "credit": Decimal(0)},
                            {
                                "account": accounts["receivable"],
                                "party": row["party"],
                                "debit": Decimal(0),
                                "credit": Decimal("1.82"),
                            },
                        ],
                    )
                ],
            },
        )
        await client.call("model.account.move.post", [move])
        (line,) = await client.search("account.move.line", [("move", "=", move), ("credit", ">", 0)])
    finally:
        await client.aclose()

    balance = balance_grpc.BalanceServiceStub(channels["balance"])
    reference = f"tryton:{line}"

    async def imported() -> balance_pb.GetPaymentResponse | None:
        try:
            return await balance.GetPayment(balance_pb.GetPaymentRequest(reference=reference))
        except grpc.aio.AioRpcError as exc:
            if exc.code() == grpc.StatusCode.NOT_FOUND:
                return None
            raise

    payment = (await eventually(imported, timeout=120, what="the Tryton payment in balance")).payment
    assert (payment.account_id, from_money(payment.amount)) == (bill.account_id, Decimal("1.82"))

    billing = billing_grpc.BillingServiceStub(channels["billing"])

    async def paid() -> bool | None:
        found = (await billing.GetBill(billing_pb.GetBillRequest(bill_id=bill.bill_id))).bill
        return True if found.status == bill_pb2.BILL_STATUS_PAID else None

    await eventually(paid, timeout=60, what="the bill to be paid in billing")

    # The gateway learnt of the payment (balance's PaymentRecorded) but sends it to no ERP: it came from one.
    async def known() -> erp_pb.GetSyncStateResponse | None:
        try:
            return await erp.GetSyncState(
                erp_pb.GetSyncStateRequest(entity_type=sync_state_pb2.ENTITY_TYPE_PAYMENT, entity_id=payment.payment_id)
            )
        except grpc.aio.AioRpcError:
            return None

    state = await eventually(known, timeout=60, what="the gateway to receive PaymentRecorded")
    assert list(state.jobs) == []


async def the_tryton_connection(
    erp: erp_grpc.ErpGatewayServiceStub,
    tryton: Tryton,  # noqa: F811
) -> connection_pb2.Connection:
    """The stack's Tryton connection (one per stack: a second would send the records the first
    imported from Tryton back to it)."""
    known = (await erp.ListConnections(erp_pb.ListConnectionsRequest())).connections
    mine = [c for c in known if c.type == connection_pb2.CONNECTION_TYPE_TRYTON and c.endpoint_url == tryton.url]
    return mine[0] if mine else await tryton_connection(erp, tryton)


async def test_a_credit_notes_credit_reaches_tryton_where_billing_gave_it_and_the_books_reconcile(
    stack: Stack,
    channels: dict[str, grpc.aio.Channel],
    tryton: Tryton,  # noqa: F811
) -> None:
    erp = erp_grpc.ErpGatewayServiceStub(channels["erp_gateway"])
    balance = balance_grpc.BalanceServiceStub(channels["balance"])
    billing = billing_grpc.BillingServiceStub(channels["billing"])
    connection = await the_tryton_connection(erp, tryton)
    first = await issued_bill(channels)  # 1.82
    await balance.RecordPayment(
        balance_pb.RecordPaymentRequest(
            account_id=first.account_id,
            amount=to_money(Decimal("1.00"), "EUR"),
            method=payment_pb2.PAYMENT_METHOD_TYPE_BANK_TRANSFER,
            reference=f"bank-{uuid.uuid4().hex[:10]}",
            request_id=str(uuid.uuid4()),
        )
    )

    async def part_paid() -> bool | None:
        found = (await billing.GetBill(billing_pb.GetBillRequest(bill_id=first.bill_id))).bill
        return True if found.status == bill_pb2.BILL_STATUS_PARTIALLY_PAID else None

    await eventually(part_paid, timeout=60, what="billing to allocate the payment")
    # All of the bill credited: 0.82 goes to the bill (what it still owed), 1.00 is account credit.
    note = (
        await billing.CreateCreditNote(
            billing_pb.CreateCreditNoteRequest(
                bill_id=first.bill_id,
                whole_bill=True,
                reason="service outage",
                actor="ops@example.com",
                request_id=str(uuid.uuid4()),
            )
        )
    ).credit_note
    assert (from_money(note.total), note.voids_bill) == (Decimal("1.82"), False)
    credited = (await billing.GetBill(billing_pb.GetBillRequest(bill_id=first.bill_id))).bill
    assert (credited.status, from_money(credited.open_amount)) == (bill_pb2.BILL_STATUS_PAID, Decimal(0))
    # The next bill (1.82) takes the 1.00 of credit: 0.82 left to pay.
    second = await next_bill(channels, first.account_id, billed=1)
    assert (from_money(second.total), from_money(second.credit_applied), from_money(second.open_amount)) == (
        Decimal("1.82"),
        Decimal("1.00"),
        Decimal("0.82"),
    )

    async def synced(entity_type: int, entity_id: str) -> sync_job_pb2.SyncJob | None:
        state = await erp.GetSyncState(erp_pb.GetSyncStateRequest(entity_type=entity_type, entity_id=entity_id))  # type: ignore[arg-type]
        jobs = [j for j in state.jobs if j.connection_id == connection.connection_id]
        return jobs[0] if jobs and jobs[0].state == SUCCEEDED else None

    allocation = sync_state_pb2.ENTITY_TYPE_CREDIT_NOTE_ALLOCATION
    for sequence in (1, 2):
        entity_id = str(uuid.uuid5(uuid.UUID(note.credit_note_id), f"credit_note_allocation:{sequence}"))
        await eventually(
            lambda entity_id=entity_id: synced(allocation, entity_id),  # type: ignore[misc]
            timeout=120,
            what=f"the credit note's allocation {sequence} in Tryton",
        )
    client = TrytonClient(tryton.url, ADMIN, ADMIN_PASSWORD, 60.0)
    try:
        fields = ["state", "amount_to_pay"]
        found = {}
        for reference in (first.bill_number, second.bill_number, note.credit_note_number):
            (invoice,) = await client.search("account.invoice", [("reference", "=", reference)])
            (row,) = await client.read("account.invoice", [invoice], fields)
            found[reference] = (row["state"], row["amount_to_pay"])
    finally:
        await client.aclose()
    assert found == {
        first.bill_number: ("paid", Decimal(0)),  # 1.00 paid, 0.82 credited
        second.bill_number: ("posted", Decimal("0.82")),  # 1.00 of the note's credit
        note.credit_note_number: ("paid", Decimal(0)),  # its credit used up
    }
    # The five books agree once the scenario's events have landed (docs/reconciliation.md).
    await reconciled(stack)
