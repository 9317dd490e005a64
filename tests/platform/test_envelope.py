"""The signed envelope, on its own: what it accepts and every way it refuses."""

from __future__ import annotations

import pytest

from shared import envelope
from shared.envelope import Identity
from shared.errors import Unauthorized

SECRET = "s" * 40
ALICE = Identity(user_id="5f0e7a9c-0000-4000-8000-000000000001", role="user", email="alice@example.com")


def signed(**overrides: object) -> dict[str, str]:
    args: dict[str, object] = {
        "method": "POST",
        "path": "/events?b=2&a=1",
        "now": 1_000_000,
        "identity": ALICE,
        "body": b"{}",
    }
    args.update(overrides)
    return envelope.sign(SECRET, **args)  # type: ignore[arg-type]


def check(headers: dict[str, str], **overrides: object) -> Identity | None:
    args: dict[str, object] = {
        "method": "POST",
        "path": "/events?a=1&b=2",
        "headers": headers,
        "body": b"{}",
        "now": 1_000_010,
    }
    args.update(overrides)
    return envelope.verify(SECRET, **args)  # type: ignore[arg-type]


def test_round_trip_with_query_in_any_order() -> None:
    assert check(signed()) == ALICE


def test_anonymous_round_trip() -> None:
    assert check(signed(identity=None)) is None


def test_percent_encoding_of_the_path_does_not_matter() -> None:
    headers = signed(path="/events/caf%C3%A9")
    assert check(headers, path="/events/café") == ALICE


@pytest.mark.parametrize(
    ("change", "code"),
    [
        ({"method": "PATCH"}, "bad_signature"),
        ({"path": "/events/other"}, "bad_signature"),
        ({"body": b'{"x": 1}'}, "bad_signature"),
        ({"now": 1_000_000 + 61}, "stale_request"),
        ({"now": 1_000_000 - 61}, "stale_request"),
    ],
)
def test_any_change_is_refused(change: dict[str, object], code: str) -> None:
    with pytest.raises(Unauthorized) as refused:
        check(signed(), **change)
    assert refused.value.code == code


def test_swapped_identity_is_refused() -> None:
    headers = signed()
    headers[envelope.IDENTITY_HEADER] = signed(identity=Identity(user_id="x", role="admin"))[envelope.IDENTITY_HEADER]
    with pytest.raises(Unauthorized, match="invalid"):
        check(headers)


def test_missing_or_garbled_headers_are_refused() -> None:
    with pytest.raises(Unauthorized) as missing:
        check({})
    assert missing.value.code == "unsigned_request"
    with pytest.raises(Unauthorized):
        check({**signed(), envelope.TIMESTAMP_HEADER: "-5"})


def test_another_secret_is_refused() -> None:
    headers = envelope.sign("t" * 40, method="POST", path="/events", now=1_000_000, identity=ALICE, body=b"{}")
    with pytest.raises(Unauthorized):
        check(headers, path="/events")


def test_empty_secret_is_a_programming_error() -> None:
    with pytest.raises(ValueError):
        envelope.sign("", method="GET", path="/", now=0, identity=None)


@pytest.mark.parametrize("raw", ['{"user_id": "", "role": "user"}', '{"user_id": "x", "role": "root"}', "[]"])
def test_identity_parsing_is_strict(raw: str) -> None:
    with pytest.raises(ValueError):
        Identity.from_json(raw)
