from evolutivo_runtime.settings import ServiceSettings
from pydantic_settings import SettingsConfigDict


class BalanceSettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="BALANCE_", extra="ignore")
