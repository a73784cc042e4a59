"""The bill and bill-item RPCs of BillingService: translation only."""

from __future__ import annotations

from collections.abc import Callable

from evolutivo.billing.v1 import billing_service_pb2 as pb
from evolutivo_runtime.errors import InvalidArgument
from evolutivo_runtime.ids import parse_uuid
from evolutivo_runtime.money import from_money
from evolutivo_runtime.pagination import page_size
from evolutivo_runtime.server import Context

from evolutivo_billing.adapters import bills_proto
from evolutivo_billing.domain.credit_notes import CreditLineRequest
from evolutivo_billing.service_layer import bills, credit_notes
from evolutivo_billing.service_layer.bills import BillPolicy
from evolutivo_billing.service_layer.unit_of_work import BillingUnitOfWork


class BillsApi:
    """Mixed into BillingServicer."""

    _uow: Callable[[], BillingUnitOfWork]
    _policy: BillPolicy

    async def ListUnbilledItems(
        self, request: pb.ListUnbilledItemsRequest, context: Context
    ) -> pb.ListUnbilledItemsResponse:
        account_id = parse_uuid("account_id", request.account_id)
        size = page_size(request.page_size)
        after = bills_proto.items_after_from_token(request.page_token, account_id)
        found, next_after = await bills.list_unbilled_items(self._uow(), account_id, size, after)
        return pb.ListUnbilledItemsResponse(
            items=[bills_proto.item_to_pb(i) for i in found],
            next_page_token=bills_proto.items_page_token(next_after, account_id) if next_after else "",
        )

    async def GetBill(self, request: pb.GetBillRequest, context: Context) -> pb.GetBillResponse:
        bill = await bills.get_bill(self._uow(), parse_uuid("bill_id", request.bill_id))
        return pb.GetBillResponse(bill=bills_proto.bill_to_pb(bill))

    async def ListBills(self, request: pb.ListBillsRequest, context: Context) -> pb.ListBillsResponse:
        account_id = parse_uuid("account_id", request.account_id)
        size = page_size(request.page_size)
        before = bills_proto.bills_before_from_token(request.page_token, account_id)
        found, next_before = await bills.list_bills(self._uow(), account_id, size, before)
        return pb.ListBillsResponse(
            bills=[bills_proto.bill_to_pb(b, with_charge_ids=False) for b in found],
            next_page_token=bills_proto.bills_page_token(next_before, account_id) if next_before else "",
        )

    async def BillNow(self, request: pb.BillNowRequest, context: Context) -> pb.BillNowResponse:
        account_id = parse_uuid("account_id", request.account_id)
        request_id = parse_uuid("request_id", request.request_id)
        bill = await bills.bill_now(self._uow(), account_id, request_id, self._policy)
        return pb.BillNowResponse(bill=bills_proto.bill_to_pb(bill))

    async def PreviewBill(self, request: pb.PreviewBillRequest, context: Context) -> pb.PreviewBillResponse:
        bill = await bills.preview_bill(self._uow(), parse_uuid("account_id", request.account_id), self._policy)
        return pb.PreviewBillResponse(bill=bills_proto.bill_to_pb(bill))

    async def CreateCreditNote(
        self, request: pb.CreateCreditNoteRequest, context: Context
    ) -> pb.CreateCreditNoteResponse:
        bill_id = parse_uuid("bill_id", request.bill_id)
        request_id = parse_uuid("request_id", request.request_id)
        lines = []
        for i, line in enumerate(request.lines):
            try:
                amount = from_money(line.amount) if line.HasField("amount") else None
            except ValueError as exc:
                raise InvalidArgument(f"lines[{i}].amount", str(exc)) from None
            lines.append(CreditLineRequest(line.bill_line_number, amount, line.amount.currency_code))
        note = await credit_notes.create_credit_note(
            self._uow(),
            credit_notes.CreditNoteRequest(
                bill_id, request.whole_bill, lines, request.reason, request.actor, request_id
            ),
            self._policy.credit_note_numbering,
        )
        return pb.CreateCreditNoteResponse(credit_note=bills_proto.credit_note_to_pb(note))

    async def GetCreditNote(self, request: pb.GetCreditNoteRequest, context: Context) -> pb.GetCreditNoteResponse:
        note = await credit_notes.get_credit_note(self._uow(), parse_uuid("credit_note_id", request.credit_note_id))
        return pb.GetCreditNoteResponse(credit_note=bills_proto.credit_note_to_pb(note))

    async def ListCreditNotes(self, request: pb.ListCreditNotesRequest, context: Context) -> pb.ListCreditNotesResponse:
        account_id = parse_uuid("account_id", request.account_id)
        bill_id = parse_uuid("bill_id", request.bill_id) if request.bill_id else None
        size = page_size(request.page_size)
        before = bills_proto.credit_notes_before_from_token(request.page_token, account_id, bill_id)
        found, next_before = await credit_notes.list_credit_notes(self._uow(), account_id, bill_id, size, before)
        return pb.ListCreditNotesResponse(
            credit_notes=[bills_proto.credit_note_to_pb(n) for n in found],
            next_page_token=bills_proto.credit_notes_page_token(next_before, account_id, bill_id)
            if next_before
            else "",
        )
