"""One JSON call to a third-party API, with the failures every provisioning adapter classifies alike.

Timeouts, refused connections, 5xx and 429 are ``Transient`` (a 429's or 503's ``Retry-After`` goes with
it); every other status comes back to the adapter, which knows what its API's 4xx mean. Standard
library only (urllib): two small adapters do not justify a client library in every Lambda package.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections.abc import Mapping
from email.message import Message
from typing import Any, NamedTuple
from urllib.parse import urlsplit

from functions.agistaffers.services.saga import Transient


class Answer(NamedTuple):
    status: int
    headers: Message
    body: Any  # the decoded JSON, or None for an empty body


def retry_after(headers: Message) -> float | None:
    """Seconds from a ``Retry-After`` header (its HTTP-date form is not used by these APIs)."""
    value = headers.get("Retry-After")
    try:
        return max(0.0, float(value)) if value is not None else None
    except ValueError:
        return None


def call(method: str, url: str, *, headers: Mapping[str, str], body: Any = None, timeout: float, what: str) -> Answer:
    if urlsplit(url).scheme not in ("http", "https"):
        raise ValueError(f"{what}: not an http(s) URL")
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, method=method, headers=dict(headers))  # noqa: S310 - checked above
    if data is not None:
        request.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:  # noqa: S310 - as above
            status, answer_headers, raw = response.status, response.headers, response.read()
    except urllib.error.HTTPError as error:
        status, answer_headers, raw = error.code, error.headers, error.read()
    except (TimeoutError, urllib.error.URLError, ConnectionError) as exc:
        raise Transient(f"{what}: {type(exc).__name__}: {exc}") from exc
    try:
        decoded = json.loads(raw) if raw else None
    except ValueError:
        decoded = None
    if status == 429 or status >= 500:
        raise Transient(f"{what}: HTTP {status}", retry_after=retry_after(answer_headers))
    return Answer(status, answer_headers, decoded)
