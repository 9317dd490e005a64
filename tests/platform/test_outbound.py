"""The outbound-request guard: every non-public address (embedded forms too), every ambiguous
spelling, ports a web service does not use, DNS rebinding and redirects, against small fake servers
on 127.0.0.1 that speak real HTTP."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from functions.platform.outbound import GuardedHttpClient, OutboundUnavailable
from shared.net import WEB_PORTS, UnsafeUrl, check_public_https_url, parse_url

PUBLIC_V4 = "93.184.216.34"


def dns(table: dict[str, list[str]]) -> Any:
    def resolver(host: str, port: int) -> list[str]:
        if host not in table:
            raise UnsafeUrl(f"the host {host!r} does not resolve")
        return table[host]

    return resolver


NAMES = {
    "push.example.com": [PUBLIC_V4, "2606:2800:220:1:248:1893:25c8:1946"],
    "loopback.example.com": ["127.0.0.1"],
    "metadata.example.com": ["169.254.169.254"],
    "mixed.example.com": [PUBLIC_V4, "10.0.0.7"],
    "mapped.example.com": ["::ffff:127.0.0.1"],
    "nat64.example.com": ["64:ff9b::a9fe:a9fe"],
    "sitelocal.example.com": ["fec0::1"],
    "zone.example.com": ["fe80::1%eth0"],
    "garbage.example.com": ["not-an-address"],
    "127.0.0.1.nip.io": ["127.0.0.1"],
}

REFUSED = [
    # Literal IPv4 outside public space.
    "https://127.0.0.1/x",
    "https://10.1.2.3/x",
    "https://172.16.0.1/x",
    "https://192.168.0.1/x",
    "https://100.64.0.1/x",
    "https://169.254.169.254/latest/meta-data/",
    "https://0.0.0.0/x",
    "https://192.0.2.1/x",
    "https://198.18.0.1/x",
    "https://224.0.0.1/x",
    "https://255.255.255.255/x",
    # IPv6 outside public space, and the forms Python 3.11's is_global calls global.
    "https://[::1]/x",
    "https://[::]/x",
    "https://[fe80::1]/x",
    "https://[fc00::1]/x",
    "https://[ff02::1]/x",
    "https://[::7f00:1]/x",  # IPv4-compatible 127.0.0.1
    "https://[::a9fe:a9fe]/x",  # IPv4-compatible 169.254.169.254
    "https://[::808:808]/x",  # IPv4-compatible, even of a public address: deprecated, no server uses it
    "https://[::ffff:127.0.0.1]/x",  # IPv4-mapped
    "https://[::ffff:a9fe:a9fe]/x",
    "https://[::ffff:0:7f00:1]/x",  # SIIT
    "https://[64:ff9b::7f00:1]/x",  # NAT64 well-known prefix
    "https://[64:ff9b::a9fe:a9fe]/x",
    "https://[64:ff9b:1::808:808]/x",  # local-use NAT64
    "https://[fec0::1]/x",  # deprecated site-local
    "https://[2002:7f00:1::1]/x",  # 6to4 of 127.0.0.1
    "https://[2002:a9fe:a9fe::1]/x",
    "https://[2001:0:4136:e378:8000:63bf:80ff:fffe]/x",  # Teredo, client 127.0.0.1
    "https://[2001:0:4136:e378:8000:63bf:f5ff:fff8]/x",  # Teredo, client 10.0.0.7
    "https://[2002:a00:1::1]/x",  # 6to4 of 10.0.0.1
    "https://[64:ff9b::10.0.0.1]/x",  # NAT64, dotted
    "https://[0:0:0:0:0:ffff:7f00:1]/x",  # IPv4-mapped, spelled out
    "https://[::ffff:169.254.169.254]/x",
    "https://[fec0:0:0:1::1]/x",  # site-local
    "https://[ff05::1]/x",  # multicast, site scope
    "https://100.127.255.254/x",  # top of the CGNAT 100.64/10
    "https://239.255.255.250/x",  # multicast (SSDP)
    # Spellings parsers read differently.
    "https://%31%32%37.0.0.1/x",
    "https://127.0.0.1%2e/x",
    "https://[fe80::1%25eth0]/x",
    "https://push\u3002example.com/x",  # ideographic full stop
    "https://push\uff0eexample.com/x",  # fullwidth full stop
    "https://push\uff61example.com/x",  # halfwidth ideographic full stop
    "https://user:pw@push.example.com/x",
    "https://push.example.com@127.0.0.1/x",
    "https://@push.example.com/x",
    "https:\\\\push.example.com/x",
    "https://push.example.com\\@127.0.0.1/x",
    "https://push.example.com /x",
    "https://push.example.com/x y",
    "https://push.example.com/\tx",
    "https://push.example.com\x00.evil.com/x",
    "https://" + "a" * 64 + ".example.com/x",
    "https://" + ".".join(["a" * 60] * 5) + ".com/x",
    "https://push.example.com./x",
    "https://push..example.com/x",
    "https://-push.example.com/x",
    "https://127.1/x",
    "https://0x7f.1/x",
    "https://2130706433/x",
    "https://0177.0.0.1/x",
    "https://0x7f000001/x",  # hex dword
    "https://017700000001/x",  # octal dword
    "https://2852039166/x",  # decimal 169.254.169.254
    "https://0xa9.0xfe.0xa9.0xfe/x",
    "https://0/x",
    "https://127.0.0.1.nip.io/x",  # a public wildcard DNS name for 127.0.0.1
    "https://localhost/x",
    "https://printer.local/x",
    "https://db.internal/x",
    "https://intranet/x",
    "https://[127.0.0.1]/x",
    "https://[::1/x",
    # Schemes and ports a push service does not use.
    "http://push.example.com/x",
    "ftp://push.example.com/x",
    "file:///etc/passwd",
    "gopher://push.example.com/x",
    "https://push.example.com:8443/x",
    "https://push.example.com:22/x",
    "https://push.example.com:0/x",
    "https://push.example.com:99999/x",
    "https:///x",
    "https://push.example.com/" + "x" * 2100,
    # Names that resolve somewhere they must not.
    "https://loopback.example.com/x",
    "https://metadata.example.com/x",
    "https://mixed.example.com/x",
    "https://mapped.example.com/x",
    "https://nat64.example.com/x",
    "https://sitelocal.example.com/x",
    "https://zone.example.com/x",
    "https://garbage.example.com/x",
    "https://nowhere.example.com/x",
]

ACCEPTED = [
    "https://push.example.com/send/abc",
    "https://PUSH.Example.COM:443/send?x=1",
    "https://8.8.8.8/x",
    "https://[2606:4700:4700::1111]/x",
    "https://[::ffff:8.8.8.8]/x",
    "https://[64:ff9b::808:808]/x",
    "https://[2002:808:808::1]/x",
    "https://xn--bcher-kva.example/x",
]


def test_the_table_is_large_enough() -> None:
    assert len(REFUSED) >= 30 and len(ACCEPTED) >= 5


@pytest.mark.parametrize("url", REFUSED)
def test_unsafe_urls_are_refused(url: str) -> None:
    with pytest.raises(UnsafeUrl):
        check_public_https_url(url, resolver=dns(NAMES))
    with pytest.raises(UnsafeUrl):
        GuardedHttpClient(resolver=dns(NAMES)).check(url)


@pytest.mark.parametrize("url", ACCEPTED)
def test_public_urls_pass(url: str) -> None:
    check_public_https_url(url, resolver=dns({**NAMES, "xn--bcher-kva.example": [PUBLIC_V4]}))


def test_web_ports_are_a_choice_of_the_caller() -> None:
    parse_url("http://status.example.com/health", schemes=("http", "https"), ports=WEB_PORTS)
    with pytest.raises(UnsafeUrl):
        parse_url("http://status.example.com:8080/health", schemes=("http", "https"), ports=WEB_PORTS)


def test_the_allow_list_is_exact() -> None:
    check_public_https_url("http://127.0.0.1:8080/push/x", allow_hosts={"127.0.0.1"})
    with pytest.raises(UnsafeUrl):
        check_public_https_url("http://127.0.0.2:8080/push/x", allow_hosts={"127.0.0.1"})


# --- connections ----------------------------------------------------------------------------------


class _Recorder(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server

    def do_GET(self) -> None:
        self.server.seen.append((self.command, self.path, self.headers.get("Host", "")))
        if self.path.startswith("/redirect-to/"):
            location = self.path.removeprefix("/redirect-to/")
            self._answer(302, b"", {"Location": location})
        else:
            self._answer(200, b"hello")

    do_POST = do_GET

    def _answer(self, status: int, body: bytes, headers: dict[str, str] | None = None) -> None:
        if self.command == "POST":
            self.rfile.read(int(self.headers.get("Content-Length") or 0))
        self.send_response(status)
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    seen: list[tuple[str, str, str]]


@pytest.fixture
def server() -> Iterator[_Server]:
    httpd = _Server(("127.0.0.1", 0), _Recorder)
    httpd.seen = []
    thread = threading.Thread(target=httpd.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    yield httpd
    httpd.shutdown()
    httpd.server_close()


def port_of(server: _Server) -> int:
    return int(server.server_address[1])


def test_the_connection_goes_to_the_checked_address_with_the_name_as_host(server: _Server) -> None:
    port = port_of(server)
    client = GuardedHttpClient(allow_hosts={"fake-push.test"}, resolver=dns({"fake-push.test": ["127.0.0.1"]}))
    response = client.request("GET", f"http://fake-push.test:{port}/send", headers={"Host": "evil.example"})
    assert (response.status, response.body) == (200, b"hello")
    assert server.seen == [("GET", "/send", f"fake-push.test:{port}")]


def test_dns_rebinding_never_reaches_the_second_answer(server: _Server) -> None:
    """The name is public when checked and 127.0.0.1 (where the fake listens) the moment after."""
    port = port_of(server)
    answers = [[PUBLIC_V4], ["127.0.0.1"]]
    calls: list[str] = []

    def rebinding(host: str, _: int) -> list[str]:
        calls.append(host)
        return answers[min(len(calls), len(answers)) - 1]

    client = GuardedHttpClient(schemes=("http",), ports=(port,), resolver=rebinding)
    # The checked (public, here unreachable) address is the one connected to: it fails, and the
    # name is not resolved again to find 127.0.0.1.
    with pytest.raises(OutboundUnavailable):
        client.request("GET", f"http://rebind.example.com:{port}/x", timeout=0.5)
    assert calls == ["rebind.example.com"]
    # The next request resolves anew, gets 127.0.0.1, and is refused before connecting.
    with pytest.raises(UnsafeUrl):
        client.request("GET", f"http://rebind.example.com:{port}/x", timeout=0.5)
    assert server.seen == []


def test_redirects_are_not_followed_unless_allowed_and_each_hop_is_checked(server: _Server) -> None:
    port = port_of(server)
    base = f"http://fake.test:{port}"
    client = GuardedHttpClient(allow_hosts={"fake.test"}, resolver=dns({"fake.test": ["127.0.0.1"]}))

    # A push service never redirects: the 302 is the answer, nothing is followed.
    first = client.request("POST", f"{base}/redirect-to/{base}/landed", body=b"x")
    assert first.status == 302 and [path for _, path, _ in server.seen] == [f"/redirect-to/{base}/landed"]

    # Allowed: followed, and the next hop is an allowed host again.
    followed = client.request("GET", f"{base}/redirect-to/{base}/landed", max_redirects=1)
    assert (followed.status, followed.body, followed.url) == (200, b"hello", f"{base}/landed")

    # A hop to the metadata service is refused before any connection is made.
    with pytest.raises(UnsafeUrl):
        client.request("GET", f"{base}/redirect-to/http://169.254.169.254/latest/meta-data/", max_redirects=3)
    with pytest.raises(UnsafeUrl):
        client.request("GET", f"{base}/redirect-to/http://127.0.0.1:{port}/landed", max_redirects=3)
    # Too many redirects: the last 3xx is the answer.
    loop = client.request("GET", f"{base}/redirect-to/{base}/redirect-to/{base}/landed", max_redirects=1)
    assert loop.status == 302
