"""The overview RPC of CustomerService: translation only (service_layer/overview.py decides)."""

from __future__ import annotations

from collections.abc import Callable

from evolutivo.balance.v1 import balance_service_pb2
from evolutivo.billing.v1 import billing_service_pb2
from evolutivo.customer.v1 import customer_service_pb2 as pb
from evolutivo.customer.v1 import overview_pb2
from evolutivo_runtime.ids import parse_uuid
from evolutivo_runtime.server import Context

from evolutivo_customer.adapters import proto, proto_contacts, proto_payment_methods, proto_purchases
from evolutivo_customer.service_layer import overview
from evolutivo_customer.service_layer.unit_of_work import CustomerUnitOfWork


class OverviewApi:
    """Mixed into CustomerServicer."""

    _uow: Callable[[], CustomerUnitOfWork]
    _balance_groups: overview.BalanceGroupsReader
    _billing: overview.BillingSummaryReader | None
    _downstream_timeout: float

    async def GetAccountOverview(
        self, request: pb.GetAccountOverviewRequest, context: Context
    ) -> pb.GetAccountOverviewResponse:
        account_id = parse_uuid("account_id", request.account_id)
        found = await overview.get_overview(
            self._uow(), self._balance_groups, self._billing, account_id, self._downstream_timeout
        )
        return pb.GetAccountOverviewResponse(overview=overview_to_pb(found))


def overview_to_pb(found: overview.AccountOverview) -> overview_pb2.AccountOverview:
    pb_overview = overview_pb2.AccountOverview(
        account=proto.account_to_pb(found.account),
        contacts=[proto_contacts.contact_to_pb(c) for c in found.contacts],
        services=[proto.service_to_pb(s) for s in found.services],
        # Masked by the translation: never a full provider token or IBAN.
        payment_methods=[proto_payment_methods.payment_method_to_pb(m) for m in found.payment_methods],
        purchases=[proto_purchases.purchase_to_pb(p, found.as_of) for p in found.purchases],
        unavailable=[overview_pb2.UnavailableSection(section=m.section, reason=m.reason) for m in found.unavailable],
    )
    if found.balance is not None:
        _fill_balance(pb_overview, found.balance)
    if found.billing is not None:
        _fill_billing(pb_overview, found.billing)
    return pb_overview


def _fill_balance(pb_overview: overview_pb2.AccountOverview, balance: balance_service_pb2.GetBalanceResponse) -> None:
    pb_overview.balance_groups.extend(
        overview_pb2.OverviewBalanceGroup(
            balance_group_id=g.balance_group_id, name=g.name, is_default=g.is_default, balance=g.balance
        )
        for g in balance.balance_groups
    )
    pb_overview.balance_total.CopyFrom(balance.total)


def _fill_billing(
    pb_overview: overview_pb2.AccountOverview, billing: billing_service_pb2.GetBillingSummaryResponse
) -> None:
    pb_overview.open_bills.extend(
        overview_pb2.OverviewBill(
            bill_id=b.bill_id,
            bill_number=b.bill_number,
            total=b.total,
            open_amount=b.open_amount,
            due_date=b.due_date,
            overdue=b.overdue,
        )
        for b in billing.open_bills
    )
    pb_overview.overdue_total.CopyFrom(billing.overdue_total)
    c = billing.collections
    pb_overview.collections.CopyFrom(
        overview_pb2.OverviewCollections(
            in_collections=c.in_collections,
            case_id=c.case_id,
            stage=c.stage,
            overdue_amount=c.overdue_amount,
            days_past_due=c.days_past_due,
        )
    )
