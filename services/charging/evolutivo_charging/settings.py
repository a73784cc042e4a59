from evolutivo_runtime.settings import ServiceSettings
from pydantic_settings import SettingsConfigDict


class ChargingSettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="CHARGING_", extra="ignore")
