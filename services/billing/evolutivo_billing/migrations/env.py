from evolutivo_billing.adapters.orm import metadata
from evolutivo_billing.settings import BillingSettings
from evolutivo_runtime.migrations import run_env

run_env(metadata, lambda: BillingSettings().database_url)
