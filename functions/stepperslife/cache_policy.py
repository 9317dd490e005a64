"""How long SteppersLife's cached values live, in seconds (the seed's TTLs); the mechanics are the
platform's (``functions/platform/cache.py``). Writes bump a family's version, so a TTL bounds only
what nothing invalidates: a lost bump while Redis was down, an AI answer, a recommendation."""

from __future__ import annotations

TTL_API_RESPONSE = 300
TTL_AI_RESPONSE = 3600
TTL_RECOMMENDATIONS = 1800
