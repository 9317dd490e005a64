"""Bearer JWTs for API clients: HS256 only, with exp/nbf/iat (small leeway), iss and aud checked.

The algorithm is pinned: the header must say HS256, so ``alg: none`` and the RS256/HS256 confusion
(a public key used as an HMAC secret) are refused before any signature is computed.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from typing import Any

from edge_workers.core.config import JwtSettings
from shared.base64url import b64url_decode
from shared.envelope import ROLES_BY_PRODUCT, STEPPERSLIFE, Identity

MAX_TOKEN_LENGTH = 8192


class InvalidToken(Exception):
    """Why a bearer token was refused; the message is safe to show the client."""


def _segment(text: str, what: str) -> Any:
    try:
        return json.loads(b64url_decode(text))
    except (ValueError, UnicodeDecodeError) as exc:
        raise InvalidToken(f"the token {what} is malformed") from exc


def _number(claims: dict[str, Any], name: str) -> float | None:
    value = claims.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise InvalidToken(f"the {name} claim must be a number")
    return float(value)


def verify_hs256(token: str, settings: JwtSettings, now: float) -> Identity:
    """The identity a valid token carries, or ``InvalidToken``."""
    if len(token) > MAX_TOKEN_LENGTH:
        raise InvalidToken("the token is too long")
    parts = token.split(".")
    if len(parts) != 3:
        raise InvalidToken("the token is not a JWS compact serialisation")
    header = _segment(parts[0], "header")
    if not isinstance(header, dict) or header.get("alg") != "HS256":
        raise InvalidToken("only HS256 tokens are accepted")
    if "crit" in header or str(header.get("typ", "JWT")).upper() != "JWT":
        raise InvalidToken("the token header is not supported")
    expected = hmac.new(
        settings.secret.encode("utf-8"), f"{parts[0]}.{parts[1]}".encode("ascii"), hashlib.sha256
    ).digest()
    try:
        signature = b64url_decode(parts[2])
    except ValueError as exc:
        raise InvalidToken("the token signature is malformed") from exc
    if not hmac.compare_digest(expected, signature):
        raise InvalidToken("the token signature is invalid")
    claims = _segment(parts[1], "payload")
    if not isinstance(claims, dict):
        raise InvalidToken("the token payload is not an object")
    return _identity(claims, settings, now)


def _identity(claims: dict[str, Any], settings: JwtSettings, now: float) -> Identity:
    leeway = settings.leeway_seconds
    expires = _number(claims, "exp")
    if expires is None:
        raise InvalidToken("the token has no exp claim")
    if now > expires + leeway:
        raise InvalidToken("the token has expired")
    not_before = _number(claims, "nbf")
    if not_before is not None and now + leeway < not_before:
        raise InvalidToken("the token is not valid yet")
    issued = _number(claims, "iat")
    if issued is not None and issued > now + leeway:
        raise InvalidToken("the token was issued in the future")
    if claims.get("iss") != settings.issuer:
        raise InvalidToken("the token issuer is not accepted")
    audience = claims.get("aud")
    audiences = audience if isinstance(audience, list) else [audience]
    if settings.audience not in audiences:
        raise InvalidToken("the token audience is not accepted")
    subject, role, email = claims.get("sub"), claims.get("role", "user"), claims.get("email", "")
    product = claims.get("product", STEPPERSLIFE)
    if not isinstance(subject, str) or not subject or not isinstance(email, str):
        raise InvalidToken("the token subject, role or email is malformed")
    if not isinstance(product, str) or role not in ROLES_BY_PRODUCT.get(product, ()):
        raise InvalidToken("the token product or role is malformed")
    return Identity(user_id=subject, role=role, email=email, product=product)
