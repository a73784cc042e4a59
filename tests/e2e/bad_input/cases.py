"""Every case of every service's table, and the RPCs exempt from an INVALID_ARGUMENT case."""

from __future__ import annotations

from bad_input import Case, admin, balance, billing, charging, collections, customer, erp_gateway

ALL_CASES: list[Case] = [
    *customer.CASES,
    *charging.CASES,
    *balance.CASES,
    *billing.CASES,
    *collections.CASES,
    *erp_gateway.CASES,
    *admin.CASES,
]

# Methods with no argument a caller can get wrong (they still have cases: an OK call that changes
# nothing).
NO_ARGUMENT_TO_GET_WRONG: dict[str, str] = {
    "/evolutivo.admin.v1.ClockAdminService/GetClock": "GetClockRequest has no fields",
    "/evolutivo.erp_gateway.v1.ErpGatewayService/RotateConnectionSecrets": (
        "RotateConnectionSecretsRequest has no fields"
    ),
}
