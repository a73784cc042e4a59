"""evolutivo.billing.v1.CollectionsService: translation only."""

from __future__ import annotations

import uuid
from collections.abc import Callable

from evolutivo.billing.v1 import collections_pb2, collections_service_pb2
from evolutivo.billing.v1 import collections_service_pb2 as pb
from evolutivo.billing.v1 import collections_service_pb2_grpc as grpc_pb
from evolutivo_runtime.errors import InvalidArgument, NotFound
from evolutivo_runtime.idempotency import run_idempotent
from evolutivo_runtime.ids import parse_request_id, parse_uuid
from evolutivo_runtime.pagination import page_size
from evolutivo_runtime.server import Context
from evolutivo_runtime.server.app import Runtime, Servicer
from evolutivo_runtime.timestamps import from_date, to_date

from evolutivo_billing.adapters import collections_proto as proto
from evolutivo_billing.adapters import events, pdf
from evolutivo_billing.adapters.collections_tables import collections_request_log
from evolutivo_billing.adapters.orm import outbox
from evolutivo_billing.domain.bills import currency_exponent
from evolutivo_billing.domain.collections import MAX_TEXT, check_promise
from evolutivo_billing.domain.documents import Seller
from evolutivo_billing.service_layer import collections, notices
from evolutivo_billing.service_layer.collections import CollectionsUnitOfWork
from evolutivo_billing.service_layer.delivery import Documents


def _optional_uuid(field: str, value: str) -> uuid.UUID | None:
    return parse_uuid(field, value) if value else None


def _short(field: str, value: str) -> str:
    if len(value) > MAX_TEXT:
        raise InvalidArgument(field, f"must be at most {MAX_TEXT} characters")
    return value


# Without the service's settings (tests): no seller printed, the standard renderers.
DEFAULT_DOCUMENTS = Documents(Seller(), pdf.render, pdf.render_letter)


class CollectionsServicer(grpc_pb.CollectionsServiceServicer):
    def __init__(self, uow: Callable[[], CollectionsUnitOfWork], documents: Documents = DEFAULT_DOCUMENTS) -> None:
        self._uow = uow
        self._documents = documents

    # -- scenarios ---------------------------------------------------------------------------------------

    async def CreateCollectionsScenario(
        self, request: pb.CreateCollectionsScenarioRequest, context: Context
    ) -> pb.CreateCollectionsScenarioResponse:
        draft = proto.scenario_from_pb(request.scenario)
        draft.validate()
        request_id = parse_request_id(request.request_id)

        async def perform(uow: CollectionsUnitOfWork) -> pb.CreateCollectionsScenarioResponse:
            scenario = await collections.create_scenario(uow, draft)
            return pb.CreateCollectionsScenarioResponse(scenario=proto.scenario_to_pb(scenario))

        return await run_idempotent(
            self._uow(), request_id, "CreateCollectionsScenario", pb.CreateCollectionsScenarioResponse, perform
        )

    async def GetCollectionsScenario(
        self, request: pb.GetCollectionsScenarioRequest, context: Context
    ) -> pb.GetCollectionsScenarioResponse:
        scenario = await collections.get_scenario(self._uow(), parse_uuid("scenario_id", request.scenario_id))
        return pb.GetCollectionsScenarioResponse(scenario=proto.scenario_to_pb(scenario))

    async def ListCollectionsScenarios(
        self, request: pb.ListCollectionsScenariosRequest, context: Context
    ) -> pb.ListCollectionsScenariosResponse:
        size = page_size(request.page_size)
        found, after = await collections.list_scenarios(
            self._uow(), proto.scenarios_after_from_token(request.page_token), size
        )
        return pb.ListCollectionsScenariosResponse(
            scenarios=[proto.scenario_to_pb(s) for s in found],
            next_page_token=proto.scenarios_page_token(after) if after else "",
        )

    async def UpdateCollectionsScenario(
        self, request: pb.UpdateCollectionsScenarioRequest, context: Context
    ) -> pb.UpdateCollectionsScenarioResponse:
        scenario_id = parse_uuid("scenario.scenario_id", request.scenario.scenario_id)
        draft = proto.scenario_from_pb(request.scenario, scenario_id)
        draft.validate()
        scenario = await collections.update_scenario(self._uow(), draft, request.scenario.etag)
        return pb.UpdateCollectionsScenarioResponse(scenario=proto.scenario_to_pb(scenario))

    async def DeleteCollectionsScenario(
        self, request: pb.DeleteCollectionsScenarioRequest, context: Context
    ) -> pb.DeleteCollectionsScenarioResponse:
        await collections.delete_scenario(self._uow(), parse_uuid("scenario_id", request.scenario_id))
        return pb.DeleteCollectionsScenarioResponse()

    # -- cases -----------------------------------------------------------------------------------------------

    async def GetCollectionsCase(
        self, request: pb.GetCollectionsCaseRequest, context: Context
    ) -> pb.GetCollectionsCaseResponse:
        uow = self._uow()
        case = await collections.get_case(uow, parse_uuid("case_id", request.case_id))
        return pb.GetCollectionsCaseResponse(collections_case=proto.case_to_pb(case, uow.clock.now()))

    async def ListCollectionsCases(
        self, request: pb.ListCollectionsCasesRequest, context: Context
    ) -> pb.ListCollectionsCasesResponse:
        account_id = _optional_uuid("account_id", request.account_id)
        status, paused, promised = proto.case_filter(request.state)
        size = page_size(request.page_size)
        uow = self._uow()
        found, before = await collections.list_cases(
            uow,
            account_id,
            status,
            paused,
            promised,
            _short("collector_id", request.collector_id) or None,
            proto.cases_before_from_token(request.page_token),
            size,
        )
        now = uow.clock.now()
        return pb.ListCollectionsCasesResponse(
            collections_cases=[proto.case_to_pb(c, now) for c in found],
            next_page_token=proto.cases_page_token(before) if before else "",
        )

    async def PauseCollectionsCase(
        self, request: pb.PauseCollectionsCaseRequest, context: Context
    ) -> pb.PauseCollectionsCaseResponse:
        uow = self._uow()
        case = await collections.pause_case(uow, parse_uuid("case_id", request.case_id), request.reason, request.actor)
        return pb.PauseCollectionsCaseResponse(collections_case=proto.case_to_pb(case, uow.clock.now()))

    async def ResumeCollectionsCase(
        self, request: pb.ResumeCollectionsCaseRequest, context: Context
    ) -> pb.ResumeCollectionsCaseResponse:
        uow = self._uow()
        case = await collections.resume_case(uow, parse_uuid("case_id", request.case_id), request.reason, request.actor)
        return pb.ResumeCollectionsCaseResponse(collections_case=proto.case_to_pb(case, uow.clock.now()))

    async def AssignCollectionsCase(
        self, request: pb.AssignCollectionsCaseRequest, context: Context
    ) -> pb.AssignCollectionsCaseResponse:
        uow = self._uow()
        case = await collections.assign_case(
            uow, parse_uuid("case_id", request.case_id), _short("collector_id", request.collector_id)
        )
        return pb.AssignCollectionsCaseResponse(collections_case=proto.case_to_pb(case, uow.clock.now()))

    async def CreatePromiseToPay(
        self, request: pb.CreatePromiseToPayRequest, context: Context
    ) -> pb.CreatePromiseToPayResponse:
        case_id = parse_uuid("case_id", request.case_id)
        instalments = proto.instalments_from_pb(request.promise)
        # The request's fields before the case is looked up; what depends on the case (its
        # currency, the account's today) after.
        check_promise(instalments, request.promise.note, request.promise.actor)
        request_id = parse_request_id(request.request_id)

        async def perform(uow: CollectionsUnitOfWork) -> pb.CreatePromiseToPayResponse:
            case = await uow.collections.get_case(case_id)
            if case is None:
                raise NotFound("collections_case", str(case_id))
            proto.check_instalment_currency(request.promise, case.currency_code)
            promise, case = await collections.make_promise(
                uow, case_id, instalments, request.promise.note, request.promise.actor
            )
            return pb.CreatePromiseToPayResponse(
                promise=proto.promise_to_pb(promise, case.currency_code),
                collections_case=proto.case_to_pb(case, uow.clock.now()),
            )

        return await run_idempotent(
            self._uow(), request_id, "CreatePromiseToPay", pb.CreatePromiseToPayResponse, perform
        )

    # -- tasks ----------------------------------------------------------------------------------------------------

    async def ListCollectionsTasks(
        self, request: pb.ListCollectionsTasksRequest, context: Context
    ) -> pb.ListCollectionsTasksResponse:
        state = proto.task_state_filter(request.state)
        size = page_size(request.page_size)
        found, after = await collections.list_tasks(
            self._uow(),
            _short("collector_id", request.collector_id) or None,
            _optional_uuid("case_id", request.case_id),
            state,
            proto.tasks_after_from_token(request.page_token),
            size,
        )
        return pb.ListCollectionsTasksResponse(
            tasks=[proto.task_to_pb(t) for t in found],
            next_page_token=proto.tasks_page_token(after) if after else "",
        )

    async def CompleteCollectionsTask(
        self, request: pb.CompleteCollectionsTaskRequest, context: Context
    ) -> pb.CompleteCollectionsTaskResponse:
        task = await collections.complete_task(
            self._uow(), parse_uuid("task_id", request.task_id), request.outcome, request.actor
        )
        return pb.CompleteCollectionsTaskResponse(task=proto.task_to_pb(task))

    # -- aging -------------------------------------------------------------------------------------------------------

    async def GetAging(self, request: pb.GetAgingRequest, context: Context) -> pb.GetAgingResponse:
        as_of = from_date(request.as_of_date, "as_of_date") if request.HasField("as_of_date") else None
        currency = request.currency_code
        if currency:
            try:
                currency_exponent(currency)
            except ValueError:
                raise InvalidArgument("currency_code", "must be an ISO 4217 currency code") from None
        size = page_size(request.page_size)
        report = await collections.aging(
            self._uow(),
            as_of,
            currency or None,
            _optional_uuid("account_id", request.account_id),
            proto.aging_after_from_token(request.page_token),
            size,
        )
        return pb.GetAgingResponse(
            as_of_date=to_date(report.as_of),
            totals=[proto.aging_to_pb(a) for a in report.totals],
            days_sales_outstanding={c: format(v, "f") if v is not None else "" for c, v in report.dso.items()},
            billed_sales=[proto.money(v, c) for c, v in sorted(report.billed_sales.items())],
            accounts=[
                collections_pb2.AccountAging(account_id=str(a), buckets=proto.aging_to_pb(per))
                for a, per in report.accounts
            ],
            next_page_token=proto.aging_page_token(report.next_after) if report.next_after else "",
        )

    # -- notices ---------------------------------------------------------------------------------------------------

    async def GetCollectionsNotice(
        self, request: pb.GetCollectionsNoticeRequest, context: Context
    ) -> pb.GetCollectionsNoticeResponse:
        notice = await notices.get_notice(self._uow(), parse_uuid("notice_id", request.notice_id))
        return pb.GetCollectionsNoticeResponse(notice=proto.notice_to_pb(notice))

    async def GetCollectionsNoticeDocument(
        self, request: pb.GetCollectionsNoticeDocumentRequest, context: Context
    ) -> pb.GetCollectionsNoticeDocumentResponse:
        document = await notices.get_notice_document(
            self._uow(), parse_uuid("notice_id", request.notice_id), self._documents
        )
        return pb.GetCollectionsNoticeDocumentResponse(document=proto.notice_document_to_pb(document))

    # -- contact attempts --------------------------------------------------------------------------------------------

    async def RecordCollectionsContactAttempt(
        self, request: pb.RecordCollectionsContactAttemptRequest, context: Context
    ) -> pb.RecordCollectionsContactAttemptResponse:
        case_id = parse_uuid("case_id", request.case_id)
        channel, outcome, contact_time = proto.contact_from_pb(request.attempt)
        request_id = parse_request_id(request.request_id)

        async def perform(uow: CollectionsUnitOfWork) -> pb.RecordCollectionsContactAttemptResponse:
            attempt = await collections.record_contact_attempt(
                uow, case_id, channel, outcome, request.attempt.note, request.attempt.actor, contact_time
            )
            return pb.RecordCollectionsContactAttemptResponse(attempt=proto.contact_to_pb(attempt))

        return await run_idempotent(
            self._uow(),
            request_id,
            "RecordCollectionsContactAttempt",
            pb.RecordCollectionsContactAttemptResponse,
            perform,
        )

    async def ListCollectionsContactAttempts(
        self, request: pb.ListCollectionsContactAttemptsRequest, context: Context
    ) -> pb.ListCollectionsContactAttemptsResponse:
        case_id = parse_uuid("case_id", request.case_id)
        size = page_size(request.page_size)
        found, before = await collections.list_contact_attempts(
            self._uow(), case_id, proto.cases_before_from_token(request.page_token), size
        )
        return pb.ListCollectionsContactAttemptsResponse(
            attempts=[proto.contact_to_pb(a) for a in found],
            next_page_token=proto.cases_page_token(before) if before else "",
        )


def collections_uow_factory(rt: Runtime) -> Callable[[], CollectionsUnitOfWork]:
    """Billing's unit of work with the collections repository and request log."""

    def uow() -> CollectionsUnitOfWork:
        return CollectionsUnitOfWork(rt.sessions, outbox, rt.clock, events.encode, collections_request_log)

    return uow


def servicer(rt: Runtime, documents: Documents = DEFAULT_DOCUMENTS) -> Servicer:
    """CollectionsService, for app.wire (with the seller and renderers of the service's settings)."""
    return Servicer(
        grpc_pb.add_CollectionsServiceServicer_to_server,
        CollectionsServicer(collections_uow_factory(rt), documents),
        collections_service_pb2.DESCRIPTOR.services_by_name["CollectionsService"].full_name,
    )
