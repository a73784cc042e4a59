from evolutivo_charging.adapters.orm import metadata
from evolutivo_charging.settings import ChargingSettings
from evolutivo_runtime.migrations import run_env

run_env(metadata, lambda: ChargingSettings().database_url)
