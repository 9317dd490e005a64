"""Running one case of the table on one runtime, and checking what came out.

A case is a fresh edge (new KV, new limiters, new isolate) plus fresh fakes; its steps run in order
with a cookie jar, like a browser. Each step's expectations are checked against the reply, the log
line(s) the edge wrote for it, and what reached the fake origin and siteverify while it ran; the
case's KV expectations are checked against every namespace afterwards.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import itertools
import json
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

from tests.edge.conformance.fakes import FakeServices
from tests.edge.conformance.runtimes import EdgeRuntime, Reply

DEFAULT_CLIENT = "203.0.113.10"
_REQUEST_IDS = itertools.count(1)
_SESSION_COOKIE = re.compile(r"^(__Host-session=[^;]*);")


@dataclass(frozen=True)
class Re:
    """A value that must match ``pattern`` entirely."""

    pattern: str


@dataclass(frozen=True)
class Now:
    """Seconds since the epoch when the step runs, plus ``offset``."""

    offset: float = 0


class _Absent:
    def __repr__(self) -> str:
        return "ABSENT"


ABSENT = _Absent()


def resolve(value: Any, now: float) -> Any:
    if isinstance(value, Now):
        return int(now + value.offset)
    if isinstance(value, dict):
        return {key: resolve(item, now) for key, item in value.items()}
    if isinstance(value, list):
        return [resolve(item, now) for item in value]
    return value


def _b64url(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def mint_jwt(spec: Mapping[str, Any], now: float) -> str:
    """A JWT as an independent issuer would make it (``signature`` overrides the HMAC)."""
    header = _b64url(json.dumps(spec.get("header", {"alg": "HS256", "typ": "JWT"})).encode())
    claims = _b64url(json.dumps(resolve(dict(spec["claims"]), now)).encode())
    signing_input = f"{header}.{claims}".encode()
    if "signature" in spec:
        signature = spec["signature"]
    else:
        digest = getattr(hashlib, spec.get("digest", "sha256"))
        signature = _b64url(hmac.new(spec["secret"].encode(), signing_input, digest).digest())
    return f"{header}.{claims}.{signature}"


def matches(expected: Any, actual: Any, where: str = "") -> list[str]:
    """Differences between an expectation (subset for dicts) and a value."""
    if isinstance(expected, Re):
        ok = isinstance(actual, str) and re.fullmatch(expected.pattern, actual) is not None
        return [] if ok else [f"{where}: {actual!r} does not match /{expected.pattern}/"]
    if isinstance(expected, dict):
        if not isinstance(actual, dict):
            return [f"{where}: expected an object, got {actual!r}"]
        problems = []
        for key, value in expected.items():
            if value is ABSENT:
                if key in actual:
                    problems.append(f"{where}.{key}: should be absent, is {actual[key]!r}")
            elif key not in actual:
                problems.append(f"{where}.{key}: missing")
            else:
                problems.extend(matches(value, actual[key], f"{where}.{key}"))
        return problems
    if isinstance(expected, list):
        if not isinstance(actual, list) or len(actual) != len(expected):
            return [f"{where}: expected {expected!r}, got {actual!r}"]
        return [
            problem
            for index, item in enumerate(expected)
            for problem in matches(item, actual[index], f"{where}[{index}]")
        ]
    if callable(expected):
        return [] if expected(actual) else [f"{where}: {actual!r} fails {getattr(expected, '__name__', 'the check')}"]
    return [] if expected == actual else [f"{where}: expected {expected!r}, got {actual!r}"]


class CaseRun:
    def __init__(
        self,
        runtime: EdgeRuntime,
        fakes: FakeServices,
        base_env: Mapping[str, str],
        placeholders: Mapping[str, str] | None = None,
    ) -> None:
        self.runtime = runtime
        self.fakes = fakes
        self.base_env = base_env
        self.placeholders = placeholders or {}
        self.jar: dict[str, str] = {}
        self.problems: list[str] = []
        self.replies: list[Reply] = []

    def run(self, case: Mapping[str, Any]) -> list[str]:
        self.fakes.reset()
        overrides = {key: value.format(**self.placeholders) for key, value in case.get("env", {}).items()}
        env = {**self.base_env, **overrides}
        self.runtime.reset(env)
        now = time.time()
        for seed in case.get("seed", []):
            value = resolve(seed["value"], now)
            text = value if isinstance(value, str) else json.dumps(value)
            self.runtime.kv_put(seed["ns"], seed["key"], text, seed.get("ttl"))
        for number, step in enumerate(case["steps"], start=1):
            for repeat in range(step.get("repeat", 1)):
                self._step(step, f"step {number}" + (f" #{repeat + 1}" if "repeat" in step else ""))
        if "kv" in case:
            self._check_kv(case["kv"], self.runtime.kv_dump())
        return self.problems

    def _request(self, step: Mapping[str, Any], request_id: str) -> tuple[list[tuple[str, str]], bytes | None]:
        now = time.time()
        headers: list[tuple[str, str]] = [("CF-Connecting-IP", step.get("client", DEFAULT_CLIENT))]
        if "request_id" not in step and "X-Request-Id" not in step.get("headers", {}):
            headers.append(("X-Request-Id", request_id))
        body: bytes | None = None
        if "json" in step:
            body = json.dumps(resolve(step["json"], now)).encode()
            headers.append(("Content-Type", "application/json"))
        elif "form" in step:
            body = urlencode(step["form"]).encode()
            headers.append(("Content-Type", "application/x-www-form-urlencoded"))
        elif "body" in step:
            body = step["body"] if isinstance(step["body"], bytes) else str(step["body"]).encode()
        if step.get("session") and "session" in self.jar:
            headers.append(("Cookie", self.jar["session"]))
        if "jwt" in step:
            headers.append(("Authorization", "Bearer " + mint_jwt(step["jwt"], now)))
        if "turnstile" in step:
            headers.append(("cf-turnstile-response", step["turnstile"]))
        headers.extend(step.get("headers", {}).items())
        return headers, body

    def _step(self, step: Mapping[str, Any], label: str) -> None:
        request_id = step.get("request_id") or f"conformance-{next(_REQUEST_IDS):06d}"
        headers, body = self._request(step, request_id)
        seen_siteverify = len(self.fakes.state.siteverify_calls)
        reply = self.runtime.fetch(step["method"], step["path"], headers, body, stream=step.get("stream", False))
        self.replies.append(reply)
        cookie = reply.header("set-cookie")
        if cookie is not None:
            match = _SESSION_COOKIE.match(cookie)
            if match and "Max-Age=0" not in cookie:
                self.jar["session"] = match.group(1)
            elif match:
                self.jar.pop("session", None)
        expect = step.get("expect", {})
        where = f"{label} {step['method']} {step['path']}"
        self._check_reply(expect, reply, where)
        origin_calls = self.fakes.state.received.get(request_id, [])
        if "origin_calls" in expect and len(origin_calls) != expect["origin_calls"]:
            self.problems.append(f"{where}: {len(origin_calls)} origin calls, expected {expect['origin_calls']}")
        if "origin" in expect:
            if not origin_calls:
                self.problems.append(f"{where}: nothing reached the origin")
            else:
                self.problems.extend(matches(expect["origin"], origin_calls[-1], f"{where} origin"))
        calls = self.fakes.state.siteverify_calls[seen_siteverify:]
        if "siteverify_calls" in expect and len(calls) != expect["siteverify_calls"]:
            self.problems.append(f"{where}: {len(calls)} siteverify calls, expected {expect['siteverify_calls']}")
        if "siteverify" in expect:
            if not calls:
                self.problems.append(f"{where}: siteverify was not called")
            else:
                self.problems.extend(matches(expect["siteverify"], calls[-1], f"{where} siteverify"))
        if "log" in expect:
            records = [record for record in reply.logs if record.get("msg") == "request"]
            if len(records) != 1:
                self.problems.append(f"{where}: {len(records)} request log lines, expected 1")
            else:
                self.problems.extend(matches(expect["log"], records[0], f"{where} log"))
        for secret in expect.get("log_lacks", []):
            if secret in json.dumps(reply.logs):
                self.problems.append(f"{where}: the log contains {secret!r}")

    def _check_reply(self, expect: Mapping[str, Any], reply: Reply, where: str) -> None:
        if "status" in expect and reply.status != expect["status"]:
            self.problems.append(f"{where}: status {reply.status}, expected {expect['status']}: {reply.body[:300]!r}")
        for name, value in expect.get("headers", {}).items():
            actual = reply.header(name)
            if value is ABSENT:
                if actual is not None:
                    self.problems.append(f"{where}: header {name} should be absent, is {actual!r}")
            elif actual is None:
                self.problems.append(f"{where}: header {name} is missing")
            else:
                self.problems.extend(matches(value, actual, f"{where} header {name}"))
        if "json" in expect:
            try:
                document = json.loads(reply.body)
            except ValueError:
                self.problems.append(f"{where}: the body is not JSON: {reply.body[:200]!r}")
            else:
                self.problems.extend(matches(expect["json"], document, f"{where} body"))
        if "body" in expect and reply.body != expect["body"]:
            self.problems.append(f"{where}: body {reply.body[:100]!r}, expected {expect['body'][:100]!r}")

    def _check_kv(self, expectations: list[Mapping[str, Any]], dump: Mapping[str, Mapping[str, str]]) -> None:
        for expectation in expectations:
            namespace = dump.get(expectation["ns"], {})
            if "key" in expectation:
                keys = [key for key in namespace if key == expectation["key"]]
            else:
                keys = [key for key in namespace if key.startswith(expectation.get("prefix", ""))]
            where = f"KV {expectation['ns']} {expectation.get('key') or expectation.get('prefix', '')!r}"
            if "count" in expectation and len(keys) != expectation["count"]:
                self.problems.append(
                    f"{where}: {len(keys)} keys ({sorted(namespace)}), expected {expectation['count']}"
                )
            if "value" in expectation:
                if not keys:
                    self.problems.append(f"{where}: no such key ({sorted(namespace)})")
                    continue
                raw = namespace[keys[0]]
                try:
                    value: Any = json.loads(raw)
                except ValueError:
                    value = raw
                self.problems.extend(matches(resolve(expectation["value"], time.time()), value, where))
