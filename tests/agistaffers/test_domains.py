"""Domain normalisation: what is stored for a good name, and why each bad one is refused."""

from __future__ import annotations

import pytest

from functions.agistaffers.services.domains import REASONS, normalise_domain
from shared.errors import ValidationFailed

GOOD = [
    ("example.com", "example.com"),
    ("EXAMPLE.COM", "example.com"),
    ("Example.Com.", "example.com"),
    ("  example.com  ", "example.com"),
    ("www.example.com", "www.example.com"),
    ("a.b.c.example.com", "a.b.c.example.com"),
    ("example.co.uk", "example.co.uk"),
    ("shop.example.co.uk", "shop.example.co.uk"),
    ("my-site.example.org", "my-site.example.org"),
    ("123.example.com", "123.example.com"),
    ("Bücher.de", "xn--bcher-kva.de"),
    ("BÜCHER.DE", "xn--bcher-kva.de"),
    ("xn--bcher-kva.de", "xn--bcher-kva.de"),
    ("XN--BCHER-KVA.DE", "xn--bcher-kva.de"),
    # IDNA 2008: ß is its own letter (IDNA 2003 and Python's codec make it "fass.de").
    ("faß.de", "xn--fa-hia.de"),
    ("例え.jp", "xn--r8jz45g.jp"),
    ("пример.рф", "xn--e1afmkfd.xn--p1ai"),
    ("example.xn--p1ai", "example.xn--p1ai"),
    # Full-width letters and the ideographic full stop map to their ASCII forms (UTS #46).
    ("\uff25\uff38\uff21\uff2d\uff30\uff2c\uff25.com", "example.com"),  # full-width EXAMPLE
    ("example。com", "example.com"),
    ("me.github.io", "me.github.io"),
    ("a" * 63 + ".com", "a" * 63 + ".com"),
    (".".join(["a" * 63] * 3) + "." + "b" * 57 + ".com", ".".join(["a" * 63] * 3) + "." + "b" * 57 + ".com"),
]

BAD = [
    ("", "empty"),
    ("   ", "empty"),
    (".", "empty_label"),
    ("a" * 300 + ".com", "too_long"),
    (".".join(["a" * 63] * 3) + "." + "b" * 58 + ".com", "too_long"),
    ("a" * 64 + ".com", "label_too_long"),
    ("example..com", "empty_label"),
    (".example.com", "empty_label"),
    ("example.com..", "empty_label"),
    ("-example.com", "hyphen"),
    ("example-.com", "hyphen"),
    ("www.-example.com", "hyphen"),
    ("ex_ample.com", "invalid_character"),
    ("exa mple.com", "invalid_character"),
    ("example.com/path", "invalid_character"),
    ("user@example.com", "invalid_character"),
    ("example.com:8080", "invalid_character"),
    ("ex!ample.com", "invalid_character"),
    ("ab--cd.com", "invalid_character"),
    ("xn--zzzzzz.com", "invalid_character"),
    ("ex\u200dample.com", "invalid_character"),
    ("*.example.com", "wildcard"),
    ("*", "wildcard"),
    ("192.0.2.1", "ip_address"),
    ("192.0.2.1.", "ip_address"),
    ("127.1", "ip_address"),
    ("0x7f.0.0.1", "ip_address"),
    ("example.123", "ip_address"),
    ("::1", "ip_address"),
    ("2001:db8::1", "ip_address"),
    ("[2001:db8::1]", "ip_address"),
    ("[::1]", "ip_address"),
    ("com", "single_label"),
    ("intranet", "single_label"),
    ("localhost", "localhost"),
    ("LOCALHOST.", "localhost"),
    ("app.localhost", "localhost"),
    ("printer.local", "reserved_suffix"),
    ("db.internal", "reserved_suffix"),
    ("box.localdomain", "reserved_suffix"),
    ("router.home.arpa", "reserved_suffix"),
    ("1.2.3.in-addr.arpa", "reserved_suffix"),
    ("site.test", "reserved_suffix"),
    ("www.example", "reserved_suffix"),
    ("nothing.invalid", "reserved_suffix"),
    ("hidden.onion", "reserved_suffix"),
    ("nas.lan", "reserved_suffix"),
    ("mail.corp", "reserved_suffix"),
    ("tv.home", "reserved_suffix"),
    ("foo.notatld", "unknown_suffix"),
    ("example.c0m", "unknown_suffix"),
    ("co.uk", "public_suffix"),
    ("github.io", "public_suffix"),
]


@pytest.mark.parametrize(("given", "stored"), GOOD)
def test_good_names_are_stored_in_their_a_label_form(given: str, stored: str) -> None:
    assert normalise_domain(given) == stored


@pytest.mark.parametrize(("given", "reason"), BAD)
def test_bad_names_are_refused_with_their_reason(given: str, reason: str) -> None:
    with pytest.raises(ValidationFailed) as caught:
        normalise_domain(given)
    assert caught.value.code == "invalid_domain"
    assert caught.value.details == [{"reason": reason}]


def test_every_reason_is_exercised() -> None:
    assert {reason for _, reason in BAD} == set(REASONS)


def test_spellings_of_one_name_normalise_to_one_form() -> None:
    spellings = ["Bücher.de", "BÜCHER.de.", "xn--bcher-kva.de", "XN--BCHER-KVA.DE", "bücher.DE"]
    assert {normalise_domain(name) for name in spellings} == {"xn--bcher-kva.de"}


def test_the_normal_form_is_a_fixed_point() -> None:
    for given, _ in GOOD:
        stored = normalise_domain(given)
        assert normalise_domain(stored) == stored
