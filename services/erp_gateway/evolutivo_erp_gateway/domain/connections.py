"""Connections to ERPs and what the gateway sends them. Plain Python: no protobuf, no SQL."""

from __future__ import annotations

import enum
import uuid
from dataclasses import dataclass, field, replace
from datetime import datetime
from urllib.parse import urlsplit

from evolutivo_runtime.errors import InvalidArgument

from evolutivo_erp_gateway.domain.model import EntityType


class ConnectionType(enum.Enum):
    TRYTON = "tryton"
    ODOO = "odoo"
    WEBHOOK = "webhook"
    GL_FILE_EXPORT = "gl_file_export"


# The general-ledger roles a mapping names accounts for; revenue may also be kept per charge offer
# as "revenue:<charge_offer_code>".
GL_ROLES = ("receivable", "revenue", "tax", "cash", "write_off")
JOURNAL_ROLES = ("revenue", "cash", "general", "write_off")
MAX_NAME = 200
# Where a referral can go: Tryton and Odoo keep it on the party (a category and a note), a webhook
# hands it to whoever listens.
REFERRAL_TYPES = (ConnectionType.TRYTON, ConnectionType.ODOO, ConnectionType.WEBHOOK)
# The ERPs whose own payments are imported, each with the prefix of the reference balance records
# an imported payment under: "<prefix>:<the ERP's payment id>".
IMPORTED_PAYMENT_PREFIX = {ConnectionType.TRYTON: "tryton", ConnectionType.ODOO: "odoo"}


@dataclass(frozen=True)
class Mapping:
    """The ERP's ids or codes for the suite's records (see connection.proto)."""

    customers: dict[str, str] = field(default_factory=dict)
    products: dict[str, str] = field(default_factory=dict)
    taxes: dict[str, str] = field(default_factory=dict)
    journals: dict[str, str] = field(default_factory=dict)
    accounts: dict[str, str] = field(default_factory=dict)

    def to_json(self) -> dict[str, dict[str, str]]:
        return {
            "customers": dict(self.customers),
            "products": dict(self.products),
            "taxes": dict(self.taxes),
            "journals": dict(self.journals),
            "accounts": dict(self.accounts),
        }

    @classmethod
    def from_json(cls, data: dict[str, dict[str, str]]) -> Mapping:
        return cls(
            **{key: dict(data.get(key, {})) for key in ("customers", "products", "taxes", "journals", "accounts")}
        )

    def revenue_account(self, charge_offer_code: str) -> str:
        """The account of an offer's revenue: its own when mapped, the general revenue account else."""
        return self.accounts.get(f"revenue:{charge_offer_code}") or self.accounts.get("revenue", "")

    def validate(self) -> None:
        for name, entries in self.to_json().items():
            for key, value in entries.items():
                if not key or not value:
                    raise InvalidArgument(f"connection.mapping.{name}", "keys and values must not be empty")
        for role in self.journals:
            if role not in JOURNAL_ROLES:
                raise InvalidArgument(
                    "connection.mapping.journals", f"{role!r} is not one of {', '.join(JOURNAL_ROLES)}"
                )
        for role in self.accounts:
            if role not in GL_ROLES and not role.startswith("revenue:"):
                raise InvalidArgument(
                    "connection.mapping.accounts", f"{role!r} is not one of {', '.join(GL_ROLES)} or revenue:<offer>"
                )


@dataclass(frozen=True)
class Connection:
    connection_id: uuid.UUID
    display_name: str
    type: ConnectionType
    endpoint_url: str
    database: str
    username: str
    mapping: Mapping
    enabled: bool
    import_payments: bool
    has_credentials: bool
    create_time: datetime
    update_time: datetime
    # Grows with every update; the etag is made from it.
    version: int = 1
    # Set while the circuit breaker holds the connection's jobs (output only).
    paused_until: datetime | None = None
    # Collections cases referred to an agency are handed to it.
    collections_referrals: bool = False

    @property
    def etag(self) -> str:
        return f"v{self.version}"

    def validate(self) -> None:
        """The rules of a connection's configuration, checked before any write."""
        if not self.display_name.strip() or len(self.display_name) > MAX_NAME:
            raise InvalidArgument("connection.display_name", f"must be 1 to {MAX_NAME} characters")
        if self.type in (ConnectionType.TRYTON, ConnectionType.ODOO, ConnectionType.WEBHOOK):
            url = urlsplit(self.endpoint_url)
            if url.scheme not in ("http", "https") or not url.netloc:
                raise InvalidArgument("connection.endpoint_url", "must be an http(s) URL")
        if self.type is ConnectionType.TRYTON and not urlsplit(self.endpoint_url).path.strip("/"):
            raise InvalidArgument(
                "connection.endpoint_url", "must end with the Tryton database, e.g. http://host:8000/db/"
            )
        if self.type is ConnectionType.ODOO and not self.database:
            raise InvalidArgument("connection.database", "is required for Odoo")
        if self.type in (ConnectionType.TRYTON, ConnectionType.ODOO) and not self.username:
            raise InvalidArgument("connection.username", "is required for an ERP login")
        if self.import_payments and self.type not in IMPORTED_PAYMENT_PREFIX:
            raise InvalidArgument("connection.import_payments", "only Tryton and Odoo connections import payments")
        if self.collections_referrals and self.type not in REFERRAL_TYPES:
            raise InvalidArgument(
                "connection.collections_referrals", "only Tryton, Odoo and webhook connections take referrals"
            )
        self.mapping.validate()

    def takes(self, entity_type: EntityType) -> bool:
        """Whether records of this kind are sent to it (a file export receives nothing: it is read
        by ExportJournal; referrals go only to the connections marked for them)."""
        if entity_type is EntityType.REFERRAL:
            return self.collections_referrals and self.type in REFERRAL_TYPES
        return self.type in (ConnectionType.TRYTON, ConnectionType.ODOO, ConnectionType.WEBHOOK)

    def updated(self, now: datetime, **changes: object) -> Connection:
        return replace(self, update_time=now, version=self.version + 1, **changes)  # type: ignore[arg-type]
