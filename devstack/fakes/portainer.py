"""A fake Portainer: the stack endpoints of a standalone Docker environment, with ``X-API-Key``, and an
HTTPS ingress that serves every running stack's site with a certificate from the fake's own CA.

Wire format as Portainer's: stacks are ``{Id, Name, Type, EndpointId, Status (1 active, 2 inactive),
Env, CreationDate, ...}``; ``POST /api/stacks/create/standalone/string?endpointId=`` takes ``{name,
stackFileContent, env}`` and answers 409 for a name taken on that endpoint; errors are ``{message,
details}``. The ingress (``ingress_address``) answers the TLS handshake for a domain only while a
running stack declares it (label ``io.agistack.domain``), like a reverse proxy that gets a certificate
once the container is up (and its certificate is not refused: ``certificate_refused``, like an ACME
failure); otherwise it presents a certificate for another name.

A site's health can be flipped, so that uptime checks see it go down and come back:
``POST /_fake/health {"healthy": false, "domain": "shop.example.com"}`` (no ``domain``: every site)
makes the ingress answer that site with 503 until it is flipped back. It is the fake's own control
endpoint, not Portainer's, and needs no API key.
"""

from __future__ import annotations

import datetime as dt
import re
import socket
import ssl
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from devstack.fakes.server import Faults, JsonServer, Reply, Request, late
from devstack.fakes.tls import ThrowAwayCa

DOMAIN_LABEL = re.compile(r'io\.agistack\.domain: "([^"]+)"')
OWNER_LABEL = re.compile(r'io\.agistack\.owner: "([^"]+)"')


def _error(status: int, message: str) -> Reply:
    return status, {"message": message, "details": message}, {}


class FakePortainer:
    def __init__(self, api_key: str, *, faults: Faults | None = None, endpoint_id: int = 1) -> None:
        self.api_key = api_key
        self.faults = faults or Faults()
        self.endpoint_id = endpoint_id
        self.stacks: dict[int, dict[str, Any]] = {}
        self.unhealthy: set[str] = set()  # domains the ingress answers with 503; "*": every one
        self.creates = 0
        # Domains whose certificate is never issued (an ACME rate limit or a failed challenge).
        self.certificate_refused: set[str] = set()
        self._next_id = 1
        self._lock = threading.Lock()
        self._tls = _Certificates()
        self._server = JsonServer(self._handle)
        self.url = self._server.url
        self._ingress = _Ingress(self)
        self.ingress_address = self._ingress.address
        self.ca_file = self._tls.ca_file

    def stop(self) -> None:
        self._ingress.stop()
        self._server.stop()

    # --- what the tests and the benchmark read ---------------------------------------------------

    def stacks_by_owner(self) -> dict[str, list[dict[str, Any]]]:
        with self._lock:
            owned: dict[str, list[dict[str, Any]]] = {}
            for stack in self.stacks.values():
                match = OWNER_LABEL.search(stack["StackFileContent"])
                owned.setdefault(match.group(1) if match else "", []).append(dict(stack))
            return owned

    def healthy(self, domain: str) -> bool:
        with self._lock:
            return not {domain, "*"} & self.unhealthy

    def serves(self, domain: str) -> bool:
        if domain in self.certificate_refused:
            return False
        with self._lock:
            for stack in self.stacks.values():
                match = DOMAIN_LABEL.search(stack["StackFileContent"])
                if stack["Status"] == 1 and match is not None and match.group(1) == domain:
                    return True
        return False

    # --- the API -------------------------------------------------------------------------------------

    def _handle(self, request: Request) -> Reply:
        if request.path == "/_fake/health" and request.method == "POST":
            return self._flip(request)
        if request.headers.get("x-api-key") != self.api_key:
            return _error(401, "Unauthorized")
        faults = self.faults
        if faults.roll(faults.too_many):
            return (
                429,
                {"message": "Too many requests", "details": "rate limited"},
                {"Retry-After": str(faults.retry_after_seconds)},
            )
        if faults.roll(faults.unavailable):
            return _error(503, "Service unavailable")
        timing_out = faults.roll(faults.timeout)
        reply = self._route(request)
        if timing_out:
            late(faults)  # the work is done; its answer arrives after the client gave up
        return reply

    def _flip(self, request: Request) -> Reply:
        body = request.body if isinstance(request.body, dict) else {}
        healthy, domain = body.get("healthy"), body.get("domain") or "*"
        if not isinstance(healthy, bool) or not isinstance(domain, str):
            return _error(400, 'send {"healthy": true|false, "domain": optional}')
        with self._lock:
            if healthy:
                self.unhealthy.discard(domain)
                if domain == "*":
                    self.unhealthy.clear()
            else:
                self.unhealthy.add(domain)
        return 200, {"domain": domain, "healthy": healthy}, {}

    def _route(self, request: Request) -> Reply:
        path, method = request.path, request.method
        if path == "/api/stacks" and method == "GET":
            with self._lock:
                return 200, [self._public(s) for s in self.stacks.values()], {}
        if path == "/api/stacks/create/standalone/string" and method == "POST":
            return self._create(request)
        match = re.fullmatch(r"/api/stacks/(\d+)(/file|/start|/stop)?", path)
        if not match:
            return _error(404, "Not found")
        stack_id, action = int(match.group(1)), match.group(2)
        with self._lock:
            stack = self.stacks.get(stack_id)
            if stack is None:
                return _error(404, "Unable to find a stack with the specified identifier inside the database")
            if action is None and method == "GET":
                return 200, self._public(stack), {}
            if action == "/file" and method == "GET":
                return 200, {"StackFileContent": stack["StackFileContent"]}, {}
            if action in ("/start", "/stop") and method == "POST":
                wanted = 1 if action == "/start" else 2
                if stack["Status"] == wanted:
                    return _error(400, f"Stack is already {'active' if wanted == 1 else 'inactive'}")
                stack["Status"] = wanted
                return 200, self._public(stack), {}
            if action is None and method == "DELETE":
                del self.stacks[stack_id]
                return 204, None, {}
        return _error(405, "Method not allowed")

    def _create(self, request: Request) -> Reply:
        body = request.body if isinstance(request.body, dict) else {}
        name, content = str(body.get("name") or ""), body.get("stackFileContent")
        if request.query.get("endpointId") != str(self.endpoint_id):
            return _error(400, "Invalid query parameter: endpointId")
        if not re.fullmatch(r"[a-z0-9][a-z0-9_-]*", name) or not isinstance(content, str) or not content:
            return _error(400, "Invalid request payload")
        with self._lock:
            if any(s["Name"] == name for s in self.stacks.values()):
                return _error(409, f"A stack with the normalized name '{name}' already exists")
            stack_id = self._next_id
            self._next_id += 1
            stack = {
                "Id": stack_id,
                "Name": name,
                "Type": 2,
                "EndpointId": self.endpoint_id,
                "Status": 1,
                "Env": body.get("env") or [],
                "StackFileContent": content,
                "CreationDate": int(dt.datetime.now(dt.UTC).timestamp()),
                "CreatedBy": "agistack",
            }
            phantom = self.faults.roll(self.faults.phantom_create)
            if not phantom:
                self.stacks[stack_id] = stack
                self.creates += 1
            return 200, self._public(stack), {}

    @staticmethod
    def _public(stack: dict[str, Any]) -> dict[str, Any]:
        return {key: value for key, value in stack.items() if key != "StackFileContent"}


class _Certificates:
    """The fake ingress's CA (its PEM in ``ca_file``) and a TLS context per domain, signed on first use."""

    def __init__(self) -> None:
        self._ca = ThrowAwayCa("agistack fake ingress CA")
        self.ca_file = self._ca.ca_file
        self._contexts: dict[str, ssl.SSLContext] = {}
        self._lock = threading.Lock()

    def context(self, domain: str) -> ssl.SSLContext:
        with self._lock:
            if domain not in self._contexts:
                self._contexts[domain] = self._ca.server_context(domain)
            return self._contexts[domain]


class _Ingress:
    """HTTPS on 127.0.0.1 for every running stack's domain (SNI picks the certificate)."""

    FALLBACK = "ingress.fake-portainer.invalid"

    def __init__(self, portainer: FakePortainer) -> None:
        tls = portainer._tls
        default = tls.context(self.FALLBACK)

        def choose(sock: ssl.SSLObject | ssl.SSLSocket, server_name: str | None, _ctx: ssl.SSLContext) -> None:
            if server_name and portainer.serves(server_name):
                sock.context = tls.context(server_name)

        default.sni_callback = choose

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                host = (self.headers.get("Host") or "").split(":")[0]
                if not portainer.serves(host):
                    status, text = 503, "no container"
                elif not portainer.healthy(host):
                    status, text = 503, "unhealthy (flipped with POST /_fake/health)"
                else:
                    status, text = 200, "up"
                body = f"{host}: {text}\n".encode()
                self.send_response(status)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                return

        class Server(ThreadingHTTPServer):
            daemon_threads = True

            def get_request(self) -> tuple[socket.socket, Any]:
                sock, address = super().get_request()
                sock.settimeout(5)
                return default.wrap_socket(sock, server_side=True, do_handshake_on_connect=False), address

            def finish_request(self, request: Any, client_address: Any) -> None:
                try:
                    request.do_handshake()
                except (ssl.SSLError, OSError):
                    return  # a client that refused our certificate
                super().finish_request(request, client_address)

        self._server = Server(("127.0.0.1", 0), Handler)
        self._thread = threading.Thread(target=self._server.serve_forever, name="fake-ingress", daemon=True)
        self._thread.start()
        self.address = f"127.0.0.1:{self._server.server_port}"

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
