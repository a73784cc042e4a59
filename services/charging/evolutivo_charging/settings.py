from evolutivo_runtime.settings import ServiceSettings
from pydantic import Field
from pydantic_settings import SettingsConfigDict


class ChargingSettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="CHARGING_", extra="ignore")

    # CHARGING_FEE_CHECK_SECONDS: how often every replica's fee loop looks for purchases whose
    # start the clock has passed (their one-time fees, and in-advance fees of open cycles).
    fee_check_seconds: float = Field(default=5.0, gt=0)
    # CHARGING_FEE_BATCH_SIZE: purchases one pass of the fee loop claims, in one transaction.
    fee_batch_size: int = Field(default=100, ge=1)
    # CHARGING_USAGE_BATCH_SIZE: usage events fetched from the NATS usage subject and rated in
    # one transaction (at most RecordUsageBatch's 1000).
    usage_batch_size: int = Field(default=500, ge=1, le=1000)
