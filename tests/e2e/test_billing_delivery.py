"""Bill delivery across processes, to a real SMTP server (aiosmtpd) started by the test: the stack's
billing (two replicas) is pointed at it with BILLING_SMTP_*; an account with a billing contact
(customer's ContactChanged reaches billing over NATS) is charged, the shared clock moves past the
cycle's end, the bill is issued, and one email arrives with the bill's PDF attached, whose number
and totals are those of GetBill, the same PDF GetBillDocument returns; the delivery reads SENT."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import timedelta
from decimal import Decimal
from email.message import EmailMessage
from typing import cast

import grpc
import pytest
from e2e_support import MailServer, advance_to, at, clock_now, mail_server, metered_account, money_text, pdf_text
from evolutivo.billing.v1 import bill_pb2, document_pb2
from evolutivo.billing.v1 import billing_service_pb2 as billing_pb
from evolutivo.billing.v1 import billing_service_pb2_grpc as billing_grpc
from evolutivo.charging.v1 import charging_service_pb2 as charging_pb
from evolutivo.charging.v1 import charging_service_pb2_grpc as charging_grpc
from evolutivo.charging.v1 import usage_pb2
from evolutivo.customer.v1 import contact_pb2, purchase_pb2
from evolutivo.customer.v1 import customer_service_pb2 as customer_pb
from evolutivo.customer.v1 import customer_service_pb2_grpc as customer_grpc
from evolutivo_runtime.money import from_money
from evolutivo_runtime.testing import eventually
from evolutivo_runtime.timestamps import to_timestamp
from evolutivo_stack.embedded import scratch_dir
from evolutivo_stack.stack import Stack

pytestmark = pytest.mark.e2e

SENDER = "billing@evolutivo.test"


@pytest.fixture(scope="module")
def smtp() -> Iterator[MailServer]:
    with mail_server() as server:
        yield server


@pytest.fixture(scope="module")
def stack(smtp: MailServer) -> Iterator[Stack]:
    # Cycles close right after their end; billing's two replicas both run the delivery loop.
    with scratch_dir("stack") as data_dir:
        with Stack(
            data_dir,
            base_port=None,
            clock_mode="controllable",
            env={
                "BILLING_CYCLE_CHECK_SECONDS": "0.5",
                "BILLING_LATE_USAGE_DELAY_SECONDS": "0",
                "BILLING_TAX_RATES": '{"standard": "0.21", "exempt": "0"}',
                "BILLING_SMTP_HOST": "127.0.0.1",
                "BILLING_SMTP_PORT": str(smtp.port),
                "BILLING_SMTP_STARTTLS": "false",
                "BILLING_SMTP_FROM": SENDER,
                "BILLING_DELIVERY_CHECK_SECONDS": "0.5",
                "BILLING_SELLER_NAME": "Evolutivo Telecom S.L.",
                "BILLING_SELLER_ADDRESS": '["Calle Mayor 1", "28013 Madrid"]',
                "BILLING_SELLER_TAX_ID": "ESB12345678",
                "BILLING_PAYMENT_INSTRUCTIONS": '["IBAN ES91 2100 0418 4502 0005 1332"]',
            },
            replicas={"billing": 2},
        ) as running:
            yield running


async def rate(charging: charging_grpc.ChargingServiceAsyncStub, event: usage_pb2.UsageEvent) -> usage_pb2.RatedCharge:
    """Records the event and re-submits it until charging knows the account, purchase and cycle."""
    await charging.RecordUsage(charging_pb.RecordUsageRequest(event=event))

    async def attempt() -> usage_pb2.UsageResult | None:
        (result,) = (await charging.ResubmitUsage(charging_pb.ResubmitUsageRequest(event_ids=[event.event_id]))).results
        return result if result.status == usage_pb2.USAGE_STATUS_RATED else None

    (charge,) = (await eventually(attempt, what=f"{event.event_id} to be rated")).charges
    return charge


async def test_an_issued_bill_is_emailed_with_its_pdf(
    stack: Stack, smtp: MailServer, channels: dict[str, grpc.aio.Channel]
) -> None:
    charging = charging_grpc.ChargingServiceStub(channels["charging"])
    customer = customer_grpc.CustomerServiceStub(channels["customer"])
    billing = billing_grpc.BillingServiceStub(channels["billing"])

    code, account_id = await metered_account(channels, "Facturas Ibéricas SL")
    await customer.AddContact(
        customer_pb.AddContactRequest(
            account_id=account_id,
            request_id=str(uuid.uuid4()),
            contact=contact_pb2.Contact(
                role=contact_pb2.CONTACT_ROLE_BILLING, name="Accounts payable", email="ap@facturas.example"
            ),
        )
    )
    await customer.CreatePurchase(
        customer_pb.CreatePurchaseRequest(account_id=account_id, purchase=purchase_pb2.Purchase(charge_offer_code=code))
    )

    # 123456 calls at 0.01: 1,234.56, plus 21% tax.
    now = await clock_now(channels, "charging")
    charge = await rate(
        charging,
        usage_pb2.UsageEvent(
            event_id=f"e2e-{uuid.uuid4().hex}",
            account_id=account_id,
            event_type="api.call",
            event_time=to_timestamp(now),
            quantity="123456",
        ),
    )

    async def received() -> bool | None:
        items = (await billing.ListUnbilledItems(billing_pb.ListUnbilledItemsRequest(account_id=account_id))).items
        return True if any(i.charge_id == charge.charge_id for i in items) else None

    await eventually(received, what="billing to receive the charge")
    cycles = (await billing.ListBillCycles(billing_pb.ListBillCyclesRequest(account_id=account_id))).bill_cycles
    await advance_to(
        channels, at(cycles[0].end_time) + timedelta(seconds=5), services=("billing", "charging"), via="charging"
    )

    async def issued() -> bill_pb2.Bill | None:
        found = (await billing.ListBills(billing_pb.ListBillsRequest(account_id=account_id))).bills
        return found[0] if found and found[0].bill_number else None

    listed = await eventually(issued, what="the bill to be issued")
    bill = (await billing.GetBill(billing_pb.GetBillRequest(bill_id=listed.bill_id))).bill
    assert (from_money(bill.subtotal), from_money(bill.tax_total), from_money(bill.total)) == (
        Decimal("1234.56"),
        Decimal("259.26"),
        Decimal("1493.82"),
    )

    async def emailed() -> tuple[list[str], EmailMessage] | None:
        mine = [r for r in smtp.received if r[1]["Message-ID"] == f"<bill-{bill.bill_id}@evolutivo.test>"]
        return mine[0] if mine else None

    recipients, message = await eventually(emailed, what="the bill's email")
    assert recipients == ["ap@facturas.example"]
    assert message["From"] == SENDER
    assert bill.bill_number in message["Subject"]
    (attached,) = list(message.iter_attachments())
    assert (attached.get_content_type(), attached.get_filename()) == ("application/pdf", f"{bill.bill_number}.pdf")
    content = cast(bytes, attached.get_content())
    text = pdf_text(content)
    for expected in (
        bill.bill_number,
        "Evolutivo Telecom S.L.",
        "Facturas Ibéricas SL",
        money_text(from_money(bill.subtotal)),
        money_text(from_money(bill.tax_total)),
        money_text(from_money(bill.total)),
        f"Due date: {bill.due_date.year:04d}-{bill.due_date.month:02d}-{bill.due_date.day:02d}",
        "IBAN ES91 2100 0418 4502 0005 1332",
    ):
        assert expected in text, f"{expected!r} is on the emailed PDF"

    document = (await billing.GetBillDocument(document_pb2.GetBillDocumentRequest(bill_id=bill.bill_id))).document
    assert document.content == content, "the PDF kept is the one emailed"

    async def sent() -> document_pb2.BillDelivery | None:
        found = (await billing.GetBillDelivery(document_pb2.GetBillDeliveryRequest(bill_id=bill.bill_id))).delivery
        return found if found.state == document_pb2.BILL_DELIVERY_STATE_SENT else None

    delivery = await eventually(sent, what="the delivery to read SENT")
    assert (list(delivery.recipients), delivery.attempts) == (["ap@facturas.example"], 1)
    # Two replicas ran the delivery loop: the bill went out once.
    mine = [r for r in smtp.received if r[1]["Message-ID"] == delivery.message_id]
    assert len(mine) == 1
