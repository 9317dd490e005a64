"""A request budget shared by every function of the platform: at most ``limit`` calls to one third-party
API (one token) in any sliding ``window``, kept in Redis.

Why: Cloudflare allows 1,200 requests per 5 minutes per API token, and going over locks every call
with that token out for 5 minutes, whichever function made it. A per-process counter cannot see the
other Lambdas; a sliding window (a sorted set of call times, trimmed and counted in one Lua script,
atomic in Redis) cannot be passed at a window boundary the way fixed windows can (1,200 at 4:59 and
1,200 more at 5:01).

Failure model:
- Over budget: ``take`` returns how long to wait; the caller defers its work (it never sleeps in a
  Lambda) and nothing was counted.
- A 429 from the API despite the budget (another client on the same token, a smaller real limit):
  ``block`` records its Retry-After, and every caller waits it out.
- Redis down or not configured: ``BudgetUnavailable``; callers treat it as a transient failure and try
  later rather than calling unmetered and risking the lockout.
Times come from ``now`` (injectable: the chaos benchmark runs on a simulated clock).
"""

from __future__ import annotations

import hashlib
import secrets
import time
from collections.abc import Callable
from typing import Any

_TAKE = """
local now, window, limit = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local blocked = tonumber(redis.call('GET', KEYS[2]) or '0')
if blocked > now then return blocked - now end
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - window)
if redis.call('ZCARD', KEYS[1]) < limit then
  redis.call('ZADD', KEYS[1], now, ARGV[4])
  redis.call('PEXPIRE', KEYS[1], window)
  return 0
end
local oldest = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
return math.max(1, tonumber(oldest[2]) + window - now)
"""


class BudgetUnavailable(RuntimeError):
    """The budget cannot be checked (Redis is down or not configured)."""


def _wall_ms() -> float:
    return time.time() * 1000.0


class RequestBudget:
    def __init__(
        self,
        redis: Any,
        name: str,
        *,
        limit: int,
        window_seconds: float,
        now_ms: Callable[[], float] = _wall_ms,
    ) -> None:
        """``name`` identifies the budget (say ``cloudflare:<sha256 of the token>``)."""
        self._redis = redis
        self._key = f"platform:budget:{name}"
        self._blocked_key = f"platform:budget:{name}:blocked"
        self.limit = limit
        self._window_ms = int(window_seconds * 1000)
        self._now_ms = now_ms
        self._script = redis.register_script(_TAKE) if redis is not None else None

    @staticmethod
    def token_name(service: str, token: str) -> str:
        """A budget name per token that does not put the token itself into Redis."""
        return f"{service}:{hashlib.sha256(token.encode()).hexdigest()[:16]}"

    def take(self) -> float:
        """Count one call: 0.0 when it may go now, else the seconds to wait (nothing was counted)."""
        if self._script is None:
            raise BudgetUnavailable("no Redis is configured for the request budget")
        now = int(self._now_ms())
        try:
            wait_ms = self._script(
                keys=[self._key, self._blocked_key],
                args=[now, self._window_ms, self.limit, f"{now}:{secrets.token_hex(6)}"],
            )
        except Exception as exc:  # redis' ConnectionError, TimeoutError...: one reason for the caller
            raise BudgetUnavailable(f"the request budget is unavailable: {type(exc).__name__}") from exc
        return float(wait_ms) / 1000.0

    def block(self, seconds: float) -> None:
        """Nobody calls for ``seconds`` (a 429's Retry-After); the longer of two blocks wins."""
        if self._redis is None:
            return
        until = int(self._now_ms() + seconds * 1000)
        try:
            current = int(self._redis.get(self._blocked_key) or 0)
            if until > current:
                self._redis.set(self._blocked_key, until, px=max(1, int(seconds * 1000)))
        except Exception as exc:
            raise BudgetUnavailable(f"the request budget is unavailable: {type(exc).__name__}") from exc
