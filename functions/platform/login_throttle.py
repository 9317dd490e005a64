"""Per-account login throttling: guesses at one account slow down exponentially, from any address.

The edge limits sign-ins per client address; an attacker with many addresses is not slowed by that.
This limit is per e-mail address, at the origin, in Redis (one hash per address, keyed by its SHA-256):

- the first ``FREE_ATTEMPTS - 1`` failed attempts cost nothing; from then on each failure closes the
  account's door for ``BASE_SECONDS * 2**(n - FREE_ATTEMPTS)`` seconds, at most ``CAP_SECONDS``
  (5 minutes): the owner, who knows the password, waits at most that long however hard the account
  is attacked, while a guesser gets about one try per five minutes;
- an attempt while the door is closed is refused without checking the password (429
  ``too_many_attempts`` with ``Retry-After``), and does not count;
- a successful login forgets the failures; so does ``FORGET_AFTER_SECONDS`` without an attempt.

Not an oracle: unknown e-mail addresses are counted and answered exactly as known ones (the
throttle runs before the account is looked up, and the service checks a dummy hash for them), so a
429 says nothing about whether an account exists.

Race-free: an attempt is counted when it is let through (one Lua script: check, count, close the
door), before the password is checked; the success resets the count. A thousand parallel guesses
cannot all pass a check that has not yet seen their failures.

Failure model: when Redis is unavailable the throttle lets the attempt through and logs it. The
per-address limit at the edge still holds, and refusing every sign-in while Redis is down would lock
out every user, which is worse than a few minutes without per-account backoff.
"""

from __future__ import annotations

import hashlib
import logging
import math
import time
from collections.abc import Callable
from typing import Any

from redis.exceptions import RedisError

from shared.errors import RateLimited

log = logging.getLogger("agistack.login_throttle")

FREE_ATTEMPTS = 5
BASE_SECONDS = 1.0
CAP_SECONDS = 300.0
FORGET_AFTER_SECONDS = 3600

# KEYS[1] the account's hash; ARGV: now, free attempts, base, cap, forget-after. Returns the seconds
# to wait ("0": go ahead, and the attempt is counted). Strings, since Lua numbers come back truncated.
_ATTEMPT = """
local state = redis.call('HMGET', KEYS[1], 'failures', 'until')
local now = tonumber(ARGV[1])
local closed_until = tonumber(state[2]) or 0
if now < closed_until then
  return tostring(closed_until - now)
end
local failures = (tonumber(state[1]) or 0) + 1
local free, base, cap = tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])
if failures >= free then
  closed_until = now + math.min(cap, base * 2 ^ (failures - free))
end
redis.call('HSET', KEYS[1], 'failures', failures, 'until', tostring(closed_until))
redis.call('EXPIRE', KEYS[1], ARGV[5])
return '0'
"""


class LoginThrottle:
    def __init__(
        self,
        redis: Any,
        product: str,
        *,
        free_attempts: int = FREE_ATTEMPTS,
        base_seconds: float = BASE_SECONDS,
        cap_seconds: float = CAP_SECONDS,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._redis = redis
        self._product = product
        self._args = (free_attempts, base_seconds, cap_seconds, FORGET_AFTER_SECONDS)
        self._clock = clock
        self._script = redis.register_script(_ATTEMPT) if redis is not None else None

    def key(self, email: str) -> str:
        digest = hashlib.sha256(email.strip().lower().encode("utf-8")).hexdigest()
        return f"{self._product}:login-attempts:{digest}"

    def attempt(self, email: str) -> None:
        """Count an attempt at ``email``'s account, or raise ``RateLimited`` while its door is closed."""
        if self._script is None:
            return
        try:
            wait = float(self._script(keys=[self.key(email)], args=[repr(self._clock()), *self._args]))
        except RedisError:
            log.warning("login throttle unavailable: attempt let through")
            return
        if wait > 0:
            retry_after = max(1, math.ceil(wait))
            raise RateLimited(
                f"too many sign-in attempts for this account; try again in {retry_after} s",
                code="too_many_attempts",
                details={"retry_after": retry_after},
                retry_after=retry_after,
            )

    def succeeded(self, email: str) -> None:
        """The password was right: the account's failures are forgotten."""
        if self._redis is None:
            return
        try:
            self._redis.delete(self.key(email))
        except RedisError:
            log.warning("login throttle unavailable: failures not reset")
