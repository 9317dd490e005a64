"""Idempotency-Key for POSTs: a retried request gets the first response and does nothing twice.

A thin front over the platform's claims (``functions/platform/claims.py``): the claim's scope is
``http:<user>:<route>`` (keys are scoped to user and route, so two users cannot collide or read each
other's results), its key the header's value, its fingerprint a hash of the request. The first request
claims the key before it runs; a concurrent duplicate sees the claim and gets 409 rather than running
twice; a claim whose request died (no response stored within its lease: ``STALE_AFTER`` unless the
edge settings say otherwise, ``IDEMPOTENCY_LEASE_SECONDS``) may be taken over.
Reusing a key with another body is a 422. An answer, error answers included, is stored and replayed;
a crash (an unexpected exception) releases the claim, so that the retry runs again.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable
from datetime import timedelta
from typing import Any, NamedTuple, TypeVar

from functions.platform.claims import ClaimBusy, ClaimMismatch, Claims, Done
from shared.errors import Conflict, ValidationFailed

FAMILY = "http"
STALE_AFTER = timedelta(seconds=60)
# How long a key is remembered: a client retries within minutes, not days.
RETENTION = timedelta(hours=24)
KEY_PATTERN = re.compile(r"^[A-Za-z0-9._:-]{1,200}$")

R = TypeVar("R")


class StoredResponse(NamedTuple):
    status: int
    body: Any


def request_hash(method: str, path: str, body: bytes) -> str:
    return hashlib.sha256(b"\n".join([method.encode(), path.encode(), body])).hexdigest()


def check_key(key: str) -> None:
    """``ValidationFailed`` (422) unless ``key`` is a key the claims table can hold as it is."""
    if not KEY_PATTERN.match(key):
        raise ValidationFailed(
            "Idempotency-Key must be 1-200 characters of A-Z a-z 0-9 . _ : -", code="idempotency_key_invalid"
        )


class IdempotencyKeys:
    def __init__(self, claims: Claims, *, lease: timedelta = STALE_AFTER) -> None:
        self._claims = claims
        self._lease = lease

    def run_once(
        self, user_id: str, route: str, key: str, fingerprint: str, respond: Callable[[], tuple[R, StoredResponse]]
    ) -> R | StoredResponse:
        """``respond()``'s response (and its stored form) on the first call; the stored form after."""
        check_key(key)
        try:
            outcome = self._claims.run_once(
                f"{FAMILY}:{user_id}:{route}",
                key,
                respond,
                lease=self._lease,
                fingerprint=fingerprint,
                record=lambda answered: answered[1]._asdict(),
            )
        except ClaimMismatch as exc:
            raise ValidationFailed(
                "this Idempotency-Key was used with a different request", code="idempotency_key_reused"
            ) from exc
        except ClaimBusy as exc:
            raise Conflict(
                "a request with this Idempotency-Key is still running", code="idempotency_in_progress"
            ) from exc
        if isinstance(outcome, Done):
            return StoredResponse(**outcome.result)
        return outcome.value[0]


def prune_keys(claims: Claims) -> int:
    """Forget the keys older than ``RETENTION``; returns how many. A function of the claims alone: the
    schedule that prunes serves no HTTP and is not given the edge's settings (nor their lease)."""
    return claims.prune(RETENTION, family=FAMILY)
