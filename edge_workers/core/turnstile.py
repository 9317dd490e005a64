"""Cloudflare Turnstile at the edge: take the token, ask siteverify, refuse with its error codes.

The token comes from the ``cf-turnstile-response`` header, or from the field of that name in an
urlencoded form or a JSON object body; a body field is removed before the body is forwarded, so the
origin sees the form it expects. Siteverify is called with the secret, the client's address and an
idempotency key (a retry after a network failure reuses it, so the retry cannot be refused as a
duplicate). A missing, failed, duplicate or expired token is 403 with siteverify's error codes;
siteverify being unreachable is 503: the edge fails closed either way.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any, Protocol
from urllib.parse import parse_qsl, urlencode

from edge_workers.core.http import EdgeResponse, Headers, OutboundRequest
from edge_workers.core.ports import OriginClient, OriginUnavailable, RandomSource
from shared import jsonbody
from shared.errors import Forbidden, ServiceUnavailable

TOKEN_FIELD = "cf-turnstile-response"  # noqa: S105 - a field name, not a secret
MAX_TOKEN_LENGTH = 2048  # siteverify's own limit
SITEVERIFY_TIMEOUT_SECONDS = 5.0

# Cloudflare's documented test secret keys and what siteverify answers for them.
TEST_SECRETS: Mapping[str, tuple[bool, tuple[str, ...]]] = {
    "1x0000000000000000000000000000000AA": (True, ()),
    "2x0000000000000000000000000000000AA": (False, ("invalid-input-response",)),
    "3x0000000000000000000000000000000AA": (False, ("timeout-or-duplicate",)),
}


class TurnstileFailed(Forbidden):
    code = "turnstile_failed"

    def __init__(self, error_codes: list[str]) -> None:
        super().__init__("the Turnstile check failed", details={"error-codes": error_codes})


class SiteverifyUnavailable(ServiceUnavailable):
    code = "turnstile_unavailable"


class Siteverify(Protocol):
    async def verify(self, form: Mapping[str, str]) -> Mapping[str, Any]:
        """Siteverify's JSON answer for ``form`` (secret, response, remoteip, idempotency_key)."""
        ...


def take_token(headers: Headers, body: bytes) -> tuple[str | None, bytes]:
    """The token and the body to forward (without the token field when it came in the body)."""
    header = headers.get(TOKEN_FIELD)
    if header:
        return header, body
    media_type = (headers.get("content-type") or "").split(";")[0].strip().lower()
    if media_type == "application/x-www-form-urlencoded":
        try:
            pairs = parse_qsl(body.decode("utf-8"), keep_blank_values=True, errors="strict")
        except (UnicodeDecodeError, ValueError):
            return None, body
        tokens = [value for name, value in pairs if name == TOKEN_FIELD]
        if tokens:
            return tokens[0], urlencode([(name, value) for name, value in pairs if name != TOKEN_FIELD]).encode()
    elif media_type == "application/json":
        try:
            document = jsonbody.loads(body)
        except (UnicodeDecodeError, ValueError):
            return None, body
        if isinstance(document, dict) and isinstance(document.get(TOKEN_FIELD), str):
            token = document.pop(TOKEN_FIELD)
            return token, json.dumps(document, separators=(",", ":")).encode()
    return None, body


def idempotency_key(random: RandomSource) -> str:
    """A random (version 4) UUID, the form siteverify expects; built by hand because importing
    ``uuid`` costs tens of milliseconds of isolate start-up under Pyodide."""
    digits = random.token_hex(16)
    variant = "89ab"[int(digits[16], 16) % 4]
    return f"{digits[:8]}-{digits[8:12]}-4{digits[13:16]}-{variant}{digits[17:20]}-{digits[20:]}"


async def check_token(siteverify: Siteverify, secret: str | None, token: str | None, remote_ip: str, key: str) -> None:
    """Return when siteverify accepts ``token``; raise ``TurnstileFailed`` (403) or a 503 otherwise."""
    if not secret:
        raise ServiceUnavailable("Turnstile is not configured", code="turnstile_unconfigured")
    if not token:
        raise TurnstileFailed(["missing-input-response"])
    if len(token) > MAX_TOKEN_LENGTH:
        raise TurnstileFailed(["invalid-input-response"])
    form = {"secret": secret, "response": token, "idempotency_key": key}
    if remote_ip:
        form["remoteip"] = remote_ip
    answer = await siteverify.verify(form)
    if answer.get("success") is True:
        return
    codes = answer.get("error-codes")
    raise TurnstileFailed([str(code) for code in codes] if isinstance(codes, list) and codes else ["unknown-error"])


class HttpSiteverify:
    """Siteverify over the runtime's outbound fetch, at a configurable URL (tests use a fake server)."""

    def __init__(self, client: OriginClient, url: str, timeout: float = SITEVERIFY_TIMEOUT_SECONDS) -> None:
        self._client = client
        self._url = url
        self._timeout = timeout

    async def verify(self, form: Mapping[str, str]) -> Mapping[str, Any]:
        request = OutboundRequest(
            "POST",
            self._url,
            Headers({"content-type": "application/x-www-form-urlencoded", "accept": "application/json"}),
            urlencode(form).encode(),
            self._timeout,
        )
        response = await self._send(request)
        try:
            answer = json.loads(response.body)
        except (UnicodeDecodeError, ValueError):
            answer = None
        if response.status != 200 or not isinstance(answer, dict):
            raise SiteverifyUnavailable(f"siteverify answered {response.status}")
        return answer

    async def _send(self, request: OutboundRequest) -> EdgeResponse:
        try:
            return await self._client.fetch(request)
        except OriginUnavailable:
            # Retried once with the same idempotency key, so the retry is not a second use of the token.
            pass
        try:
            return await self._client.fetch(request)
        except OriginUnavailable as exc:
            raise SiteverifyUnavailable("siteverify is unreachable") from exc


class OfflineTestKeys:
    """Answers for Cloudflare's test secret keys without the network, as siteverify documents them;
    any other secret goes to ``fallback``. For local development, which has no route to Cloudflare."""

    def __init__(self, fallback: Siteverify) -> None:
        self._fallback = fallback

    async def verify(self, form: Mapping[str, str]) -> Mapping[str, Any]:
        known = TEST_SECRETS.get(form.get("secret", ""))
        if known is None:
            return await self._fallback.verify(form)
        success, codes = known
        answer: dict[str, Any] = {"success": success, "error-codes": list(codes)}
        if success:
            answer.update(challenge_ts=datetime.now(UTC).isoformat(timespec="seconds"), hostname="localhost")
        return answer
