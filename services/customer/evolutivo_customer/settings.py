from evolutivo_runtime.settings import ServiceSettings
from pydantic import Field, SecretStr
from pydantic_settings import SettingsConfigDict


class CustomerSettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="CUSTOMER_", extra="ignore")

    # gRPC addresses of the services customer reads from (overview, closing an account).
    balance_address: str = "127.0.0.1:50053"
    billing_address: str = "127.0.0.1:50054"
    charging_address: str = "127.0.0.1:50052"
    # Deadline of each downstream read; the overview answers without a section that misses it.
    # 2 s: under load a first call (TLS handshake, a cold cache) took more than the 0.5 s it had.
    downstream_timeout_seconds: float = Field(default=2.0, gt=0)
    # Fernet keys for payment-method details at rest, comma-separated, newest first: the first
    # encrypts, every one decrypts (rotation, docs/customer.md). Required: `serve` refuses to start
    # without one.
    payment_details_keys: SecretStr = SecretStr("")
