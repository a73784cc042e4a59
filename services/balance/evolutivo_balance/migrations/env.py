from evolutivo_balance.adapters.orm import metadata
from evolutivo_runtime.migrations import run_env

run_env(metadata)
