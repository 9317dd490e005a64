"""SteppersLife's Lambda functions and the settings groups that hold secrets each one's code reads.

The one declaration of who reads which secret: CDK (cdk/stepperslife.py) gives each function the
ARN variables and the read grants of exactly these groups' secrets (``config.SECRETS_OF_GROUP``),
and the settings then read only the secrets whose ARN is in the function's environment.
tests/deploy/test_secrets.py derives each function's groups from its code path and holds this
declaration, the template and the README to them. Standard library only: CDK imports it.
"""

from __future__ import annotations

from collections.abc import Mapping

# By the name of the function's handler: "app" is the REST API (every route), the others are the
# queue and schedule handlers of routes/ and of the platform's backups blueprint.
SECRET_GROUPS_BY_FUNCTION: Mapping[str, tuple[str, ...]] = {
    # Event writes purge the edge's KV cache (Cloudflare); push subscriptions are checked (VAPID).
    "app": ("database", "edge", "redis", "cloudflare", "push"),
    "image_uploaded": ("database", "redis", "cloudflare"),
    # Enhancement (flowise), invalidation (Cloudflare KV) and notification (web push) steps.
    "process_domain_events": ("database", "redis", "flowise", "cloudflare", "push"),
    "prune_domain_event_records": ("database", "redis", "flowise", "cloudflare", "push"),
    "send_daily_digest": ("database", "redis", "cloudflare", "push"),
    "reconcile_seat_counters": ("database", "redis"),
    "relay_outbox": ("database",),
    "backup_incremental": ("database",),
    "backup_daily": ("database",),
    "backup_weekly": ("database",),
    "backup_drill": ("database",),
    "backup_freshness": ("database",),
}
