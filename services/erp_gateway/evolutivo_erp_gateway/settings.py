from evolutivo_runtime.settings import ServiceSettings
from pydantic_settings import SettingsConfigDict


class ErpGatewaySettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="ERP_GATEWAY_", extra="ignore")
