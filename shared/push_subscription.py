"""The keys of a browser's push subscription: the one check the push router and the origin both run.

``PushSubscription.toJSON()`` carries ``keys.p256dh``, the browser's public key, and ``keys.auth``,
its 16-byte auth secret, both base64url. A message can only be encrypted to a p256dh that is an
uncompressed point (``0x04 || X || Y``, 65 bytes) on NIST P-256, so both sides check the curve
equation, not just the length and the prefix: a subscription the edge accepts is one the origin
accepts and the sender can use. Pure integer arithmetic (standard library only), so it runs
unchanged on CPython and in Pyodide; one check costs a few microseconds.

The endpoint is checked separately on each side (``shared.net``): the origin resolves its host,
the edge, which cannot resolve names, checks its syntax.
"""

from __future__ import annotations

from shared.base64url import b64url_decode
from shared.errors import ValidationFailed

AUTH_SECRET_BYTES = 16
P256_POINT_BYTES = 65
# NIST P-256 (FIPS 186-4, D.1.2.3): y^2 = x^3 - 3x + b (mod p).
_P256_P = 2**256 - 2**224 + 2**192 + 2**96 - 1
_P256_B = 0x5AC635D8AA3A93E7B3EBBD55769886BC651D06B0CC53B0F63BCE3C3E27D2604B
INVALID_SUBSCRIPTION = "invalid_subscription"


def is_p256_point(raw: bytes) -> bool:
    """An uncompressed point on P-256, the only form browsers and VAPID use (0x04 || X || Y)."""
    if len(raw) != P256_POINT_BYTES or raw[0] != 0x04:
        return False
    x, y = int.from_bytes(raw[1:33], "big"), int.from_bytes(raw[33:], "big")
    if x >= _P256_P or y >= _P256_P:
        return False
    return (y * y - (x * x * x - 3 * x + _P256_B)) % _P256_P == 0


def invalid(loc: list[str], message: str) -> ValidationFailed:
    """The 422 both sides answer for a subscription they refuse."""
    return ValidationFailed(message, details=[{"loc": loc, "msg": message}], code=INVALID_SUBSCRIPTION)


def _decoded(value: object, name: str) -> tuple[str, bytes]:
    if isinstance(value, str):
        try:
            return value, b64url_decode(value)
        except ValueError:
            pass
    raise invalid(["keys", name], f"keys.{name} is not a base64url string")


def validate_keys(p256dh: object, auth: object) -> tuple[str, str]:
    """``(p256dh, auth)`` as given when both are usable keys; else ``ValidationFailed`` (422)."""
    p256dh_text, point = _decoded(p256dh, "p256dh")
    if not is_p256_point(point):
        raise invalid(["keys", "p256dh"], "keys.p256dh must be an uncompressed P-256 public key (65 bytes)")
    auth_text, secret = _decoded(auth, "auth")
    if len(secret) != AUTH_SECRET_BYTES:
        raise invalid(["keys", "auth"], f"keys.auth must be {AUTH_SECRET_BYTES} bytes")
    return p256dh_text, auth_text
