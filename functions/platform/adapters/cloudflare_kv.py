"""The functions' hands on the edge's Workers KV: pruning a push subscription's edge copy (in
PUSH_SUBS_KV) and invalidating the edge's response cache (a new version of a family in API_CACHE_KV).
The keys are the contract of ``shared.kv_keys``, which the edge reads by.

The functions run on AWS, so they reach Workers KV through Cloudflare's REST API:
``{base}/accounts/{account}/storage/kv/namespaces/{namespace}/values/{key}`` with a bearer token that
needs only "Workers KV Storage: Edit". Without that configuration logging no-ops stand in.
"""

from __future__ import annotations

import logging
import secrets
import urllib.error
import urllib.request
from urllib.parse import quote, urlsplit

from shared.kv_keys import VERSION_TOKEN_BYTES, push_subscription_key, version_key

log = logging.getLogger("agistack.kv")


class CloudflareKvNamespace:
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

    def _call(self, method: str, key: str, body: bytes | None = None) -> None:
        request = urllib.request.Request(  # noqa: S310 - the scheme is checked in __init__
            self._values + quote(key, safe=""),
            data=body,
            headers={"Authorization": f"Bearer {self._token}", "Content-Type": "text/plain"},
            method=method,
        )
        with urllib.request.urlopen(request, timeout=self._timeout):  # noqa: S310 - as above
            return

    def delete(self, key: str) -> None:
        try:
            self._call("DELETE", key)
        except urllib.error.HTTPError as exc:
            if exc.code != 404:  # already gone is what we wanted
                raise

    def put(self, key: str, value: str) -> None:
        self._call("PUT", key, value.encode("utf-8"))


class CloudflareKvPruner:
    """Deletes the edge copy of a push subscription that its push service reported gone."""

    def __init__(self, namespace: CloudflareKvNamespace) -> None:
        self._namespace = namespace

    def delete(self, endpoint_hash: str) -> None:
        self._namespace.delete(push_subscription_key(endpoint_hash))


class CloudflareEdgeCache:
    """Makes every cached edge read of a resource family miss, as a write through the gateway does."""

    def __init__(self, namespace: CloudflareKvNamespace) -> None:
        self._namespace = namespace

    def invalidate(self, family: str) -> None:
        self._namespace.put(version_key(family), secrets.token_hex(VERSION_TOKEN_BYTES))


class LoggingEdgeCache:
    """Stands in when API_CACHE_KV_ID / CLOUDFLARE_* are not configured: the edge copy then expires by
    its s-maxage (300 s) instead."""

    def invalidate(self, family: str) -> None:
        log.info("API_CACHE_KV is not configured: edge cache of %s expires by its TTL", family)


class LoggingKvPruner:
    """Stands in when PUSH_SUBS_KV_ID / CLOUDFLARE_* are not configured (local development)."""

    def delete(self, endpoint_hash: str) -> None:
        log.info("PUSH_SUBS_KV is not configured: push:%s stays in the edge copy", endpoint_hash)
