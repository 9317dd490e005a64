"""AGI Staffers' Redis keys and how long their values live (the seed's pattern and TTLs); the
mechanics are the platform's (``functions/platform/cache.py``). Monitoring data goes stale fast, so
those TTLs are short."""

from __future__ import annotations

from functions.platform.cache import cache_key

SERVICE = "agistaffers"

TTL_STATIC_METADATA = 3600
TTL_METRICS_AGGREGATE = 300
TTL_DASHBOARD = 60
TTL_ALERT_STATE = 30

# Plans change only with a migration (a deploy): static metadata.
PLANS_KEY = cache_key(SERVICE, "plans", "all", 1)
