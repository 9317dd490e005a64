"""Web push delivery with pywebpush: aes128gcm payload encryption (RFC 8291) and VAPID (RFC 8292).

Sends go through the platform's outbound guard (``functions/platform/outbound.py``): the endpoint is
checked again at every send, the connection goes to the address that was checked, and a redirect is
the answer, never followed (push services do not redirect).

``VAPID_PRIVATE_KEY`` is the application server's P-256 private key, as base64url of the raw 32-byte
scalar (what ``agistack vapid generate`` prints) or as PEM. pywebpush (which imports aiohttp) is
imported on first send, so a Lambda that sends nothing does not pay for it at cold start.
"""

from __future__ import annotations

import base64
import threading
import time
from urllib.parse import urlsplit

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from functions.platform.outbound import GuardedHttpClient, Response
from functions.platform.push import SendResult, Subscription

# A VAPID token may live 24 h; one signed per push-service origin is reused for an hour of it.
_TOKEN_LIFETIME_SECONDS = 12 * 3600
_TOKEN_REUSE_SECONDS = 3600


def _b64url(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def generate_vapid_keys() -> tuple[str, str]:
    """A new (private, public) pair, both base64url: the raw scalar and the uncompressed point."""
    key = ec.generate_private_key(ec.SECP256R1())
    private_raw = key.private_numbers().private_value.to_bytes(32, "big")
    return _b64url(private_raw), public_key_of(key)


def public_key_of(key: ec.EllipticCurvePrivateKey) -> str:
    point = key.public_key().public_bytes(serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint)
    return _b64url(point)


def load_private_key(text: str) -> ec.EllipticCurvePrivateKey:
    """The key from base64url raw (32 bytes) or PEM; anything else is a configuration error."""
    text = text.strip()
    if text.startswith("-----BEGIN"):
        key = serialization.load_pem_private_key(text.encode("ascii"), password=None)
        if not isinstance(key, ec.EllipticCurvePrivateKey) or not isinstance(key.curve, ec.SECP256R1):
            raise ValueError("VAPID_PRIVATE_KEY must be a P-256 key")
        return key
    raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    if len(raw) != 32:
        raise ValueError("VAPID_PRIVATE_KEY must be 32 bytes (base64url) or PEM")
    return ec.derive_private_key(int.from_bytes(raw, "big"), ec.SECP256R1())


class _GuardedSession:
    """The one method pywebpush calls on a ``requests_session``, sent through the guard."""

    def __init__(self, client: GuardedHttpClient) -> None:
        self._client = client

    def post(self, url: str, *, data: bytes, headers: dict[str, str], timeout: float) -> Response:
        return self._client.request("POST", url, headers=headers, body=data, timeout=timeout, max_redirects=0)


class WebPushSender:
    def __init__(
        self, *, private_key: str, subject: str, client: GuardedHttpClient, timeout_seconds: float = 10.0
    ) -> None:
        from py_vapid import Vapid

        if not subject.startswith(("mailto:", "https://")):
            raise ValueError("VAPID_SUBJECT must be a mailto: or https: URL")
        self._key = load_private_key(private_key)
        self._vapid = Vapid(self._key)
        self._subject = subject
        self._timeout = timeout_seconds
        self._tokens: dict[str, tuple[float, dict[str, str]]] = {}
        self._lock = threading.Lock()
        self._session = _GuardedSession(client)

    @property
    def public_key(self) -> str:
        return public_key_of(self._key)

    def _authorization(self, endpoint: str) -> dict[str, str]:
        parts = urlsplit(endpoint)
        audience = f"{parts.scheme}://{parts.netloc}"
        now = time.time()
        with self._lock:
            cached = self._tokens.get(audience)
            if cached is None or cached[0] < now:
                claims = {"sub": self._subject, "aud": audience, "exp": int(now) + _TOKEN_LIFETIME_SECONDS}
                cached = (now + _TOKEN_REUSE_SECONDS, dict(self._vapid.sign(claims)))
                self._tokens[audience] = cached
            return dict(cached[1])

    def send(self, subscription: Subscription, payload: bytes, *, ttl: int, urgency: str, topic: str) -> SendResult:
        from pywebpush import WebPusher

        headers = {**self._authorization(subscription.endpoint), "Urgency": urgency, "Topic": topic}
        info = {"endpoint": subscription.endpoint, "keys": {"p256dh": subscription.p256dh, "auth": subscription.auth}}
        # pywebpush only calls ``post`` on its session: the guard's is enough.
        pusher = WebPusher(info, requests_session=self._session)
        response = pusher.send(payload, headers, ttl=ttl, content_encoding="aes128gcm", timeout=self._timeout)
        return SendResult(status=int(response.status_code), retry_after=response.headers.get("Retry-After"))
