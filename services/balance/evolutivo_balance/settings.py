from pydantic_settings import SettingsConfigDict

from evolutivo_runtime.settings import ServiceSettings


class BalanceSettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="BALANCE_", extra="ignore")
