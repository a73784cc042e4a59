"""Customer's account events as its consumers (billing, charging, balance, erp_gateway) receive them."""

from __future__ import annotations

import uuid
from datetime import datetime

from evolutivo.customer.v1 import account_pb2
from evolutivo.customer.v1 import events_pb2 as customer_events

from support.jetstream import FakeMsg, message

ACCOUNT_CREATED = "evolutivo.customer.v1.account.created"
ACCOUNT_STATUS_CHANGED = "evolutivo.customer.v1.account.status_changed"


def business_account(
    account_id: uuid.UUID | str | None, billing_profile: account_pb2.BillingProfile
) -> account_pb2.Account:
    """An active business account in EUR and Madrid, as customer publishes it in AccountCreated."""
    return account_pb2.Account(
        account_id=str(account_id or uuid.uuid4()),
        account_number="A-00000001",
        type=account_pb2.ACCOUNT_TYPE_BUSINESS,
        display_name="Acme Distribuciones SL",
        currency_code="EUR",
        time_zone="Europe/Madrid",
        locale="es-ES",
        status=account_pb2.ACCOUNT_STATUS_ACTIVE,
        billing_profile=billing_profile,
    )


def created_message(
    account: account_pb2.Account, occurred_at: datetime, event_id: uuid.UUID | str | None = None
) -> FakeMsg:
    return message(ACCOUNT_CREATED, customer_events.AccountCreated(account=account), occurred_at, event_id)


def status_changed_message(
    account: account_pb2.Account, change: account_pb2.StatusChange, occurred_at: datetime
) -> FakeMsg:
    """From ACTIVE to `change.status`; `account` is the account after the change."""
    event = customer_events.AccountStatusChanged(
        account=account, previous_status=account_pb2.ACCOUNT_STATUS_ACTIVE, change=change
    )
    return message(ACCOUNT_STATUS_CHANGED, event, occurred_at)
