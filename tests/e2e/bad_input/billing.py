"""BillingService: bill units, cycles, bills, bill now, previews, credit notes, documents, delivery."""

from __future__ import annotations

from evolutivo.billing.v1 import billing_service_pb2 as pb
from evolutivo.billing.v1 import document_pb2

from bad_input import FAILED, INVALID, NOT_FOUND, Case, case
from bad_input.values import HUGE_UNITS, NOT_A_TOKEN, NOT_UUID, NUL, SQL, UNKNOWN, eur, long, money
from bad_input.world import World

S = "/evolutivo.billing.v1.BillingService/"
REQUEST_ID = "2f0d8a52-7c1e-4c59-9a43-5b8f0e3d1c77"


def note(w: World, **fields: object) -> pb.CreateCreditNoteRequest:
    values: dict[str, object] = {
        "bill_id": w.bill_id,
        "whole_bill": True,
        "reason": "pricing error",
        "actor": "ops:bad-input",
        "request_id": REQUEST_ID,
    }
    values.update(fields)
    return pb.CreateCreditNoteRequest(**values)  # type: ignore[arg-type]


def line(number: int, amount: object = None) -> pb.CreditNoteLineRequest:
    return pb.CreditNoteLineRequest(bill_line_number=number, amount=amount)  # type: ignore[arg-type]


def by_id(method: str, field: str, build: object, unknown: bool = True) -> list[Case]:
    make = build
    rows = [
        case(S + method, f"{field} not a UUID", lambda w: make(NOT_UUID), INVALID, field),  # type: ignore[operator]
        case(S + method, f"{field} SQL-looking", lambda w: make(SQL), INVALID, field),  # type: ignore[operator]
    ]
    if unknown:
        rows.append(case(S + method, f"{field} unknown", lambda w: make(UNKNOWN), NOT_FOUND))  # type: ignore[operator]
    return rows


CASES: list[Case] = [
    *by_id("GetBillUnit", "bill_unit_id", lambda v: pb.GetBillUnitRequest(bill_unit_id=v)),
    *by_id("ListBillUnits", "account_id", lambda v: pb.ListBillUnitsRequest(account_id=v), unknown=False),
    case(
        S + "ListBillUnits", "page size negative", lambda w: pb.ListBillUnitsRequest(page_size=-1), INVALID, "page_size"
    ),
    case(
        S + "ListBillUnits",
        "page token forged",
        lambda w: pb.ListBillUnitsRequest(page_token=NOT_A_TOKEN),
        INVALID,
        "page_token",
    ),
    *by_id("GetBillingSummary", "account_id", lambda v: pb.GetBillingSummaryRequest(account_id=v)),
    *by_id("ListBillCycles", "account_id", lambda v: pb.ListBillCyclesRequest(account_id=v)),
    case(
        S + "ListBillCycles",
        "page token forged",
        lambda w: pb.ListBillCyclesRequest(account_id=w.account_id, page_token=NOT_A_TOKEN),
        INVALID,
        "page_token",
    ),
    *by_id("ListUnbilledItems", "account_id", lambda v: pb.ListUnbilledItemsRequest(account_id=v), unknown=False),
    *by_id("GetBill", "bill_id", lambda v: pb.GetBillRequest(bill_id=v)),
    case(S + "GetBill", "bill id missing", lambda w: pb.GetBillRequest(), INVALID, "bill_id"),
    *by_id("ListBills", "account_id", lambda v: pb.ListBillsRequest(account_id=v), unknown=False),
    case(
        S + "ListBills",
        "page size negative",
        lambda w: pb.ListBillsRequest(account_id=w.account_id, page_size=-7),
        INVALID,
        "page_size",
    ),
    # --- BillNow / PreviewBill
    *by_id("BillNow", "account_id", lambda v: pb.BillNowRequest(account_id=v, request_id=REQUEST_ID)),
    case(
        S + "BillNow", "request id missing", lambda w: pb.BillNowRequest(account_id=w.account_id), INVALID, "request_id"
    ),
    case(
        S + "BillNow",
        "request id not a UUID",
        lambda w: pb.BillNowRequest(account_id=w.account_id, request_id=SQL),
        INVALID,
        "request_id",
    ),
    case(
        S + "BillNow",
        "nothing unbilled",
        lambda w: pb.BillNowRequest(account_id=w.account_id, request_id=REQUEST_ID),
        FAILED,
    ),
    case(
        S + "BillNow",
        "closed account with nothing unbilled",
        lambda w: pb.BillNowRequest(account_id=w.closed_account_id, request_id=REQUEST_ID),
        FAILED,
    ),
    *by_id("PreviewBill", "account_id", lambda v: pb.PreviewBillRequest(account_id=v)),
    # --- Credit notes
    case(S + "CreateCreditNote", "reason missing", lambda w: note(w, reason=""), INVALID, "reason"),
    case(S + "CreateCreditNote", "reason over-long", lambda w: note(w, reason=long(501)), INVALID, "reason"),
    case(S + "CreateCreditNote", "reason with NUL", lambda w: note(w, reason=NUL), INVALID, "reason"),
    case(S + "CreateCreditNote", "actor missing", lambda w: note(w, actor=""), INVALID, "actor"),
    case(S + "CreateCreditNote", "actor over-long", lambda w: note(w, actor=long(201)), INVALID, "actor"),
    case(S + "CreateCreditNote", "request id missing", lambda w: note(w, request_id=""), INVALID, "request_id"),
    case(S + "CreateCreditNote", "neither whole bill nor lines", lambda w: note(w, whole_bill=False), INVALID, "lines"),
    case(S + "CreateCreditNote", "whole bill and lines", lambda w: note(w, lines=[line(1)]), INVALID, "lines"),
    case(
        S + "CreateCreditNote",
        "line number not on the bill",
        lambda w: note(w, whole_bill=False, lines=[line(99)]),
        INVALID,
        "lines[0].bill_line_number",
    ),
    case(
        S + "CreateCreditNote",
        "line amount negative",
        lambda w: note(w, whole_bill=False, lines=[line(1, eur("-1.00"))]),
        INVALID,
        "lines[0].amount",
    ),
    case(
        S + "CreateCreditNote",
        "line amount zero",
        lambda w: note(w, whole_bill=False, lines=[line(1, eur("0"))]),
        INVALID,
        "lines[0].amount",
    ),
    case(
        S + "CreateCreditNote",
        "line amount huge",
        lambda w: note(w, whole_bill=False, lines=[line(1, money(HUGE_UNITS))]),
        INVALID,
        "lines[0].amount",
    ),
    case(
        S + "CreateCreditNote",
        "line amount in another currency",
        lambda w: note(w, whole_bill=False, lines=[line(1, money(1, currency="USD"))]),
        INVALID,
        "lines[0].amount",
    ),
    case(
        S + "CreateCreditNote",
        "line amount finer than a cent",
        lambda w: note(w, whole_bill=False, lines=[line(1, money(0, 1_000_000))]),
        INVALID,
        "lines[0].amount",
    ),
    case(S + "CreateCreditNote", "bill id not a UUID", lambda w: note(w, bill_id=NOT_UUID), INVALID, "bill_id"),
    case(S + "CreateCreditNote", "unknown bill", lambda w: note(w, bill_id=UNKNOWN), NOT_FOUND),
    *by_id("GetCreditNote", "credit_note_id", lambda v: pb.GetCreditNoteRequest(credit_note_id=v)),
    *by_id("ListCreditNotes", "account_id", lambda v: pb.ListCreditNotesRequest(account_id=v), unknown=False),
    case(
        S + "ListCreditNotes",
        "bill id not a UUID",
        lambda w: pb.ListCreditNotesRequest(account_id=w.account_id, bill_id=SQL),
        INVALID,
        "bill_id",
    ),
    # --- Documents and delivery
    *by_id("GetBillDocument", "bill_id", lambda v: document_pb2.GetBillDocumentRequest(bill_id=v)),
    *by_id("GetBillDelivery", "bill_id", lambda v: document_pb2.GetBillDeliveryRequest(bill_id=v)),
    *by_id("RetryBillDelivery", "bill_id", lambda v: document_pb2.RetryBillDeliveryRequest(bill_id=v)),
]
