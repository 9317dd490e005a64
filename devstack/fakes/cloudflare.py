"""A fake of Cloudflare's DNS records API (``/client/v4/zones/{zone}/dns_records``), Bearer tokens,
the envelope ``{success, errors: [{code, message}], messages, result, result_info}``, and the rate
limit: more than 1,200 requests in 5 minutes from one token locks that token out for 5 minutes (429
with ``Retry-After``, as Cloudflare does), which ``lockouts`` counts.

Records: ``GET`` lists with ``type`` and ``name`` filters (exact) and pagination, ``POST`` creates
(81057 "Record already exists." for the same type, name and content), ``PATCH`` and ``DELETE`` by id
(81044 "Record does not exist."). Time comes from ``now`` so the chaos benchmark can run on a
simulated clock.
"""

from __future__ import annotations

import re
import secrets
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Any

from devstack.fakes.server import Faults, JsonServer, Reply, Request, late

LIMIT = 1200
WINDOW_SECONDS = 300.0
LOCKOUT_SECONDS = 300.0


def envelope(result: Any = None, *, errors: list[dict[str, Any]] | None = None, info: Any = None) -> dict[str, Any]:
    body: dict[str, Any] = {"success": not errors, "errors": errors or [], "messages": [], "result": result}
    if info is not None:
        body["result_info"] = info
    return body


def failure(status: int, code: int, message: str, headers: dict[str, str] | None = None) -> Reply:
    return status, envelope(errors=[{"code": code, "message": message}]), headers or {}


class FakeCloudflare:
    def __init__(
        self,
        token: str,
        zone_id: str,
        *,
        faults: Faults | None = None,
        now: Callable[[], float] = time.time,
        limit: int = LIMIT,
    ) -> None:
        """``limit``: requests per 5 minutes (Cloudflare's is 1,200; a test scales it down)."""
        self.token = token
        self.zone_id = zone_id
        self.faults = faults or Faults()
        self.now = now
        self.records: dict[str, dict[str, Any]] = {}
        # Names the zone refuses (1004 "DNS Validation Error"), as for a name outside the zone.
        self.refused_names: set[str] = set()
        self.limit = limit
        self.lockouts = 0
        self.requests = 0
        # The most requests counted in any 5-minute window so far (what a budget must keep <= limit).
        self.peak_window_requests = 0
        self._calls: deque[float] = deque()
        self._locked_until = 0.0
        self._lock = threading.Lock()
        self._server = JsonServer(self._handle)
        self.api_base = f"{self._server.url}/client/v4"

    def stop(self) -> None:
        self._server.stop()

    def _rate(self) -> Reply | None:
        with self._lock:
            now = self.now()
            self.requests += 1
            if now < self._locked_until:
                return failure(
                    429, 10000, "Rate limited: locked out", {"Retry-After": str(int(self._locked_until - now) + 1)}
                )
            while self._calls and self._calls[0] <= now - WINDOW_SECONDS:
                self._calls.popleft()
            self._calls.append(now)
            self.peak_window_requests = max(self.peak_window_requests, len(self._calls))
            if len(self._calls) > self.limit:
                self._locked_until = now + LOCKOUT_SECONDS
                self.lockouts += 1
                return failure(429, 10000, "Rate limited: locked out", {"Retry-After": str(int(LOCKOUT_SECONDS))})
        return None

    def _handle(self, request: Request) -> Reply:
        if request.headers.get("authorization") != f"Bearer {self.token}":
            return failure(403, 10000, "Authentication error")
        limited = self._rate()
        if limited is not None:
            return limited
        faults = self.faults
        if faults.roll(faults.too_many):
            return failure(
                429,
                971,
                "Please wait and consider throttling your request speed",
                {"Retry-After": str(faults.retry_after_seconds)},
            )
        if faults.roll(faults.unavailable):
            return failure(503, 10000, "Service unavailable")
        timing_out = faults.roll(faults.timeout)
        reply = self._route(request)
        if timing_out:
            late(faults)
        return reply

    def _route(self, request: Request) -> Reply:
        match = re.fullmatch(r"/client/v4/zones/([^/]+)/dns_records(?:/([0-9a-f]+))?", request.path)
        if not match or match.group(1) != self.zone_id:
            return failure(404, 7003, "Could not route to the requested path")
        record_id = match.group(2)
        with self._lock:
            if record_id is None and request.method == "GET":
                return self._list(request.query)
            if record_id is None and request.method == "POST":
                return self._create(request.body if isinstance(request.body, dict) else {})
            record = self.records.get(record_id or "")
            if record is None:
                return failure(404, 81044, "Record does not exist.")
            if request.method == "PATCH":
                body = request.body if isinstance(request.body, dict) else {}
                record.update(
                    {k: body[k] for k in ("type", "name", "content", "ttl", "proxied", "comment") if k in body}
                )
                record["modified_on"] = self._stamp()
                return 200, envelope(dict(record)), {}
            if request.method == "DELETE":
                del self.records[record["id"]]
                return 200, envelope({"id": record["id"]}), {}
        return failure(405, 10000, "Method not allowed")

    def _list(self, query: dict[str, str]) -> Reply:
        found = [
            dict(r)
            for r in self.records.values()
            if r["type"] == query.get("type", r["type"]) and r["name"] == query.get("name", r["name"])
        ]
        per_page, page = int(query.get("per_page", 100)), int(query.get("page", 1))
        items = found[(page - 1) * per_page : page * per_page]
        info = {
            "page": page,
            "per_page": per_page,
            "count": len(items),
            "total_count": len(found),
            "total_pages": max(1, -(-len(found) // per_page)),
        }
        return 200, envelope(items, info=info), {}

    def _create(self, body: dict[str, Any]) -> Reply:
        kind, name, content = body.get("type"), body.get("name"), body.get("content")
        if kind not in ("A", "AAAA", "CNAME", "TXT") or not isinstance(name, str) or not isinstance(content, str):
            return failure(400, 9000, "DNS name is invalid.")
        if name in self.refused_names:
            return failure(400, 1004, "DNS Validation Error")
        if any(r["type"] == kind and r["name"] == name and r["content"] == content for r in self.records.values()):
            return failure(400, 81057, "Record already exists.")
        record = {
            "id": secrets.token_hex(16),
            "zone_id": self.zone_id,
            "zone_name": "example.com",
            "type": kind,
            "name": name,
            "content": content,
            "proxied": bool(body.get("proxied")),
            "ttl": body.get("ttl", 1),
            "comment": body.get("comment"),
            "created_on": self._stamp(),
            "modified_on": self._stamp(),
        }
        if not self.faults.roll(self.faults.phantom_create):
            self.records[record["id"]] = record
        return 200, envelope(dict(record)), {}

    def _stamp(self) -> str:
        return time.strftime("%Y-%m-%dT%H:%M:%S.000000Z", time.gmtime(self.now()))
