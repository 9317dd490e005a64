"""Customer webhooks on the wire: a JSON body signed Stripe-style, posted through the platform's
outbound guard (``functions/platform/outbound.py``).

The signature is ``X-AGI-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256 of "{t}.{body}">`` with the
endpoint's secret; ``X-AGI-Timestamp`` repeats ``t``. Signing the timestamp with the body lets a
receiver refuse a replayed request (an old ``t``) as well as a forged one; ``verify`` is what a
receiver runs (our tests run it too). The guard checks the URL again at every send (its name may
resolve elsewhere now), connects to the address it checked and never follows a redirect: a webhook
that redirects is answered, not followed.
"""

from __future__ import annotations

import hashlib
import hmac
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # the client is built (and urllib3 imported) by the composition when first needed
    from functions.platform.outbound import GuardedHttpClient, Response

SIGNATURE_HEADER = "X-AGI-Signature"
TIMESTAMP_HEADER = "X-AGI-Timestamp"
DELIVERY_HEADER = "X-AGI-Delivery"


def sign(secret: str, timestamp: int, body: bytes) -> str:
    digest = hmac.new(secret.encode("utf-8"), f"{timestamp}.".encode("ascii") + body, hashlib.sha256).hexdigest()
    return f"t={timestamp},v1={digest}"


def verify(secret: str, header: str, body: bytes, *, now: float, tolerance_seconds: int = 300) -> bool:
    """A receiver's check: a well-formed header, a timestamp within ``tolerance_seconds`` of ``now``
    and a matching v1 signature (compared in constant time)."""
    fields = dict(part.split("=", 1) for part in header.split(",") if "=" in part)
    timestamp = fields.get("t", "")
    if not timestamp.isdigit() or abs(now - int(timestamp)) > tolerance_seconds:
        return False
    return hmac.compare_digest(sign(secret, int(timestamp), body), f"t={timestamp},v1={fields.get('v1', '')}")


class WebhookPoster:
    def __init__(
        self, client: GuardedHttpClient, *, timeout_seconds: float = 5.0, clock: Callable[[], float] = time.time
    ) -> None:
        self._client = client
        self._timeout = timeout_seconds
        self._clock = clock

    def check(self, url: str) -> None:
        """Raise ``shared.net.UnsafeUrl`` for a URL the guard would refuse."""
        self._client.check(url)

    def post(self, url: str, secret: str, body: bytes, *, delivery_id: str) -> Response:
        """One signed POST; raises ``UnsafeUrl`` (refused) or ``OutboundUnavailable`` (no answer)."""
        timestamp = int(self._clock())
        headers = {
            "Content-Type": "application/json",
            "User-Agent": "AGI-Staffers-Webhooks/1",
            SIGNATURE_HEADER: sign(secret, timestamp, body),
            TIMESTAMP_HEADER: str(timestamp),
            DELIVERY_HEADER: delivery_id,
        }
        return self._client.request("POST", url, headers=headers, body=body, timeout=self._timeout)
