"""Cloudflare's DNS records API, metered by the platform's request budget.

Endpoints: ``GET /zones/{zone}/dns_records?type=&name=`` (an exact name), ``POST`` to create, ``PATCH
/dns_records/{id}``, ``DELETE /dns_records/{id}``. Every answer is the envelope ``{success, errors:
[{code, message}], messages, result, result_info}``.

Idempotent by (type, name): a record is looked up first, then created or patched; the "record already
exists" answers (81057, and 81058 "an identical record") count as success, after which the lookup
finds it. Each record's comment is its owner mark: a record is removed only when it is this site's,
so a domain deleted and added again (by anyone) never loses its new records to the old teardown.

Every call takes one request from the budget first (over budget: ``Wait``, nothing is sent), and a
429 blocks the whole budget for its Retry-After (and is a ``Wait`` too), so the platform stays under Cloudflare's 1,200
requests per 5 minutes per token and never trips the 5-minute lockout.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlencode

from functions.agistaffers.adapters.http_json import Answer, call
from functions.agistaffers.services.saga import Permanent, Transient, Wait
from functions.platform.budget import BudgetUnavailable, RequestBudget

ALREADY_EXISTS = frozenset({81057, 81058})
NOT_FOUND = 81044
# Default Retry-After for a 429 that carries none: Cloudflare's lockout lasts 5 minutes.
LOCKOUT_SECONDS = 300.0


def _codes(answer: Answer) -> set[int]:
    errors = (answer.body or {}).get("errors") if isinstance(answer.body, dict) else None
    return {int(error.get("code", 0)) for error in errors or [] if isinstance(error, dict)}


def _messages(answer: Answer) -> str:
    errors = (answer.body or {}).get("errors") if isinstance(answer.body, dict) else None
    return "; ".join(f"{e.get('code')}: {e.get('message')}" for e in errors or [] if isinstance(e, dict))


class CloudflareDns:
    def __init__(
        self,
        *,
        api_base: str,
        zone_id: str | None,
        api_token: str | None,
        budget: RequestBudget,
        timeout_seconds: float = 10.0,
    ) -> None:
        self._base = api_base.rstrip("/")
        self._zone = zone_id
        self._token = api_token
        self._budget = budget
        self._timeout = timeout_seconds

    def _call(self, method: str, path: str, body: Any = None) -> Answer:
        if not (self._zone and self._token):
            raise Transient("Cloudflare DNS is not configured (CLOUDFLARE_ZONE_ID, CLOUDFLARE_API_TOKEN)")
        try:
            wait = self._budget.take()
        except BudgetUnavailable as exc:
            raise Transient(str(exc)) from exc
        if wait > 0:
            raise Wait(wait, "the Cloudflare request budget is spent for now")
        try:
            answer = call(
                method,
                f"{self._base}/zones/{self._zone}/dns_records{path}",
                headers={"Authorization": f"Bearer {self._token}", "Accept": "application/json"},
                body=body,
                timeout=self._timeout,
                what=f"Cloudflare {method} dns_records",
            )
        except Transient as exc:
            if "HTTP 429" not in str(exc):
                raise
            # Rate limited despite the budget (another client on the token): everyone waits it out, and
            # waiting is not this step's failure (it costs no attempt).
            seconds = exc.retry_after or LOCKOUT_SECONDS
            self._budget.block(seconds)
            raise Wait(seconds, "Cloudflare asked us to slow down") from exc
        if answer.status in (401, 403):
            raise Transient(f"Cloudflare refused the API token: {_messages(answer)}")
        return answer

    def _find(self, record_type: str, name: str) -> dict[str, Any] | None:
        answer = self._call("GET", "?" + urlencode({"type": record_type, "name": name, "per_page": 5}))
        body = answer.body if isinstance(answer.body, dict) else {}
        if answer.status != 200 or not body.get("success"):
            raise Transient(f"Cloudflare could not list records: HTTP {answer.status} {_messages(answer)}")
        results = [r for r in body.get("result") or [] if r.get("type") == record_type and r.get("name") == name]
        return results[0] if results else None

    def ensure_record(self, record_type: str, name: str, content: str, owner: str) -> str:
        wanted = {"type": record_type, "name": name, "content": content, "ttl": 1, "proxied": False, "comment": owner}
        for _ in range(2):
            existing = self._find(record_type, name)
            if existing is not None:
                if existing.get("content") == content and existing.get("comment") == owner:
                    return str(existing["id"])
                answer = self._call("PATCH", f"/{existing['id']}", wanted)
                if answer.status == 404 or NOT_FOUND in _codes(answer):
                    continue  # removed meanwhile: create it
                self._check(answer, name)
                return str(existing["id"])
            answer = self._call("POST", "", wanted)
            if ALREADY_EXISTS & _codes(answer):
                continue  # made by an attempt whose answer was lost: the lookup finds it
            self._check(answer, name)
            return str(answer.body["result"]["id"])
        raise Transient(f"the {record_type} record {name} exists but could not be found")

    def remove_record(self, record_type: str, name: str, owner: str) -> None:
        existing = self._find(record_type, name)
        if existing is None or existing.get("comment") != owner:
            return
        answer = self._call("DELETE", f"/{existing['id']}")
        if answer.status == 404 or NOT_FOUND in _codes(answer):
            return
        if answer.status != 200:
            raise Transient(f"Cloudflare could not delete {name}: HTTP {answer.status} {_messages(answer)}")

    @staticmethod
    def _check(answer: Answer, name: str) -> None:
        body = answer.body if isinstance(answer.body, dict) else {}
        if answer.status == 200 and body.get("success") and isinstance(body.get("result"), dict):
            return
        if 400 <= answer.status < 500:
            raise Permanent(f"the DNS provider refused {name}: {_messages(answer) or answer.status}")
        raise Transient(f"Cloudflare answered HTTP {answer.status} for {name}")
