"""Pruning the edge's copy of a push subscription (``push:{sha256(endpoint)}`` in PUSH_SUBS_KV).

The functions run on AWS, so they reach Workers KV through Cloudflare's REST API:
``DELETE {base}/accounts/{account}/storage/kv/namespaces/{namespace}/values/{key}`` with a bearer token
that needs only "Workers KV Storage: Edit". Without that configuration a logging no-op stands in.
"""

from __future__ import annotations

import logging
import urllib.error
import urllib.request
from urllib.parse import quote, urlsplit

log = logging.getLogger("agistack.kv")


class CloudflareKvPruner:
    def __init__(
        self, *, api_base: str, account_id: str, namespace_id: str, api_token: str, timeout_seconds: float = 5.0
    ) -> None:
        if urlsplit(api_base).scheme not in ("http", "https"):
            raise ValueError("CLOUDFLARE_API_BASE must be an http(s) URL")
        self._values = (
            f"{api_base.rstrip('/')}/accounts/{quote(account_id, safe='')}"
            f"/storage/kv/namespaces/{quote(namespace_id, safe='')}/values/"
        )
        self._token = api_token
        self._timeout = timeout_seconds

    def delete(self, endpoint_hash: str) -> None:
        request = urllib.request.Request(  # noqa: S310 - the scheme is checked in __init__
            self._values + quote(f"push:{endpoint_hash}", safe=""),
            headers={"Authorization": f"Bearer {self._token}"},
            method="DELETE",
        )
        try:
            with urllib.request.urlopen(request, timeout=self._timeout):  # noqa: S310 - as above
                return
        except urllib.error.HTTPError as exc:
            if exc.code != 404:  # already gone is what we wanted
                raise


class LoggingKvPruner:
    """Stands in when PUSH_SUBS_KV_ID / CLOUDFLARE_* are not configured (local development)."""

    def delete(self, endpoint_hash: str) -> None:
        log.info("PUSH_SUBS_KV is not configured: push:%s stays in the edge copy", endpoint_hash)
