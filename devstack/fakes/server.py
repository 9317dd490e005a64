"""What the fakes share: a threaded JSON HTTP server and the failures a real API shows.

``Faults`` decides, per request, whether the answer is a timeout (the work may still happen: the
answer is simply late, as when a load balancer gives up on a slow backend), a 429 with Retry-After, a
503, or, for a create, a 200 that did not actually create. Probabilities are 0 by default.
"""

from __future__ import annotations

import json
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit


@dataclass
class Faults:
    timeout: float = 0.0
    too_many: float = 0.0
    unavailable: float = 0.0
    phantom_create: float = 0.0
    # How late a "timed out" answer comes (longer than the client's timeout).
    timeout_seconds: float = 1.0
    retry_after_seconds: int = 2
    rng: random.Random = field(default_factory=random.Random)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def roll(self, probability: float) -> bool:
        with self.lock:
            return probability > 0 and self.rng.random() < probability


@dataclass
class Request:
    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    body: Any


# (status, body, extra headers)
Reply = tuple[int, Any, dict[str, str]]


class JsonServer:
    """Serves ``handle(request) -> reply`` on 127.0.0.1; ``url`` and ``stop()``."""

    def __init__(self, handle: Callable[[Request], Reply], *, port: int = 0) -> None:
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def _serve(self) -> None:
                parts = urlsplit(self.path)
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length) if length else b""
                try:
                    body = json.loads(raw) if raw else None
                except ValueError:
                    body = None
                request = Request(
                    self.command,
                    parts.path,
                    {k: v[0] for k, v in parse_qs(parts.query).items()},
                    {k.lower(): v for k, v in self.headers.items()},
                    body,
                )
                status, payload, headers = outer._handle(request)
                data = b"" if payload is None else json.dumps(payload).encode()
                try:
                    self.send_response(status)
                    for name, value in headers.items():
                        self.send_header(name, value)
                    if data:
                        self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client gave up (a simulated timeout)

            do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _serve

            def log_message(self, format: str, *args: Any) -> None:
                return

        self._handle = handle
        self._server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, name="fake-server", daemon=True)
        self._thread.start()
        self.url = f"http://127.0.0.1:{self._server.server_port}"

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()


def late(faults: Faults) -> None:
    """The answer to this request comes after the client has given up."""
    time.sleep(faults.timeout_seconds)
