"""Outbound URL safety (SSRF): a URL we fetch on someone's behalf must point at the public internet.

Standard library only, so the edge and the functions can share it. The host is resolved and every
address it resolves to is checked, so a public name that points at 127.0.0.1, a cloud metadata
address or a private network is refused as surely as the literal address would be.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Callable, Collection
from urllib.parse import urlsplit

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
Resolver = Callable[[str, int], list[str]]

MAX_URL_LENGTH = 2048


class UnsafeUrl(ValueError):
    """The URL is malformed, not https, or reaches an address that is not public."""


def resolve(host: str, port: int) -> list[str]:
    """Every address ``host`` resolves to (A and AAAA)."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError) as exc:
        raise UnsafeUrl(f"the host {host!r} does not resolve") from exc
    return [str(info[4][0]) for info in infos]


def is_public_address(address: IPAddress) -> bool:
    if isinstance(address, ipaddress.IPv6Address):
        # IPv4-mapped, 6to4 and Teredo addresses could smuggle 127.0.0.1 inside an IPv6 address.
        embedded = [address.ipv4_mapped, address.sixtofour, *(address.teredo or ())]
        if any(inner is not None and not is_public_address(inner) for inner in embedded):
            return False
        if address.ipv4_mapped is not None:
            return True
    # is_global excludes private, loopback, link-local (169.254.169.254, the metadata service),
    # shared (100.64/10), reserved and unspecified ranges; multicast is never a web server.
    return address.is_global and not address.is_multicast


def check_public_https_url(url: str, *, allow_hosts: Collection[str] = (), resolver: Resolver = resolve) -> None:
    """Raise ``UnsafeUrl`` unless ``url`` is https and its host resolves only to public addresses.

    ``allow_hosts`` lists host names accepted as they are, plain http included: it exists so that
    tests and the dev stack can use a fake service on 127.0.0.1, and is empty in production."""
    if len(url) > MAX_URL_LENGTH:
        raise UnsafeUrl("the URL is too long")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise UnsafeUrl("the URL is malformed") from exc
    host = (parts.hostname or "").lower()
    if not host:
        raise UnsafeUrl("the URL has no host")
    if parts.username is not None or parts.password is not None:
        raise UnsafeUrl("the URL carries credentials")
    if host in {name.lower() for name in allow_hosts} and parts.scheme in ("http", "https"):
        return
    if parts.scheme != "https":
        raise UnsafeUrl("the URL must use https")
    addresses = resolver(host, port or 443)
    if not addresses:
        raise UnsafeUrl(f"the host {host!r} does not resolve")
    for text in addresses:
        try:
            address = ipaddress.ip_address(text.split("%", 1)[0])  # drop an IPv6 zone id
        except ValueError as exc:
            raise UnsafeUrl(f"the host {host!r} resolves to something that is not an address") from exc
        if not is_public_address(address):
            raise UnsafeUrl(f"the host {host!r} resolves to a non-public address")
