from datetime import date
from decimal import Decimal
from typing import Self

from evolutivo_runtime.settings import ServiceSettings
from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import SettingsConfigDict

from evolutivo_billing.domain.bills import InvalidBill, TaxRates
from evolutivo_billing.domain.credit_notes import DEFAULT_NUMBER_FORMAT as CREDIT_NOTE_FORMAT
from evolutivo_billing.domain.numbering import DEFAULT_FORMAT, InvalidNumberFormat, NumberFormat


class BillingSettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="BILLING_", extra="ignore")

    # BILLING_CYCLE_CHECK_SECONDS: how often every replica's cycle closer looks for due cycles.
    cycle_check_seconds: float = Field(default=5.0, gt=0)
    # BILLING_LATE_USAGE_DELAY_SECONDS: how long after its end a cycle stays open for usage that
    # arrives late (an event time inside the cycle); it closes at end + delay or later.
    late_usage_delay_seconds: float = Field(default=3600.0, ge=0)
    # BILLING_CYCLE_CLOSE_BATCH_SIZE: cycles one closer pass claims and closes in one transaction.
    cycle_close_batch_size: int = Field(default=100, ge=1)
    # BILLING_CYCLE_CLOSE_PASSES_AT_ONCE: closer passes one replica runs at once; they claim
    # different cycles and take the number series only to number (docs/billing.md "Lock order").
    cycle_close_passes_at_once: int = Field(default=2, ge=1, le=16)
    # BILLING_CYCLE_CLOSE_TOGETHER: a pass closes and bills its cycles set-based (falling back to one
    # by one when that fails); false: always one by one (the reference path; docs/performance.md).
    cycle_close_together: bool = True
    # BILLING_BILL_NOW_LOCK_TIMEOUT_SECONDS: how long a BillNow call waits for the account's open
    # cycle, its bill unit and the number series while other transactions hold them (a closer
    # billing the cycle, a consumer adding its charges) before it is answered ABORTED (retry it
    # with the same request_id) instead of waiting on.
    bill_now_lock_timeout_seconds: float = Field(default=10.0, gt=0)
    # BILLING_TAX_RATES: JSON object of tax code -> rate as a decimal string, e.g.
    # {"standard": "0.21", "reduced": "0.10", "exempt": "0"}. "standard" is required: charges
    # without a tax code, or with a code not listed here, are taxed at it.
    tax_rates: dict[str, Decimal] = Field(default_factory=lambda: {"standard": Decimal(0), "exempt": Decimal(0)})
    # BILLING_NUMBER_FORMAT: bill numbers, with {year} (the issue year) and {seq} (gapless per series).
    number_format: str = DEFAULT_FORMAT
    # BILLING_SUPPRESS_ZERO_BILLS: a bill totalling zero is not issued (no number, no BillIssued).
    suppress_zero_bills: bool = False
    # BILLING_CREDIT_NOTE_NUMBER_FORMAT: credit note numbers, like BILLING_NUMBER_FORMAT, in series
    # of their own (which must not render like the bills').
    credit_note_number_format: str = CREDIT_NOTE_FORMAT

    # Documents (docs/billing.md, "Documents"): the seller printed on every bill. Lists are JSON,
    # e.g. BILLING_SELLER_ADDRESS='["Calle Mayor 1", "28013 Madrid", "ES"]' and
    # BILLING_PAYMENT_INSTRUCTIONS='["IBAN ES91 2100 0418 4502 0005 1332", "BIC CAIXESBBXXX"]'.
    seller_name: str = "Evolutivo"
    seller_address: list[str] = Field(default_factory=list)
    seller_tax_id: str = ""
    seller_email: str = ""
    payment_instructions: list[str] = Field(default_factory=list)
    # Delivery by email (docs/billing.md, "Delivery"). BILLING_SMTP_HOST empty: no SMTP; then
    # BILLING_DELIVERY_OUTBOX_DIR, when set, gets each email as a .eml file instead, else delivery
    # is off (deliveries wait PENDING until one of them is configured).
    smtp_host: str = ""
    smtp_port: int = Field(default=587, ge=1, le=65535)
    smtp_username: str = ""
    smtp_password: SecretStr = SecretStr("")
    smtp_starttls: bool = True
    smtp_timeout_seconds: float = Field(default=30.0, gt=0)
    # The From address (required with BILLING_SMTP_HOST); its domain ends each Message-ID.
    smtp_from: str = ""
    delivery_outbox_dir: str = ""
    # How often every replica's delivery loop looks for due deliveries.
    delivery_check_seconds: float = Field(default=5.0, gt=0)
    # Attempts before a delivery is FAILED; the wait after the n-th failed one is
    # retry_seconds * 2^(n-1), at most retry_max_seconds.
    delivery_max_attempts: int = Field(default=5, ge=1)
    delivery_retry_seconds: float = Field(default=60.0, gt=0)
    delivery_retry_max_seconds: float = Field(default=3600.0, gt=0)

    # Collections (docs/collections.md). BILLING_COLLECTIONS_CHECK_SECONDS: how often every
    # replica's collections processor looks for cases to open, close and advance.
    collections_check_seconds: float = Field(default=60.0, gt=0)
    # Units and cases one processor pass claims.
    collections_batch_size: int = Field(default=100, ge=1)
    # How long a call to balance or customer may take before another pass calls again (same
    # request id); after a call that got no answer, the wait before the next attempt; attempts
    # before the action FAILED.
    collections_action_lease_seconds: float = Field(default=120.0, gt=0)
    collections_retry_seconds: float = Field(default=60.0, gt=0)
    collections_max_attempts: int = Field(default=10, ge=1)
    # The tax code late fees are billed under (it must not be taxed unless balance is told so).
    collections_late_fee_tax_code: str = "exempt"
    # Where collections calls balance and customer (BILLING_BALANCE_ADDRESS, BILLING_CUSTOMER_ADDRESS),
    # and each call's deadline.
    balance_address: str = "127.0.0.1:50053"
    customer_address: str = "127.0.0.1:50051"
    downstream_timeout_seconds: float = Field(default=5.0, gt=0)

    @field_validator("tax_rates")
    @classmethod
    def _valid_rates(cls, value: dict[str, Decimal]) -> dict[str, Decimal]:
        try:
            TaxRates(value)
        except InvalidBill as exc:
            raise ValueError(str(exc)) from None
        return value

    @model_validator(mode="after")
    def _delivery(self) -> Self:
        if self.smtp_host and "@" not in self.smtp_from:
            raise ValueError("BILLING_SMTP_FROM must be an email address when BILLING_SMTP_HOST is set")
        if self.delivery_retry_max_seconds < self.delivery_retry_seconds:
            raise ValueError("BILLING_DELIVERY_RETRY_MAX_SECONDS must be at least BILLING_DELIVERY_RETRY_SECONDS")
        return self

    @model_validator(mode="after")
    def _credit_note_numbers(self) -> Self:
        try:
            credit_notes = NumberFormat(self.credit_note_number_format)
        except InvalidNumberFormat as exc:
            raise ValueError(f"BILLING_CREDIT_NOTE_NUMBER_FORMAT: {exc}") from None
        sample = date(2031, 1, 1)
        if NumberFormat(self.number_format).series(sample) == credit_notes.series(sample):
            raise ValueError("BILLING_CREDIT_NOTE_NUMBER_FORMAT must not number like BILLING_NUMBER_FORMAT")
        return self

    @field_validator("number_format")
    @classmethod
    def _valid_format(cls, value: str) -> str:
        try:
            NumberFormat(value)
        except InvalidNumberFormat as exc:
            raise ValueError(str(exc)) from None
        return value
