from evolutivo_customer.adapters.orm import metadata
from evolutivo_customer.settings import CustomerSettings
from evolutivo_runtime.migrations import run_env

run_env(metadata, lambda: CustomerSettings().database_url)
