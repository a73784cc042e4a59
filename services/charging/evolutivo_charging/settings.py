from evolutivo_runtime.settings import ServiceSettings
from pydantic import Field
from pydantic_settings import SettingsConfigDict


class ChargingSettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="CHARGING_", extra="ignore")

    # CHARGING_FEE_CHECK_SECONDS: how often every replica's fee loop looks for purchases whose
    # start the clock has passed (their one-time fees, and in-advance fees of open cycles).
    fee_check_seconds: float = Field(default=5.0, gt=0)
    # CHARGING_FEE_BATCH_SIZE: purchases one pass of the fee loop claims, in one transaction.
    fee_batch_size: int = Field(default=100, ge=1)
    # CHARGING_USAGE_BATCH_SIZE: usage events fetched from the NATS usage subject and rated in
    # one transaction (at most RecordUsageBatch's 1000).
    usage_batch_size: int = Field(default=500, ge=1, le=1000)
    # CHARGING_USAGE_RETENTION_DAYS: the idempotency horizon. A RATED usage event is kept (its
    # event_id deduplicated, its usage re-ratable) this long after it was received, then deleted;
    # at least one billing cycle (docs/charging.md). Its charges are kept for good.
    usage_retention_days: int = Field(default=100, ge=35)
    # CHARGING_USAGE_EXPIRY_CHECK_SECONDS / _BATCH_SIZE: how often every replica deletes expired
    # usage events, and how many per transaction.
    usage_expiry_check_seconds: float = Field(default=3600.0, gt=0)
    usage_expiry_batch_size: int = Field(default=1000, ge=1, le=10000)
    # CHARGING_CACHE_ACCOUNTS: accounts each replica keeps in its rating cache (least recently
    # rated dropped first); 0 turns the cache off.
    cache_accounts: int = Field(default=100_000, ge=0)
    # CHARGING_USAGE_GROUP_MAX_EVENTS: concurrent RecordUsage calls of a replica are rated together
    # in one transaction, up to this many events per group (service_layer/usage_groups.py);
    # 0 or 1: every call in its own transaction. CHARGING_USAGE_GROUPS_AT_ONCE: groups rated at once.
    usage_group_max_events: int = Field(default=500, ge=0, le=1000)
    usage_groups_at_once: int = Field(default=1, ge=1)
