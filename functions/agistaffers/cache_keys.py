"""AGI Staffers' Redis keys, in the seed's ``{service}:{type}:{identifier}:{version}`` pattern."""

from __future__ import annotations

from functions.platform.cache import cache_key

SERVICE = "agistaffers"
# Plans change only with a migration (which is a deploy): static metadata, cached for an hour.
PLANS_KEY = cache_key(SERVICE, "plans", "all", 1)
