from pydantic_settings import SettingsConfigDict

from evolutivo_runtime.settings import ServiceSettings


class CustomerSettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="CUSTOMER_", extra="ignore")
