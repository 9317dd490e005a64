"""Domain names customers may host: one normal form, and every name we must not accept refused.

``normalise_domain`` returns the lower-case A-label (punycode) form, which is what is stored, so two
spellings of one name (``Bücher.de``, ``BÜCHER.de.``, ``xn--bcher-kva.de``) are one row and the
database's unique index is case- and IDN-insensitive for free.

Failure model: every refusal is ``ValidationFailed(code="invalid_domain", details=[{"reason": ...}])``
with one machine-readable reason (``REASONS``); nothing here touches the network. The Public Suffix
List is the copy bundled in the ``publicsuffixlist`` wheel, parsed once on first use.
"""

from __future__ import annotations

import ipaddress
import re
from functools import cache

# idna (the PyPI package, not the standard library codec) implements IDNA 2008 with the UTS #46
# mapping, which is what browsers do: the standard library's "idna" codec is IDNA 2003 (it maps
# "faß.de" to "fass.de", a different registrable name, and accepts symbols IDNA 2008 disallows).
# It is present at run time through pywebpush -> requests.
import idna
from publicsuffixlist import PublicSuffixList

from shared.errors import ValidationFailed

MAX_LENGTH = 253
MAX_LABEL_LENGTH = 63

# Suffixes that never resolve on the public internet (RFC 2606, 6761, 6762, 7686, 8375) or are
# customary for private networks; a site there cannot be served to the world.
RESERVED_SUFFIXES = (
    "local",
    "internal",
    "localdomain",
    "home.arpa",
    "arpa",
    "test",
    "example",
    "invalid",
    "onion",
    "lan",
    "corp",
    "home",
)

REASONS = (
    "empty",
    "too_long",
    "empty_label",
    "label_too_long",
    "hyphen",
    "invalid_character",
    "wildcard",
    "ip_address",
    "single_label",
    "localhost",
    "reserved_suffix",
    "unknown_suffix",
    "public_suffix",
)

_LDH_LABEL = re.compile(r"^[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?$")
# WHATWG URL hosts whose last label is a number are IPv4 addresses (127.1, 0x7f.1): never a domain.
_NUMERIC_LABEL = re.compile(r"^(?:0x[0-9a-f]*|[0-9]+)$")


@cache
def _public_suffix_list() -> PublicSuffixList:
    # accept_unknown=False: a TLD the list does not know is no public suffix at all (publicsuffix()
    # returns None) rather than being assumed to be one. Built lazily: parsing the list costs ~50 ms,
    # which a Lambda that never validates a domain should not pay at import.
    return PublicSuffixList(accept_unknown=False)


def _refuse(reason: str, message: str) -> ValidationFailed:
    return ValidationFailed(message, code="invalid_domain", details=[{"reason": reason}])


def _looks_like_ip(text: str) -> bool:
    candidate = text[1:-1] if text.startswith("[") and text.endswith("]") else text
    try:
        ipaddress.ip_address(candidate)
    except ValueError:
        # "[" only opens an IPv6 literal in a URL host; "host:port" is refused below as a bad character.
        return text.startswith("[")
    return True


def _ascii_label(label: str) -> str:
    """One label (already UTS #46-mapped) as its A-label."""
    if not label:
        raise _refuse("empty_label", "the name has an empty label (two dots in a row, or a leading dot)")
    if label.startswith("-") or label.endswith("-"):
        raise _refuse("hyphen", "a label cannot start or end with a hyphen")
    try:
        ascii_label = idna.alabel(label).decode("ascii")
    except idna.IDNAError as exc:
        if "too long" in str(exc).lower():
            raise _refuse("label_too_long", f"a label has at most {MAX_LABEL_LENGTH} characters") from exc
        raise _refuse("invalid_character", f"{label!r} is not a valid label") from exc
    if len(ascii_label) > MAX_LABEL_LENGTH:
        raise _refuse("label_too_long", f"a label has at most {MAX_LABEL_LENGTH} characters")
    # idna already enforces this; checked again because it is what the database CHECK requires.
    if not _LDH_LABEL.match(ascii_label):
        raise _refuse("invalid_character", f"{label!r} is not a valid label")
    return ascii_label


def normalise_domain(text: str) -> str:
    """The lower-case A-label form of ``text``, or ValidationFailed saying why it cannot be hosted."""
    if not isinstance(text, str):
        raise _refuse("empty", "a domain name is text")
    name = text.strip()
    if not name:
        raise _refuse("empty", "give a domain name")
    # Before any decoding, so that a huge input costs nothing. A U-label name is never longer than its
    # A-label form, save for characters UTS #46 maps to nothing, which no one types by accident.
    if len(name) > MAX_LENGTH + 1:
        raise _refuse("too_long", f"a domain name has at most {MAX_LENGTH} characters")
    if "*" in name:
        raise _refuse("wildcard", "wildcard names cannot be added; add each name")
    if _looks_like_ip(name) or _looks_like_ip(name.rstrip(".")):
        raise _refuse("ip_address", "an IP address is not a domain name")
    try:
        # UTS #46: case folding, full-width forms, ideographic full stops to "."; STD3 rules refuse
        # anything outside letters, digits and hyphens ("_", " ", "/", "@", ...).
        mapped = idna.uts46_remap(name, std3_rules=True, transitional=False)
    except idna.IDNAError as exc:
        raise _refuse("invalid_character", "the name has characters a domain name cannot have") from exc
    # The fully qualified form's one trailing dot is the same name.
    if mapped.endswith("."):
        mapped = mapped[:-1]
    ascii_labels = [_ascii_label(label) for label in mapped.split(".")]
    domain = ".".join(ascii_labels)
    if len(domain) > MAX_LENGTH:
        raise _refuse("too_long", f"a domain name has at most {MAX_LENGTH} characters")
    if _NUMERIC_LABEL.match(ascii_labels[-1]):
        raise _refuse("ip_address", "a name ending in a number is an IP address, not a domain name")
    if domain == "localhost" or domain.endswith(".localhost"):
        raise _refuse("localhost", "localhost names point at the machine itself")
    if len(ascii_labels) == 1:
        raise _refuse("single_label", "give a full domain name, such as example.com")
    for suffix in RESERVED_SUFFIXES:
        if domain == suffix or domain.endswith("." + suffix):
            raise _refuse("reserved_suffix", f".{suffix} names are not reachable on the public internet")
    psl = _public_suffix_list()
    if psl.publicsuffix(domain) is None:
        raise _refuse("unknown_suffix", "the name does not end in a known top-level domain")
    if psl.privatesuffix(domain) is None:
        raise _refuse("public_suffix", "the name is a public suffix; add a name registered under it")
    return domain
