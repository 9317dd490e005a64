"""Outbound URL safety (SSRF): the parse-and-check half of the platform's outbound-request guard.

Standard library only: the edge checks push endpoints with it (it cannot resolve names), the
functions' guard (``functions/platform/outbound.py``) adds resolution and connects to the address it
checked. A URL we fetch on someone's behalf must name a public internet host, in one spelling that
every parser reads the same way:

- the URL: at most ``MAX_URL_LENGTH`` characters of printable ASCII (no whitespace, control
  characters, backslashes or non-ASCII: an IDN host is sent as its ``xn--`` form), an allowed scheme
  and port, no userinfo (``user@``), no percent-encoding in the authority (``%31%32%37.0.0.1``, zone
  ids ``fe80::1%25eth0``);
- a host name: LDH labels of 1-63 characters, at most 253 in all, at least two labels, no trailing
  dot, not numeric in disguise (``127.1``, ``0x7f.1``, ``2130706433``, which resolvers read as IPv4),
  not a local-only name (``localhost``, ``.local``, ``.internal``, ...);
- an address (literal or resolved): public. Python's ``is_global`` (3.11) calls several non-public
  IPv6 forms global, so each form that embeds an IPv4 address is unpacked and the IPv4 address
  checked (IPv4-mapped ``::ffff:a.b.c.d``, SIIT ``::ffff:0:a.b.c.d``, 6to4 ``2002::/16``, Teredo
  ``2001::/32``, NAT64 ``64:ff9b::/96``), and the forms no web server uses are refused outright
  (IPv4-compatible ``::a.b.c.d``, local-use NAT64 ``64:ff9b:1::/48``, deprecated site-local
  ``fec0::/10``, multicast).
"""

from __future__ import annotations

import ipaddress
import re
import socket
from collections.abc import Callable, Collection
from typing import NamedTuple
from urllib.parse import urlsplit

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
Resolver = Callable[[str, int], list[str]]

MAX_URL_LENGTH = 2048
MAX_HOST_LENGTH = 253
HTTPS_PORTS: tuple[int, ...] = (443,)
WEB_PORTS: tuple[int, ...] = (443, 80)
_DEFAULT_PORTS = {"https": 443, "http": 80}
_PRINTABLE_ASCII = re.compile(r"^[\x21-\x7e]+$")
_LABEL = re.compile(r"^(?!-)[a-z0-9-]{1,63}(?<!-)$")
# Names that are numbers in disguise: resolvers read "127.1", "0x7f.1" or "2130706433" as IPv4.
_NUMERIC_LABEL = re.compile(r"^(0x[0-9a-f]*|[0-9]+)$")
_LOCAL_NAMES = ("localhost",)
_LOCAL_SUFFIXES = (".localhost", ".local", ".internal", ".localdomain", ".home.arpa", ".lan", ".intranet", ".corp")

_SIIT = ipaddress.ip_network("::ffff:0:0:0/96")
_IPV4_COMPATIBLE = ipaddress.ip_network("::/96")
_NAT64 = ipaddress.ip_network("64:ff9b::/96")
_NAT64_LOCAL = ipaddress.ip_network("64:ff9b:1::/48")
_SITE_LOCAL = ipaddress.ip_network("fec0::/10")


class UnsafeUrl(ValueError):
    """The URL is malformed, ambiguous, not allowed, or reaches an address that is not public."""


class Target(NamedTuple):
    """A URL that passed the syntax checks: what to connect to and what to ask for."""

    scheme: str
    host: str  # lower-case name, or an address without brackets
    port: int
    request_target: str  # path and query, as sent on the request line
    address: IPAddress | None  # the host, when it is a literal address

    @property
    def authority(self) -> str:
        """The Host header (and TLS name) for this target."""
        host = f"[{self.host}]" if isinstance(self.address, ipaddress.IPv6Address) else self.host
        return host if self.port == _DEFAULT_PORTS[self.scheme] else f"{host}:{self.port}"


def embedded_ipv4(address: ipaddress.IPv6Address) -> list[ipaddress.IPv4Address]:
    """The IPv4 addresses an IPv6 transition form carries (Teredo: server and client), if any."""
    if address.ipv4_mapped is not None:
        return [address.ipv4_mapped]
    if address in _SIIT or address in _NAT64:
        return [ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)]
    if address.sixtofour is not None:
        return [address.sixtofour]
    if address.teredo is not None:
        return list(address.teredo)
    return []


def is_public_address(address: IPAddress) -> bool:
    if isinstance(address, ipaddress.IPv6Address):
        if address in _IPV4_COMPATIBLE or address in _NAT64_LOCAL or address in _SITE_LOCAL:
            return False
        inner = embedded_ipv4(address)
        if inner:
            return all(is_public_address(part) for part in inner)
    # is_global excludes private, loopback, link-local (169.254.169.254, the metadata service),
    # shared (100.64/10), reserved and unspecified ranges; multicast is never a web server.
    return address.is_global and not address.is_multicast


def parse_url(
    url: str, *, schemes: Collection[str] = ("https",), ports: Collection[int] = HTTPS_PORTS, public: bool = True
) -> Target:
    """The URL's parts, or ``UnsafeUrl`` when its spelling is ambiguous or not allowed. A literal
    address is checked here; a name is only checked for its syntax (``check_addresses`` does the rest).
    ``public=False`` skips the host checks: only for ``allow_hosts`` (tests, local development)."""
    if not isinstance(url, str) or not url or len(url) > MAX_URL_LENGTH:
        raise UnsafeUrl(f"the URL must be at most {MAX_URL_LENGTH} characters")
    if not _PRINTABLE_ASCII.match(url) or "\\" in url:
        raise UnsafeUrl("the URL has whitespace, control, backslash or non-ASCII characters")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise UnsafeUrl("the URL is malformed") from exc
    scheme = parts.scheme.lower()
    if scheme not in schemes or scheme not in _DEFAULT_PORTS:
        raise UnsafeUrl(f"the URL must use {' or '.join(sorted(schemes))}")
    if "@" in parts.netloc:
        raise UnsafeUrl("the URL carries credentials")
    if "%" in parts.netloc:
        raise UnsafeUrl("the URL's host is percent-encoded or has a zone id")
    port = _DEFAULT_PORTS[scheme] if port is None else port
    if port not in ports:
        raise UnsafeUrl(f"the URL's port must be one of {', '.join(map(str, sorted(ports)))}")
    host = (parts.hostname or "").lower()
    if not host:
        raise UnsafeUrl("the URL has no host")
    address = _literal_address(host, bracketed=parts.netloc.startswith("["))
    if not public:
        pass
    elif address is None:
        _check_name(host)
    elif not is_public_address(address):
        raise UnsafeUrl("the URL's address is not public")
    request_target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    return Target(scheme, host, port, request_target, address)


def _literal_address(host: str, *, bracketed: bool) -> IPAddress | None:
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        if bracketed:
            raise UnsafeUrl("the URL's IPv6 address is malformed") from None
        return None
    if isinstance(address, ipaddress.IPv6Address) != bracketed:
        raise UnsafeUrl("the URL's address is malformed")
    return address


def _check_name(host: str) -> None:
    if len(host) > MAX_HOST_LENGTH:
        raise UnsafeUrl(f"the host name is longer than {MAX_HOST_LENGTH} characters")
    labels = host.split(".")
    if len(labels) < 2 or not all(_LABEL.match(label) for label in labels):
        raise UnsafeUrl("the host is not a fully qualified name of 1-63 character labels")
    if _NUMERIC_LABEL.match(labels[-1]):
        raise UnsafeUrl("the host is a number in disguise")
    if host in _LOCAL_NAMES or host.endswith(_LOCAL_SUFFIXES):
        raise UnsafeUrl("the host is a local name")


def resolve(host: str, port: int) -> list[str]:
    """Every address ``host`` resolves to (A and AAAA)."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError) as exc:
        raise UnsafeUrl(f"the host {host!r} does not resolve") from exc
    return [str(info[4][0]) for info in infos]


def check_addresses(target: Target, *, resolver: Resolver = resolve) -> list[IPAddress]:
    """The addresses to connect to for ``target``, every one of them public, or ``UnsafeUrl``."""
    if target.address is not None:
        return [target.address]
    texts = resolver(target.host, target.port)
    if not texts:
        raise UnsafeUrl(f"the host {target.host!r} does not resolve")
    addresses: list[IPAddress] = []
    for text in texts:
        try:
            address = ipaddress.ip_address(text.split("%", 1)[0])  # a link-local answer's zone id
        except ValueError as exc:
            raise UnsafeUrl(f"the host {target.host!r} resolves to something that is not an address") from exc
        if not is_public_address(address):
            raise UnsafeUrl(f"the host {target.host!r} resolves to a non-public address")
        addresses.append(address)
    return addresses


def check_public_https_url(url: str, *, allow_hosts: Collection[str] = (), resolver: Resolver = resolve) -> None:
    """Raise ``UnsafeUrl`` unless ``url`` is https on port 443 and its host resolves only to public addresses.

    ``allow_hosts`` lists host names accepted as they are, plain http and any port included: it
    exists so that tests and the dev stack can use a fake service on 127.0.0.1, and is empty in
    production."""
    if is_allowed_host(url, allow_hosts):
        return
    check_addresses(parse_url(url), resolver=resolver)


def is_allowed_host(url: str, allow_hosts: Collection[str]) -> bool:
    """Whether ``url`` is http(s) to one of ``allow_hosts`` (tests and local development only)."""
    if not allow_hosts:
        return False
    try:
        parts = urlsplit(url)
        host = (parts.hostname or "").lower()
        parts.port  # noqa: B018 - raises on a malformed port
    except ValueError:
        return False
    return parts.scheme in _DEFAULT_PORTS and host in {name.lower() for name in allow_hosts}
