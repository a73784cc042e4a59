from evolutivo_runtime.settings import ServiceSettings
from pydantic import Field
from pydantic_settings import SettingsConfigDict


class BillingSettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="BILLING_", extra="ignore")

    # BILLING_CYCLE_CHECK_SECONDS: how often every replica's cycle closer looks for due cycles.
    cycle_check_seconds: float = Field(default=5.0, gt=0)
    # BILLING_LATE_USAGE_DELAY_SECONDS: how long after its end a cycle stays open for usage that
    # arrives late (an event time inside the cycle); it closes at end + delay or later.
    late_usage_delay_seconds: float = Field(default=3600.0, ge=0)
    # BILLING_CYCLE_CLOSE_BATCH_SIZE: cycles one closer pass claims and closes in one transaction.
    cycle_close_batch_size: int = Field(default=100, ge=1)
