"""The HTTPS check of a new site: a TLS handshake that verifies the certificate for the site's name,
then ``GET /`` answered with a status below 500.

Outbound safety: the customer's domain goes through the outbound guard's checks (``shared.net``,
the half of ``functions/platform/outbound.py`` that decides: the URL's spelling, then every address
the name resolves to must be public, embedded IPv4 forms included); the connection goes to exactly the
checked address (no second lookup a rebinding DNS could answer differently). The probe speaks TLS
itself rather than through ``GuardedHttpClient`` because it must report *why* a handshake failed (no
certificate yet is the normal state of a new site) and connect where ``connect_to`` says in the dev
stack. ``allow_hosts`` (tests and the dev stack only) admits a non-public host such as the fake
Portainer's ingress on 127.0.0.1, where ``connect_to`` points the check (curl's ``--connect-to``).
"""

from __future__ import annotations

import socket
import ssl

from functions.agistaffers.services.saga import Transient
from shared.net import UnsafeUrl, check_addresses, parse_url, resolve

MAX_STATUS_LINE = 1024


class HttpsSiteProbe:
    def __init__(
        self, *, connect_to: str | None, ca_file: str | None, allow_hosts: tuple[str, ...], timeout_seconds: float
    ) -> None:
        self._connect_to = connect_to
        self._context = ssl.create_default_context(cafile=ca_file) if ca_file else ssl.create_default_context()
        self._allow = {host.lower() for host in allow_hosts}
        self._timeout = timeout_seconds

    def _address(self, domain: str) -> tuple[str, int]:
        host, port = domain, 443
        if self._connect_to:
            host, _, port_text = self._connect_to.rpartition(":")
            port = int(port_text)
        try:
            if host.lower() in self._allow:
                addresses = resolve(host, port)
                if not addresses:
                    raise UnsafeUrl(f"the host {host!r} does not resolve")
                return addresses[0], port
            # A new site's DNS may still point elsewhere: refused now, checked again at the next attempt.
            return str(check_addresses(parse_url(f"https://{host}:{port}/"))[0]), port
        except UnsafeUrl as exc:
            raise Transient(f"{host}: {exc}") from exc

    def check(self, domain: str) -> None:
        address, port = self._address(domain)
        try:
            with (
                socket.create_connection((address, port), timeout=self._timeout) as raw,
                self._context.wrap_socket(raw, server_hostname=domain) as tls,
            ):
                tls.sendall(f"GET / HTTP/1.1\r\nHost: {domain}\r\nConnection: close\r\n\r\n".encode())
                status_line = tls.recv(MAX_STATUS_LINE).split(b"\r\n", 1)[0].decode("latin-1")
        except ssl.SSLCertVerificationError as exc:
            raise Transient(f"https://{domain}/ has no valid certificate yet: {exc.verify_message}") from exc
        except (OSError, ssl.SSLError) as exc:
            raise Transient(f"https://{domain}/ does not answer yet: {type(exc).__name__}") from exc
        parts = status_line.split(" ")
        if len(parts) < 2 or not parts[1].isdigit():
            raise Transient(f"https://{domain}/ did not answer HTTP")
        if int(parts[1]) >= 500:
            raise Transient(f"https://{domain}/ answers HTTP {parts[1]}")
