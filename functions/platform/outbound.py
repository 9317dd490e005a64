"""The platform's one outbound-request guard: every request made on someone's behalf (web push now,
uptime checks and webhooks next) goes through ``GuardedHttpClient``.

Each hop is parsed and checked by ``shared.net`` (one unambiguous spelling, allowed scheme and port,
no userinfo), its host is resolved **once**, every address it resolves to must be public, and the
connection goes to the first checked address, with the name as TLS SNI, certificate name and
``Host``. A name that resolves to a public address when checked and to 127.0.0.1 a moment later (DNS
rebinding) never reaches 127.0.0.1: nothing resolves it a second time. Redirects are not followed
unless the caller allows some (``max_redirects``); each followed hop is checked like the first. A
protocol that never redirects (web push) passes 0 and sees the 3xx as the answer.

Why urllib3: it is maintained, already installed (requests, pywebpush), and its connection pools
connect to a given address while verifying the certificate for another name (``server_hostname``,
``assert_hostname``): exactly "connect to what was checked, speak to the name". Pools are kept per
(address, port, name), so connections are reused only to an address that was checked.

``allow_hosts`` (``PUSH_ALLOW_HOSTS``) names hosts whose addresses are not checked, with http and any
port: fake services on 127.0.0.1 in tests and the dev stack. It is empty in production. ``connect_to``
(curl's ``--connect-to``; ``SITE_PROBE_CONNECT_TO``, dev and tests only) sends every hop to one
``host:port`` instead of resolving its name, and that host must itself be in ``allow_hosts``: the dev
stack's fake ingress serves every customer site on 127.0.0.1. Each hop's URL is still checked. Both
are unset in production, where the guard is exactly the checks above.

An https answer carries the expiry of the certificate the server presented (uptime checks warn on it).

Failure model: a refused URL or hop is ``shared.net.UnsafeUrl`` (a ``ValueError``: the caller's input
is wrong, retrying will not help); a connection failure or timeout is ``OutboundUnavailable`` (an
``OSError``: worth a retry); any answer, whatever its status, is a ``Response``.
"""

from __future__ import annotations

import ssl
import threading
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from urllib.parse import urljoin

import certifi
import urllib3
import urllib3.connection
from urllib3.exceptions import HTTPError

from shared.net import (
    HTTPS_PORTS,
    IPAddress,
    Resolver,
    Target,
    check_addresses,
    is_allowed_host,
    parse_url,
    resolve,
)

MAX_RESPONSE_BYTES = 1024 * 1024
_MAX_POOLS = 64
_REDIRECTS = (301, 302, 303, 307, 308)


class OutboundUnavailable(OSError):
    """The checked address could not be reached or did not answer in time."""


@dataclass(frozen=True)
class Response:
    status: int
    headers: Mapping[str, str]  # case-insensitive (urllib3's HTTPHeaderDict)
    body: bytes
    url: str  # the hop that answered
    certificate_expires_at: datetime | None = None  # https only: the server certificate's notAfter

    @property
    def text(self) -> str:
        return self.body.decode("utf-8", "replace")

    @property
    def status_code(self) -> int:
        """requests' name for the status, which pywebpush reads."""
        return self.status


class GuardedHttpClient:
    def __init__(
        self,
        *,
        schemes: Collection[str] = ("https",),
        ports: Collection[int] = HTTPS_PORTS,
        allow_hosts: Collection[str] = (),
        resolver: Resolver = resolve,
        max_response_bytes: int = MAX_RESPONSE_BYTES,
        connect_to: str | None = None,
        ca_file: str | None = None,
    ) -> None:
        """``schemes`` and ``ports``: what callers may reach (web push: https on 443; an uptime check:
        ``("https", "http")`` on ``shared.net.WEB_PORTS``). ``connect_to`` and ``ca_file`` (the CAs to
        trust instead of Mozilla's): dev and tests only."""
        self._schemes = tuple(schemes)
        self._ports = tuple(ports)
        self._allow_hosts = frozenset(name.lower() for name in allow_hosts)
        self._connect_to: tuple[str, int] | None = None
        if connect_to:
            host, _, port = connect_to.rpartition(":")
            if host.lower() not in self._allow_hosts or not port.isdigit():
                raise ValueError("connect_to must be host:port with its host in allow_hosts")
            self._connect_to = (host, int(port))
        self._ca_file = ca_file or certifi.where()
        self._resolver = resolver
        self._max_response_bytes = max_response_bytes
        self._pools: dict[tuple[str, str, int, str], urllib3.HTTPConnectionPool] = {}
        self._lock = threading.Lock()

    def check(self, url: str) -> None:
        """Refuse ``url`` now (``UnsafeUrl``), as ``request`` would, without connecting."""
        self._checked(url)

    def request(
        self,
        method: str,
        url: str,
        *,
        headers: Mapping[str, str] | None = None,
        body: bytes | None = None,
        timeout: float = 10.0,
        max_redirects: int = 0,
    ) -> Response:
        """Send one request; follow at most ``max_redirects`` redirects, each hop checked anew."""
        for _ in range(max_redirects + 1):
            response = self._send(method, url, headers or {}, body, timeout)
            location = response.headers.get("location")
            if response.status not in _REDIRECTS or location is None or max_redirects == 0:
                return response
            url = urljoin(url, location)
            if response.status == 303 or (response.status in (301, 302) and method == "POST"):
                method, body = "GET", None
            max_redirects -= 1
        return response

    def _checked(self, url: str) -> tuple[Target, IPAddress | str]:
        if is_allowed_host(url, self._allow_hosts):
            target = parse_url(url, schemes=("http", "https"), ports=range(1, 65536), public=False)
            return target, self._resolver(target.host, target.port)[0]
        target = parse_url(url, schemes=self._schemes, ports=self._ports)
        if self._connect_to is not None:  # dev and tests: the name is not resolved, the URL was checked
            connect_host, connect_port = self._connect_to
            return target._replace(port=connect_port), self._resolver(connect_host, connect_port)[0]
        return target, check_addresses(target, resolver=self._resolver)[0]

    def _send(self, method: str, url: str, headers: Mapping[str, str], body: bytes | None, timeout: float) -> Response:
        target, address = self._checked(url)
        pool = self._pool(target, str(address))
        request_headers = {name: value for name, value in headers.items() if name.lower() != "host"}
        request_headers["Host"] = target.authority
        try:
            answer = pool.urlopen(
                method.upper(),
                target.request_target,
                body=body,
                headers=request_headers,
                redirect=False,
                retries=False,
                timeout=urllib3.Timeout(total=timeout),
                preload_content=False,
            )
            try:
                expires_at = _certificate_expiry(answer)
                data = answer.read(self._max_response_bytes + 1, decode_content=True)
            finally:
                answer.release_conn()
        except HTTPError as exc:
            raise OutboundUnavailable(f"{target.host}: {type(exc).__name__}") from exc
        if len(data) > self._max_response_bytes:
            data = data[: self._max_response_bytes]
        return Response(
            status=answer.status, headers=answer.headers, body=data, url=url, certificate_expires_at=expires_at
        )

    def _pool(self, target: Target, address: str) -> urllib3.HTTPConnectionPool:
        key = (target.scheme, address, target.port, target.host)
        with self._lock:
            pool = self._pools.get(key)
            if pool is None:
                if len(self._pools) >= _MAX_POOLS:
                    for stale in self._pools.values():
                        stale.close()
                    self._pools.clear()
                pool = self._pools[key] = self._new_pool(target, address)
            return pool

    def _new_pool(self, target: Target, address: str) -> urllib3.HTTPConnectionPool:
        if target.scheme == "http":
            return urllib3.HTTPConnectionPool(address, target.port, maxsize=4, block=False)
        # The TLS handshake names the host (SNI) and the certificate must be valid for it, while the
        # TCP connection goes to the address that was checked.
        pool = urllib3.HTTPSConnectionPool(
            address,
            target.port,
            maxsize=4,
            block=False,
            server_hostname=target.host,
            assert_hostname=target.host,
            cert_reqs="CERT_REQUIRED",
            # Mozilla's CA bundle (certifi, which requests brings), not whatever the host image has.
            ca_certs=self._ca_file,
        )
        pool.ConnectionCls = _CertificateRecordingConnection
        return pool


class _CertificateRecordingConnection(urllib3.connection.HTTPSConnection):
    """Keeps the verified certificate's expiry at the handshake: by the time an answer is read, a
    server that closes after it (HTTP/1.0, ``Connection: close``) has taken the socket away."""

    certificate_expires_at: datetime | None = None

    def connect(self) -> None:
        super().connect()
        certificate = self.sock.getpeercert() if isinstance(self.sock, ssl.SSLSocket) else None
        not_after = certificate.get("notAfter") if certificate else None
        if isinstance(not_after, str):
            self.certificate_expires_at = datetime.fromtimestamp(ssl.cert_time_to_seconds(not_after), UTC)


def _certificate_expiry(answer: urllib3.BaseHTTPResponse) -> datetime | None:
    """The expiry of the certificate on the connection that answered, if it was TLS."""
    connection = getattr(answer, "connection", None)
    return connection.certificate_expires_at if isinstance(connection, _CertificateRecordingConnection) else None
