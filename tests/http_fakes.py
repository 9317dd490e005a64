"""Fake HTTP services on 127.0.0.1 for both products' tests: a small server that hands each POST to a
function, and on it a fake push service that decrypts every payload with the subscribing browser's
own private key (RFC 8291) and answers as scripted."""

from __future__ import annotations

import base64
import hashlib
import json
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import http_ece
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec


def b64url(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


@dataclass
class Browser:
    """A subscribing browser: its own P-256 key pair and auth secret, as PushManager makes them."""

    name: str
    key: ec.EllipticCurvePrivateKey = field(default_factory=lambda: ec.generate_private_key(ec.SECP256R1()))
    auth_secret: bytes = field(default_factory=lambda: hashlib.sha256(str(time.time_ns()).encode()).digest()[:16])

    @property
    def p256dh(self) -> str:
        return b64url(
            self.key.public_key().public_bytes(
                serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
            )
        )

    @property
    def auth(self) -> str:
        return b64url(self.auth_secret)


@dataclass
class Received:
    name: str
    headers: dict[str, str]
    message: dict[str, Any]


@dataclass
class FakePushService:
    """Decrypts what it receives and answers as scripted per browser (201 once the script is used up)."""

    base_url: str = ""
    browsers: dict[str, Browser] = field(default_factory=dict)
    scripts: dict[str, list[tuple[int, dict[str, str]]]] = field(default_factory=dict)
    received: list[Received] = field(default_factory=list)
    attempts: dict[str, int] = field(default_factory=dict)
    hold_seconds: float = 0.0
    inflight: int = 0
    max_inflight: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def browser(self, name: str, *script: tuple[int, dict[str, str]]) -> Browser:
        self.browsers[name] = Browser(name)
        self.scripts[name] = list(script)
        return self.browsers[name]

    def endpoint(self, name: str) -> str:
        return f"{self.base_url}/push/{name}"

    def handle(self, name: str, headers: dict[str, str], body: bytes) -> tuple[int, dict[str, str]]:
        with self.lock:
            self.inflight += 1
            self.max_inflight = max(self.max_inflight, self.inflight)
            self.attempts[name] = self.attempts.get(name, 0) + 1
        try:
            if self.hold_seconds:
                time.sleep(self.hold_seconds)  # lets concurrent sends overlap, so the bound is observable
            browser = self.browsers[name]
            plaintext = http_ece.decrypt(
                body, private_key=browser.key, dh=None, auth_secret=browser.auth_secret, version="aes128gcm"
            )
            with self.lock:
                self.received.append(Received(name, headers, json.loads(plaintext)))
                script = self.scripts[name]
                return script.pop(0) if script else (201, {})
        finally:
            with self.lock:
                self.inflight -= 1


# What a fake does with a POST: (path, lower-cased headers, body) -> (status, extra headers).
PostHandler = Callable[[str, dict[str, str], bytes], tuple[int, dict[str, str]]]


@contextmanager
def serving_posts(handle: PostHandler) -> Iterator[str]:
    """A threading HTTP server on 127.0.0.1 that answers every POST with ``handle``; yields its base URL."""

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
            headers = {name.lower(): value for name, value in self.headers.items()}
            status, extra = handle(self.path, headers, body)
            self.send_response(status)
            for name, value in extra.items():
                self.send_header(name, value)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


@contextmanager
def running_push_service() -> Iterator[FakePushService]:
    fake = FakePushService()
    with serving_posts(lambda path, headers, body: fake.handle(path.rsplit("/", 1)[-1], headers, body)) as url:
        fake.base_url = url
        yield fake
