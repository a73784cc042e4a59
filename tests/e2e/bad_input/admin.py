"""The admin services every service serves: audit records, the shared clock, dead letters."""

from __future__ import annotations

from evolutivo.admin.v1 import audit_admin_service_pb2 as audit
from evolutivo.admin.v1 import clock_admin_service_pb2 as clock
from evolutivo.admin.v1 import dead_letter_admin_service_pb2 as dead
from evolutivo_stack.stack import SERVICES
from google.protobuf.duration_pb2 import Duration
from google.protobuf.timestamp_pb2 import Timestamp

from bad_input import INVALID, NOT_FOUND, OK, Case, case
from bad_input.values import NOT_A_TOKEN, NOT_UUID

AUDIT = "/evolutivo.admin.v1.AuditAdminService/"
CLOCK = "/evolutivo.admin.v1.ClockAdminService/"
DEAD = "/evolutivo.admin.v1.DeadLetterAdminService/"


def _cases(service: str) -> list[Case]:
    return [
        case(
            AUDIT + "ListAuditRecords",
            "page size negative",
            lambda w: audit.ListAuditRecordsRequest(page_size=-1),
            INVALID,
            "page_size",
            service=service,
        ),
        case(
            AUDIT + "ListAuditRecords",
            "page token forged",
            lambda w: audit.ListAuditRecordsRequest(page_token=NOT_A_TOKEN),
            INVALID,
            "page_token",
            service=service,
        ),
        case(
            AUDIT + "ListAuditRecords",
            "account id not a UUID",
            lambda w: audit.ListAuditRecordsRequest(account_id=NOT_UUID),
            INVALID,
            "account_id",
            service=service,
        ),
        case(
            CLOCK + "GetClock",
            "nothing to get wrong: reads only",
            lambda w: clock.GetClockRequest(),
            OK,
            service=service,
        ),
        case(CLOCK + "SetClock", "time missing", lambda w: clock.SetClockRequest(), INVALID, "time", service=service),
        case(
            CLOCK + "SetClock",
            "backwards, before 1970",
            lambda w: clock.SetClockRequest(time=Timestamp(seconds=-86400)),
            INVALID,
            "time",
            service=service,
        ),
        case(
            CLOCK + "SetClock",
            "beyond year 9999",
            lambda w: clock.SetClockRequest(time=Timestamp(seconds=400_000_000_000)),
            INVALID,
            "time",
            service=service,
        ),
        case(
            CLOCK + "AdvanceClock",
            "duration missing",
            lambda w: clock.AdvanceClockRequest(),
            INVALID,
            "duration",
            service=service,
        ),
        case(
            CLOCK + "AdvanceClock",
            "duration negative",
            lambda w: clock.AdvanceClockRequest(duration=Duration(seconds=-60)),
            INVALID,
            "duration",
            service=service,
        ),
        case(
            CLOCK + "AdvanceClock",
            "duration past year 9999",
            lambda w: clock.AdvanceClockRequest(duration=Duration(seconds=315_576_000_000)),
            INVALID,
            "duration",
            service=service,
        ),
        case(
            DEAD + "ListDeadLetters",
            "page size negative",
            lambda w: dead.ListDeadLettersRequest(page_size=-1),
            INVALID,
            "page_size",
            service=service,
        ),
        case(
            DEAD + "ListDeadLetters",
            "page token forged",
            lambda w: dead.ListDeadLettersRequest(page_token=NOT_A_TOKEN),
            INVALID,
            "page_token",
            service=service,
        ),
        case(
            DEAD + "ReplayDeadLetter",
            "sequence missing",
            lambda w: dead.ReplayDeadLetterRequest(),
            INVALID,
            "sequence",
            service=service,
        ),
        case(
            DEAD + "ReplayDeadLetter",
            "unknown sequence",
            lambda w: dead.ReplayDeadLetterRequest(sequence=987_654_321),
            NOT_FOUND,
            service=service,
        ),
    ]


CASES: list[Case] = [c for service in SERVICES for c in _cases(service)]
