from evolutivo_balance.adapters.orm import metadata
from evolutivo_balance.settings import BalanceSettings
from evolutivo_runtime.migrations import run_env

run_env(metadata, lambda: BalanceSettings().database_url)
