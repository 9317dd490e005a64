"""The services the edge talks to, faked on 127.0.0.1 for both conformance runs (CPython and Pyodide).

One HTTP server, three roles by path prefix:

- ``/origin/...``: the SteppersLife API. It verifies every request's signed envelope as the real API
  does, and answers like it: ``ETag`` and ``Cache-Control: public, max-age=60, s-maxage=300`` on
  anonymous reads, ``private, no-store`` when an identity is present; login, sign-up, preferences and
  push subscriptions as the real routes shape them.
- ``/siteverify``: Turnstile's siteverify, speaking its form-encoded request and JSON answer, with
  single-use tokens, idempotency keys and Cloudflare's documented test secret keys.
- ``/media/...``: the public media prefix of the image bucket (S3 answers 403 for a missing key).

Every origin request is recorded under its ``X-Request-Id`` so each step of a case can see exactly
what reached the origin.
"""

from __future__ import annotations

import hashlib
import json
import threading
import time
import uuid
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, parse_qsl

from shared.envelope import Identity, verify
from shared.errors import Unauthorized

SIGNING_SECRET = "conformance-signing-secret-" + "s" * 32
TURNSTILE_SECRET = "0x4AAAAAAAconformance-real-secret"
PASSWORD = "correct horse battery staple"
TEST_SECRETS = {
    "1x0000000000000000000000000000000AA": (True, []),
    "2x0000000000000000000000000000000AA": (False, ["invalid-input-response"]),
    "3x0000000000000000000000000000000AA": (False, ["timeout-or-duplicate"]),
}
EVENT_ID = "6f1c2f8e-3b7a-4c1e-9d2a-0b5e8f7a6c41"
IMAGE_ID = "0d9e3c55-1f2a-4b6c-8e7d-9a0b1c2d3e4f"
IMAGE_BYTES = {
    "avif": b"\x00\x00\x00\x1cftypavif fake avif bytes",
    "webp": b"RIFF\x10\x00\x00\x00WEBPVP8 fake webp bytes",
    "jpg": b"\xff\xd8\xff\xe0 fake jpeg bytes \xff\xd9",
}
MEDIA_TYPES = {"avif": "image/avif", "webp": "image/webp", "jpg": "image/jpeg"}


def user_for(email: str) -> dict[str, Any]:
    """The account a login with ``email`` yields: a stable id per email, role from the local part."""
    role = "admin" if email.startswith("admin") else "user"
    return {"id": str(uuid.uuid5(uuid.NAMESPACE_URL, email)), "email": email, "name": "Test", "role": role}


REVOKED_USER = "revoked-user"


@dataclass
class FakeState:
    received: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    siteverify_calls: list[dict[str, str]] = field(default_factory=list)
    spent_tokens: dict[str, str] = field(default_factory=dict)  # token -> idempotency key of its first use
    preferences: dict[str, dict[str, Any]] = field(default_factory=dict)
    subscriptions: dict[str, dict[str, Any]] = field(default_factory=dict)
    origin_reads: int = 0
    idempotency_keys: set[str] = field(default_factory=set)
    # Each account's session generation, as the real origin keeps it (functions/platform/sessions.py):
    # "revoked-user" logged out everywhere once, so a session opened under generation 0 is refused.
    generations: dict[str, int] = field(default_factory=lambda: {REVOKED_USER: 1})


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: FakeServices

    def _serve(self) -> None:
        body = self.rfile.read(int(self.headers.get("content-length") or 0))
        headers = {name.lower(): value for name, value in self.headers.items()}
        with self.server.lock:
            if self.path == "/siteverify":
                self._siteverify(body)
            elif self.path.startswith("/media/"):
                self._media()
            elif self.path == "/degraded-origin/healthz":
                # An origin that serves while one of its dependencies is down (functions' /healthz).
                self._json(503, {"status": "degraded", "checks": {"postgres": "up", "redis": "down"}})
            elif self.path.startswith("/origin/"):
                self._origin(self.path[len("/origin") :], headers, body)
            else:
                self._json(404, {"error": "unknown fake"})

    do_GET = do_HEAD = do_POST = do_PUT = do_PATCH = do_DELETE = _serve

    # --- siteverify -------------------------------------------------------------------------------

    def _siteverify(self, body: bytes) -> None:
        form = dict(parse_qsl(body.decode("utf-8"), keep_blank_values=True))
        state = self.server.state
        state.siteverify_calls.append(form)
        secret, token, key = form.get("secret", ""), form.get("response", ""), form.get("idempotency_key", "")
        if not secret:
            self._verdict(False, ["missing-input-secret"])
        elif secret in TEST_SECRETS:
            self._verdict(*TEST_SECRETS[secret])
        elif secret != TURNSTILE_SECRET:
            self._verdict(False, ["invalid-input-secret"])
        elif not token:
            self._verdict(False, ["missing-input-response"])
        elif token.startswith("expired-"):
            self._verdict(False, ["timeout-or-duplicate"])
        elif not token.startswith("valid-"):
            self._verdict(False, ["invalid-input-response"])
        elif token in state.spent_tokens and (not key or state.spent_tokens[token] != key):
            self._verdict(False, ["timeout-or-duplicate"])
        else:
            state.spent_tokens.setdefault(token, key)
            self._verdict(True, [])

    def _verdict(self, success: bool, codes: list[str]) -> None:
        answer: dict[str, Any] = {"success": success, "error-codes": codes}
        if success:
            answer.update(
                challenge_ts=time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime()),
                hostname="edge.example",
                action="",
                cdata="",
            )
        self._json(200, answer)

    # --- media --------------------------------------------------------------------------------------

    def _media(self) -> None:
        name = self.path[len("/media/") :]
        prefix = f"public/{EVENT_ID}/{IMAGE_ID}/"
        width, _, extension = name[len(prefix) :].partition(".")
        if name.startswith(prefix) and width in ("320", "640") and extension in IMAGE_BYTES:
            data = IMAGE_BYTES[extension]
            self._bytes(200, data, {"Content-Type": MEDIA_TYPES[extension], "ETag": f'"{width}-{extension}"'})
        else:
            self._bytes(403, b"<Error><Code>AccessDenied</Code></Error>", {"Content-Type": "application/xml"})

    # --- origin -------------------------------------------------------------------------------------

    def _origin(self, path: str, headers: dict[str, str], body: bytes) -> None:
        state = self.server.state
        record: dict[str, Any] = {
            "method": self.command,
            "path": path,
            "headers": headers,
            "body": body.decode("utf-8", "replace"),
        }
        state.received.setdefault(headers.get("x-request-id", ""), []).append(record)
        if path == "/healthz":
            self._json(200, {"status": "ok"})
            return
        try:
            identity = verify(
                SIGNING_SECRET, method=self.command, path=path, headers=headers, body=body, now=int(time.time())
            )
        except Unauthorized as exc:
            self._json(401, exc.body())
            return
        record["identity"] = identity._asdict() if identity else None
        if identity is not None and identity.generation != state.generations.get(identity.user_id, 0):
            self._json(401, {"error": {"code": "session_revoked", "message": "log in again", "details": None}})
            return
        bare = path.partition("?")[0]
        route = _ORIGIN_ROUTES.get((self.command, bare))
        if route is not None:
            route(self, identity, body)
        elif bare.startswith("/events") and self.command in ("GET", "HEAD"):
            self._public_read(identity, {"items": [{"id": 1, "title": "Social"}], "path": path})
        elif bare == "/events" and self.command == "POST" and identity and "idempotency-key" in headers:
            # The functions' Idempotency-Key: the same key again gets the stored answer, marked.
            replayed = headers["idempotency-key"] in state.idempotency_keys
            state.idempotency_keys.add(headers["idempotency-key"])
            self._json(201, {"created": bare}, {"Idempotent-Replayed": "true"} if replayed else {})
        elif bare.startswith("/events") and self.command in ("PATCH", "DELETE", "POST"):
            self._json(200 if identity else 401, {"updated": bare} if identity else {"error": "no identity"})
        else:
            self._json(
                200,
                {"method": self.command, "path": path, "identity": record["identity"]},
                {"Cache-Control": "no-store"},
            )

    def _public_read(self, identity: Identity | None, payload: Any) -> None:
        self.server.state.origin_reads += 1
        payload = {**payload, "served": self.server.state.origin_reads}
        if identity is not None:
            self._json(200, payload, {"Cache-Control": "private, no-store"})
            return
        data = json.dumps(payload, sort_keys=True).encode()
        etag = '"' + hashlib.sha256(data).hexdigest()[:32] + '"'
        self._bytes(
            200,
            data,
            {"Content-Type": "application/json", "ETag": etag, "Cache-Control": "public, max-age=60, s-maxage=300"},
        )

    def _login(self, identity: Identity | None, body: bytes) -> None:
        credentials = json.loads(body or b"{}")
        if credentials.get("password") == PASSWORD and isinstance(credentials.get("email"), str):
            user = user_for(credentials["email"])
            generation = self.server.state.generations.get(user["id"], 0)
            self._json(
                200, {"user": user, "session": {"generation": generation}}, {"Set-Cookie": "origin_session=1; Path=/"}
            )
        else:
            self._json(
                401, {"error": {"code": "bad_credentials", "message": "wrong email or password", "details": None}}
            )

    def _logout_all(self, identity: Identity | None, body: bytes) -> None:
        if identity is None:
            self._json(401, {"error": {"code": "authentication_required", "message": "sign in", "details": None}})
            return
        generations = self.server.state.generations
        generations[identity.user_id] = generations.get(identity.user_id, 0) + 1
        self._bytes(204, b"", {})

    def _sign_up(self, identity: Identity | None, body: bytes) -> None:
        """Echoes what the edge forwarded: a JSON document, or a plain form's encoded text."""
        try:
            form: Any = json.loads(body or b"{}")
            email = str(form.get("email", ""))
        except ValueError:
            form = body.decode("utf-8")
            email = parse_qs(form).get("email", [""])[0]
        self._json(201, {"user": user_for(email), "received": form})

    def _get_preferences(self, identity: Identity | None, body: bytes) -> None:
        if identity is None:
            self._json(401, {"error": "sign in"})
            return
        default = {"categories": [], "locations": [], "notify": False, "digest": False}
        self._json(200, {"preferences": self.server.state.preferences.get(identity.user_id, default)})

    def _put_preferences(self, identity: Identity | None, body: bytes) -> None:
        if identity is None:
            self._json(401, {"error": "sign in"})
            return
        self.server.state.preferences[identity.user_id] = json.loads(body)
        self._json(200, {"preferences": self.server.state.preferences[identity.user_id]})

    def _subscribe(self, identity: Identity | None, body: bytes) -> None:
        form = json.loads(body)
        if identity is None or set(form) != {"endpoint", "keys"}:
            self._json(422, {"error": "bad subscription"})
            return
        created = form["endpoint"] not in self.server.state.subscriptions
        self.server.state.subscriptions[form["endpoint"]] = {**form, "user_id": identity.user_id}
        self._json(201 if created else 200, {"subscription": {"endpoint": form["endpoint"]}})

    def _unsubscribe(self, identity: Identity | None, body: bytes) -> None:
        endpoint = json.loads(body).get("endpoint")
        existing = self.server.state.subscriptions.get(endpoint)
        if identity is None or existing is None or existing["user_id"] != identity.user_id:
            self._json(404, {"error": {"code": "not_found", "message": "no such subscription", "details": None}})
            return
        del self.server.state.subscriptions[endpoint]
        self._bytes(204, b"", {})

    def _private(self, identity: Identity | None, body: bytes) -> None:
        self._json(200, {"private": True}, {"Cache-Control": "private, max-age=60"})

    def _with_cookie(self, identity: Identity | None, body: bytes) -> None:
        self._json(200, {"cookie": True}, {"Cache-Control": "public, max-age=60", "Set-Cookie": "tracking=1"})

    def _missing(self, identity: Identity | None, body: bytes) -> None:
        self._json(404, {"error": {"code": "not_found", "message": "nothing here", "details": None}})

    # --- plumbing -----------------------------------------------------------------------------------

    def _json(self, status: int, payload: Any, extra: Mapping[str, str] | None = None) -> None:
        self._bytes(status, json.dumps(payload).encode(), {"Content-Type": "application/json", **(extra or {})})

    def _bytes(self, status: int, data: bytes, headers: Mapping[str, str]) -> None:
        self.send_response(status)
        for name, value in headers.items():
            self.send_header(name, value)
        if status != 204:
            self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if self.command != "HEAD" and status != 204:
            self.wfile.write(data)

    def log_message(self, format: str, *args: Any) -> None:
        pass


_ORIGIN_ROUTES = {
    ("POST", "/auth/login"): _Handler._login,
    ("POST", "/users"): _Handler._sign_up,
    ("POST", "/auth/logout-all"): _Handler._logout_all,
    ("GET", "/me/preferences"): _Handler._get_preferences,
    ("PUT", "/me/preferences"): _Handler._put_preferences,
    ("POST", "/push/subscriptions"): _Handler._subscribe,
    ("DELETE", "/push/subscriptions"): _Handler._unsubscribe,
    ("GET", "/private"): _Handler._private,
    ("GET", "/cookie"): _Handler._with_cookie,
    ("GET", "/missing"): _Handler._missing,
}


class FakeServices(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.lock = threading.Lock()
        self.state = FakeState()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"

    def reset(self) -> None:
        with self.lock:
            self.state = FakeState()


@contextmanager
def running_fakes() -> Iterator[FakeServices]:
    server = FakeServices()
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
