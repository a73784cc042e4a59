from evolutivo_erp_gateway.adapters.orm import metadata
from evolutivo_erp_gateway.settings import ErpGatewaySettings
from evolutivo_runtime.migrations import run_env

run_env(metadata, lambda: ErpGatewaySettings().database_url)
