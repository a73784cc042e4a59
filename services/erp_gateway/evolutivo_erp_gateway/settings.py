from evolutivo_runtime.settings import ServiceSettings
from pydantic import Field, SecretStr
from pydantic_settings import SettingsConfigDict


class ErpGatewaySettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="ERP_GATEWAY_", extra="ignore")

    # Fernet keys for connection secrets, comma-separated, newest first (older ones only decrypt).
    # Empty: a connection cannot be given a secret (CreateConnection with one is refused).
    credential_keys: SecretStr = SecretStr("")
    # Balance, where payments imported from an ERP are recorded.
    balance_address: str = "127.0.0.1:50053"
    balance_timeout_seconds: float = Field(default=5.0, gt=0)
    # The sync job loop: how often it looks for due jobs when idle, and how many it claims at once.
    sync_poll_seconds: float = Field(default=1.0, gt=0)
    sync_batch_size: int = Field(default=20, ge=1)
    sync_max_attempts: int = Field(default=16, ge=1)
    sync_backoff_base_seconds: float = Field(default=2.0, gt=0)
    sync_backoff_cap_seconds: float = Field(default=1800.0, gt=0)
    # Circuit breaker: connection failures in a row before its jobs pause, and for how long.
    breaker_threshold: int = Field(default=5, ge=1)
    breaker_pause_seconds: float = Field(default=60.0, gt=0)
    # How long one ERP request may take.
    erp_timeout_seconds: float = Field(default=15.0, gt=0)
    # The poll of payments recorded in the ERPs.
    import_poll_seconds: float = Field(default=5.0, gt=0)
