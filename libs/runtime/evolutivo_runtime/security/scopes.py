"""THE table of who may call what: the scope every RPC of every service requires.

One entry per gRPC method ("/<package>.<Service>/<Method>"). The AuthGuard refuses a method
that has no entry (PERMISSION_DENIED: deny by default), and tests/unit/runtime/test_security_scopes.py
walks every RPC in protos/ and fails if one is missing here, so a new RPC cannot ship unguarded.

Each rule also says whether the call changes state (it is then written to the audit log) and
which rate-limit bucket it draws from ("ingest" for usage, "expensive_read" for reads that fan
out or scan; None for no per-caller limit beyond the server's own).

Scopes are "<resource>:<read|write|admin>": write changes data in the ordinary course of business,
admin changes configuration or overrides (credit limits, collections scenarios, ERP connections,
replays, the clock) and is meant for operators, not for platforms.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final, Literal

RateBucket = Literal["ingest", "expensive_read"]

# The standard health service answers without a caller identity: load balancers and Kubernetes
# probes cannot present one. Nothing else is exempt.
PUBLIC_PREFIXES: Final = ("/grpc.health.v1.Health/",)


@dataclass(frozen=True)
class Rule:
    scope: str
    mutates: bool = False
    rate: RateBucket | None = None


def _read(scope: str, rate: RateBucket | None = None) -> Rule:
    return Rule(scope, mutates=False, rate=rate)


def _write(scope: str, rate: RateBucket | None = None) -> Rule:
    return Rule(scope, mutates=True, rate=rate)


_CUSTOMER = "/evolutivo.customer.v1.CustomerService/"
_CHARGING = "/evolutivo.charging.v1.ChargingService/"
_BALANCE = "/evolutivo.balance.v1.BalanceService/"
_BILLING = "/evolutivo.billing.v1.BillingService/"
_COLLECTIONS = "/evolutivo.billing.v1.CollectionsService/"
_ERP = "/evolutivo.erp_gateway.v1.ErpGatewayService/"
_DLQ = "/evolutivo.admin.v1.DeadLetterAdminService/"
_CLOCK = "/evolutivo.admin.v1.ClockAdminService/"
_AUDIT = "/evolutivo.admin.v1.AuditAdminService/"

RULES: Final[dict[str, Rule]] = {
    # --- customer
    _CUSTOMER + "CreateAccount": _write("accounts:write"),
    _CUSTOMER + "GetAccount": _read("accounts:read"),
    _CUSTOMER + "ListAccounts": _read("accounts:read"),
    _CUSTOMER + "UpdateAccount": _write("accounts:write"),
    _CUSTOMER + "SuspendAccount": _write("accounts:admin"),
    _CUSTOMER + "ReinstateAccount": _write("accounts:admin"),
    _CUSTOMER + "CloseAccount": _write("accounts:admin"),
    _CUSTOMER + "ErasePersonalData": _write("personal_data:admin"),
    # Fans out to balance and billing.
    _CUSTOMER + "GetAccountOverview": _read("accounts:read", "expensive_read"),
    _CUSTOMER + "AddContact": _write("accounts:write"),
    _CUSTOMER + "UpdateContact": _write("accounts:write"),
    _CUSTOMER + "RemoveContact": _write("accounts:write"),
    _CUSTOMER + "ListContacts": _read("accounts:read"),
    _CUSTOMER + "CreateProvisionedService": _write("accounts:write"),
    _CUSTOMER + "ListProvisionedServices": _read("accounts:read"),
    _CUSTOMER + "SetProvisionedServiceStatus": _write("accounts:write"),
    _CUSTOMER + "AddPaymentMethod": _write("payment_methods:write"),
    _CUSTOMER + "ListPaymentMethods": _read("payment_methods:read"),
    _CUSTOMER + "RemovePaymentMethod": _write("payment_methods:write"),
    _CUSTOMER + "SetDefaultPaymentMethod": _write("payment_methods:write"),
    _CUSTOMER + "CreatePurchase": _write("purchases:write"),
    _CUSTOMER + "EndPurchase": _write("purchases:write"),
    _CUSTOMER + "CancelPurchase": _write("purchases:write"),
    _CUSTOMER + "ListPurchases": _read("purchases:read"),
    # --- charging
    _CHARGING + "GetChargingAccount": _read("charges:read"),
    _CHARGING + "CreateChargeOffer": _write("catalog:write"),
    _CHARGING + "UpdateChargeOffer": _write("catalog:write"),
    _CHARGING + "ActivateChargeOffer": _write("catalog:write"),
    _CHARGING + "RetireChargeOffer": _write("catalog:write"),
    _CHARGING + "GetChargeOffer": _read("catalog:read"),
    _CHARGING + "ListChargeOffers": _read("catalog:read"),
    _CHARGING + "RecordUsage": _write("usage:write", "ingest"),
    _CHARGING + "RecordUsageBatch": _write("usage:write", "ingest"),
    _CHARGING + "StreamUsage": _write("usage:write", "ingest"),
    _CHARGING + "ListCharges": _read("charges:read", "expensive_read"),
    _CHARGING + "ListUnratedUsage": _read("usage:read", "expensive_read"),
    _CHARGING + "ResubmitUsage": _write("usage:admin"),
    _CHARGING + "RerateUsage": _write("usage:admin"),
    # --- balance
    _BALANCE + "GetBalance": _read("balances:read"),
    _BALANCE + "GetBalanceGroup": _read("balances:read"),
    _BALANCE + "CreateBalanceGroup": _write("balances:write"),
    _BALANCE + "CloseBalanceGroup": _write("balances:write"),
    _BALANCE + "RecordPayment": _write("payments:write"),
    _BALANCE + "ReversePayment": _write("payments:write"),
    _BALANCE + "GetPayment": _read("payments:read"),
    _BALANCE + "CreateAdjustment": _write("adjustments:write"),
    _BALANCE + "TransferBalance": _write("balances:write"),
    _BALANCE + "WriteOff": _write("adjustments:write"),
    _BALANCE + "RecordRefund": _write("payments:write"),
    _BALANCE + "SetCreditLimit": _write("credit:admin"),
    _BALANCE + "ListLedgerEntries": _read("balances:read", "expensive_read"),
    # --- billing
    _BILLING + "GetBillUnit": _read("bills:read"),
    _BILLING + "ListBillUnits": _read("bills:read"),
    _BILLING + "GetBillingSummary": _read("bills:read"),
    _BILLING + "ListBillCycles": _read("bills:read"),
    _BILLING + "ListUnbilledItems": _read("bills:read", "expensive_read"),
    _BILLING + "GetBill": _read("bills:read"),
    _BILLING + "ListBills": _read("bills:read"),
    _BILLING + "BillNow": _write("bills:write"),
    # Builds a whole bill without issuing it.
    _BILLING + "PreviewBill": _read("bills:read", "expensive_read"),
    _BILLING + "CreateCreditNote": _write("bills:write"),
    _BILLING + "GetCreditNote": _read("bills:read"),
    _BILLING + "ListCreditNotes": _read("bills:read"),
    # Renders a PDF.
    _BILLING + "GetBillDocument": _read("bills:read", "expensive_read"),
    _BILLING + "GetBillDelivery": _read("bills:read"),
    _BILLING + "RetryBillDelivery": _write("bills:write"),
    # --- collections (billing)
    _COLLECTIONS + "CreateCollectionsScenario": _write("collections:admin"),
    _COLLECTIONS + "GetCollectionsScenario": _read("collections:read"),
    _COLLECTIONS + "ListCollectionsScenarios": _read("collections:read"),
    _COLLECTIONS + "UpdateCollectionsScenario": _write("collections:admin"),
    _COLLECTIONS + "DeleteCollectionsScenario": _write("collections:admin"),
    _COLLECTIONS + "GetCollectionsCase": _read("collections:read"),
    _COLLECTIONS + "ListCollectionsCases": _read("collections:read"),
    _COLLECTIONS + "PauseCollectionsCase": _write("collections:write"),
    _COLLECTIONS + "ResumeCollectionsCase": _write("collections:write"),
    _COLLECTIONS + "AssignCollectionsCase": _write("collections:write"),
    _COLLECTIONS + "CreatePromiseToPay": _write("collections:write"),
    _COLLECTIONS + "ListCollectionsTasks": _read("collections:read"),
    _COLLECTIONS + "CompleteCollectionsTask": _write("collections:write"),
    _COLLECTIONS + "GetCollectionsNotice": _read("collections:read"),
    _COLLECTIONS + "GetCollectionsNoticeDocument": _read("collections:read"),
    _COLLECTIONS + "RecordCollectionsContactAttempt": _write("collections:write"),
    _COLLECTIONS + "ListCollectionsContactAttempts": _read("collections:read"),
    # Ages every open bill.
    _COLLECTIONS + "GetAging": _read("collections:read", "expensive_read"),
    # --- erp_gateway
    _ERP + "GetSyncState": _read("erp:read"),
    _ERP + "CreateConnection": _write("erp:admin"),
    _ERP + "GetConnection": _read("erp:read"),
    _ERP + "ListConnections": _read("erp:read"),
    _ERP + "UpdateConnection": _write("erp:admin"),
    _ERP + "DeleteConnection": _write("erp:admin"),
    # Rewrites every stored secret under the newest credential key.
    _ERP + "RotateConnectionSecrets": _write("erp:admin"),
    # Reaches out to the ERP with the stored credentials.
    _ERP + "TestConnection": _read("erp:admin", "expensive_read"),
    _ERP + "ListSyncJobs": _read("erp:read"),
    _ERP + "RetrySyncJob": _write("erp:admin"),
    # May post journal entries to the ERP.
    _ERP + "ExportJournal": _write("erp:admin", "expensive_read"),
    # --- admin services every service serves
    _DLQ + "ListDeadLetters": _read("dead_letters:read"),
    _DLQ + "ReplayDeadLetter": _write("dead_letters:admin"),
    _CLOCK + "GetClock": _read("clock:read"),
    _CLOCK + "SetClock": _write("clock:admin"),
    _CLOCK + "AdvanceClock": _write("clock:admin"),
    _AUDIT + "ListAuditRecords": _read("audit:read", "expensive_read"),
    # Reflection describes the API; callers need an identity (decided in docs/security.md).
    "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo": _read("reflection:read"),
    "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo": _read("reflection:read"),
}

#: Every scope some RPC requires (what the development token carries).
ALL_SCOPES: Final[frozenset[str]] = frozenset(rule.scope for rule in RULES.values())

#: The scopes each service's own token carries for the calls it makes to the others.
SERVICE_SCOPES: Final[dict[str, frozenset[str]]] = {
    # Overview (GetBalance, GetBillingSummary), closing an account, buying an offer (GetChargeOffer).
    "customer": frozenset({"balances:read", "bills:read", "catalog:read"}),
    # Collections: late fees and write-offs on balance, suspension and reinstatement on customer.
    "billing": frozenset({"adjustments:write", "accounts:admin"}),
    # Payments imported from an ERP.
    "erp_gateway": frozenset({"payments:write"}),
    "charging": frozenset(),
    "balance": frozenset(),
}


def rule_for(method: str) -> Rule | None:
    return RULES.get(method)


def is_public(method: str) -> bool:
    return method.startswith(PUBLIC_PREFIXES)
