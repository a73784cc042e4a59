from decimal import Decimal

from evolutivo_runtime.settings import ServiceSettings
from pydantic import Field, field_validator
from pydantic_settings import SettingsConfigDict

from evolutivo_billing.domain.bills import InvalidBill, TaxRates
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
    # BILLING_TAX_RATES: JSON object of tax code -> rate as a decimal string, e.g.
    # {"standard": "0.21", "reduced": "0.10", "exempt": "0"}. "standard" is required: charges
    # without a tax code, or with a code not listed here, are taxed at it.
    tax_rates: dict[str, Decimal] = Field(default_factory=lambda: {"standard": Decimal(0), "exempt": Decimal(0)})
    # BILLING_NUMBER_FORMAT: bill numbers, with {year} (the issue year) and {seq} (gapless per series).
    number_format: str = DEFAULT_FORMAT
    # BILLING_SUPPRESS_ZERO_BILLS: a bill totalling zero is not issued (no number, no BillIssued).
    suppress_zero_bills: bool = False

    @field_validator("tax_rates")
    @classmethod
    def _valid_rates(cls, value: dict[str, Decimal]) -> dict[str, Decimal]:
        try:
            TaxRates(value)
        except InvalidBill as exc:
            raise ValueError(str(exc)) from None
        return value

    @field_validator("number_format")
    @classmethod
    def _valid_format(cls, value: str) -> str:
        try:
            NumberFormat(value)
        except InvalidNumberFormat as exc:
            raise ValueError(str(exc)) from None
        return value
