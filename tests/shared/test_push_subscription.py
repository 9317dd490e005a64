"""The push-subscription keys check that the push router and the origin both run.

Before ``shared.push_subscription`` the edge looked only at the length and the 0x04 prefix of
p256dh while the origin checked the curve equation, so a key off the curve was stored at the edge
and refused by the origin. The agreement test runs each case through both sides' real entry points.
"""

from __future__ import annotations

from typing import Any

import psycopg
import pytest

from edge_workers.core.push import validate_subscription
from functions.platform.adapters.postgres import Database
from functions.platform.push import PushDelivery
from functions.stepperslife.services.push import PushService
from shared.envelope import Identity
from shared.errors import ValidationFailed
from shared.push_subscription import INVALID_SUBSCRIPTION, is_p256_point, validate_keys
from tests.conftest import add_user
from tests.shared.keys import b64url, p256_point

_P = 2**256 - 2**224 + 2**192 + 2**96 - 1
POINT = p256_point(7)
AUTH = b64url(bytes(range(16)))
ENDPOINT = "https://fcm.googleapis.com/fcm/send/contract"


def test_points_on_the_curve_are_keys_and_nothing_else_is() -> None:
    assert is_p256_point(POINT)
    assert is_p256_point(p256_point(2**200 + 12345))
    x, y = POINT[1:33], POINT[33:]
    assert not is_p256_point(b"\x04" + x + (int.from_bytes(y, "big") ^ 1).to_bytes(32, "big"))  # off the curve
    assert not is_p256_point(b"\x02" + x)  # compressed: browsers never send it, the sender cannot use it
    assert not is_p256_point(b"\x05" + x + y)
    assert not is_p256_point(POINT[:-1])
    # (0, sqrt(b)) would be written with x = p as well; a coordinate outside the field is refused.
    assert not is_p256_point(b"\x04" + _P.to_bytes(32, "big") + y)


def test_keys_are_returned_as_given_or_refused_with_one_code() -> None:
    p256dh = b64url(POINT)
    assert validate_keys(p256dh, AUTH) == (p256dh, AUTH)
    assert validate_keys(p256dh + "=", AUTH + "==") == (p256dh + "=", AUTH + "==")  # padding is tolerated
    for bad_p256dh, bad_auth, field in (
        (b64url(b"\x04" + b"\x01" * 64), AUTH, "p256dh"),
        (p256dh, b64url(bytes(15)), "auth"),
        ("not base64!", AUTH, "p256dh"),
        (p256dh, "a", "auth"),
        (None, AUTH, "p256dh"),
        (p256dh, 16, "auth"),
        ("", AUTH, "p256dh"),
    ):
        with pytest.raises(ValidationFailed) as refused:
            validate_keys(bad_p256dh, bad_auth)
        assert refused.value.code == INVALID_SUBSCRIPTION
        assert refused.value.details[0]["loc"] == ["keys", field]


def _edge_verdict(p256dh: str, auth: str) -> str:
    try:
        validate_subscription({"endpoint": ENDPOINT, "expirationTime": None, "keys": {"p256dh": p256dh, "auth": auth}})
    except ValidationFailed as exc:
        return str(exc.code)
    return "accepted"


def _origin_verdict(service: PushService, owner: Identity, p256dh: str, auth: str) -> str:
    try:
        service.subscribe(owner, ENDPOINT, p256dh, auth)
    except ValidationFailed as exc:
        return str(exc.code)
    return "accepted"


class _NoPruning:
    def delete(self, endpoint_hash: str) -> None:
        raise AssertionError("nothing is evicted in these cases")


@pytest.mark.parametrize(
    ("p256dh", "auth", "verdict"),
    [
        (b64url(POINT), AUTH, "accepted"),
        # The case that used to differ: the right length and prefix, but not a point on P-256.
        (b64url(b"\x04" + bytes(range(100, 164))), AUTH, INVALID_SUBSCRIPTION),
        (b64url(b"\x04" + bytes(64)), AUTH, INVALID_SUBSCRIPTION),
        (b64url(b"\x04" + b"\xff" * 64), AUTH, INVALID_SUBSCRIPTION),
        (b64url(POINT)[:-4], AUTH, INVALID_SUBSCRIPTION),
        (b64url(POINT), b64url(bytes(15)), INVALID_SUBSCRIPTION),
        (b64url(POINT), "%%%", INVALID_SUBSCRIPTION),
    ],
)
def test_the_edge_refuses_exactly_what_the_origin_refuses(
    stepperslife_url: str, clean_stepperslife: None, p256dh: str, auth: str, verdict: Any
) -> None:
    with psycopg.connect(stepperslife_url, autocommit=True) as conn:
        owner = Identity(user_id=add_user(conn, "subscriber"), role="user")
    db = Database(stepperslife_url)
    try:
        # The endpoint is public; its DNS check is the origin's own business and not under test here.
        service = PushService(
            db,
            delivery=PushDelivery(None, check_endpoint=lambda url: None),
            pruner=_NoPruning(),
            check_endpoint=lambda url: None,
            site_url="https://x.example",
        )
        assert _edge_verdict(p256dh, auth) == verdict
        assert _origin_verdict(service, owner, p256dh, auth) == verdict
    finally:
        db.close()
