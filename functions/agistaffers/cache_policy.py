"""How long AGI Staffers' cached values live, in seconds (the seed's TTLs); the mechanics are the
platform's (``functions/platform/cache.py``). Monitoring data goes stale fast, so these are short."""

from __future__ import annotations

TTL_METRICS_AGGREGATE = 300
TTL_DASHBOARD = 60
TTL_ALERT_STATE = 30
