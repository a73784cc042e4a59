from evolutivo_runtime.settings import ServiceSettings
from pydantic import Field
from pydantic_settings import SettingsConfigDict


class BalanceSettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="BALANCE_", extra="ignore")

    # BALANCE_CREDIT_EXPIRY_CHECK_SECONDS: how often every replica's expiry loop looks for temporary
    # credit limits that have expired (reads apply an expiry at once; its events follow on the pass).
    credit_expiry_check_seconds: float = Field(default=5.0, gt=0)
    # BALANCE_CREDIT_EXPIRY_BATCH_SIZE: groups one pass claims and does in one transaction.
    credit_expiry_batch_size: int = Field(default=100, ge=1)
    # BALANCE_READ_POOL_SIZE: connections of each replica's pool for GetBalance's current-balance
    # read (adapters/repository.py CurrentBalances), besides the units of work's pool.
    read_pool_size: int = Field(default=4, ge=1)
