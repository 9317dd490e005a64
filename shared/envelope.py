"""The signed envelope between the edge gateway and the origin API.

The origin trusts only the gateway. The gateway signs every forwarded request with HMAC-SHA256 over
the method, the path with its query, a timestamp, the forwarded identity and the body's SHA-256; the
origin recomputes the signature and refuses unsigned, tampered or stale requests. The identity reaches
the origin only inside this envelope, so a client cannot claim one by sending headers of its own.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from collections.abc import Mapping
from typing import NamedTuple
from urllib.parse import parse_qsl, quote, unquote, urlencode

from shared.errors import Unauthorized

TIMESTAMP_HEADER = "x-agistack-timestamp"
IDENTITY_HEADER = "x-agistack-identity"
SIGNATURE_HEADER = "x-agistack-signature"
ENVELOPE_HEADERS = (TIMESTAMP_HEADER, IDENTITY_HEADER, SIGNATURE_HEADER)
SIGNATURE_VERSION = "v1"
DEFAULT_MAX_SKEW_SECONDS = 60
STEPPERSLIFE = "stepperslife"
AGISTAFFERS = "agistaffers"
# Each product is a separate business with its own accounts: an identity belongs to exactly one, and
# its role is one of that product's roles.
ROLES_BY_PRODUCT: dict[str, tuple[str, ...]] = {
    STEPPERSLIFE: ("user", "customer", "admin"),
    AGISTAFFERS: ("owner", "member", "admin"),
}
ROLES = ROLES_BY_PRODUCT[STEPPERSLIFE]


class Identity(NamedTuple):
    """Who made a request, as established at the edge from a session or a token, and for which product."""

    user_id: str
    role: str
    email: str = ""
    # Sessions stored before products were told apart carry no product: they were SteppersLife's.
    product: str = STEPPERSLIFE
    # The account's session generation when the session was opened (functions/platform/sessions.py):
    # the origin refuses it once the account's generation has moved on. Older sessions carry none: 0.
    generation: int = 0

    def to_json(self) -> str:
        return json.dumps(
            {
                "user_id": self.user_id,
                "role": self.role,
                "email": self.email,
                "product": self.product,
                "generation": self.generation,
            },
            sort_keys=True,
        )

    @classmethod
    def from_json(cls, text: str) -> Identity:
        data = json.loads(text)
        if not isinstance(data, dict):
            raise ValueError("identity must be an object")
        user_id, role, email = data.get("user_id"), data.get("role"), data.get("email", "")
        product, generation = data.get("product", STEPPERSLIFE), data.get("generation", 0)
        if not isinstance(user_id, str) or not user_id or not isinstance(email, str):
            raise ValueError("identity is malformed")
        if not isinstance(product, str) or role not in ROLES_BY_PRODUCT.get(product, ()):
            raise ValueError("identity is malformed")
        if isinstance(generation, bool) or not isinstance(generation, int) or generation < 0:
            raise ValueError("identity is malformed")
        return cls(user_id=user_id, role=role, email=email, product=product, generation=generation)


def _b64encode(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def _b64decode(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def canonical_target(path: str) -> str:
    """The path in one percent-encoding, without a trailing slash, with its query pairs decoded and sorted.

    The gateway sees the raw request line while the origin framework hands over decoded path
    parameters and query pairs in its own order, and API Gateway (like ``chalice local``) routes
    ``/events/`` as ``/events``; both sides sign this form so that they agree.
    """
    bare, _, query = path.partition("?")
    pairs = sorted(parse_qsl(query, keep_blank_values=True))
    bare = quote(unquote(bare), safe="/")
    if len(bare) > 1:
        bare = bare.rstrip("/") or "/"
    return f"{bare}?{urlencode(pairs, quote_via=quote)}" if pairs else bare


def _canonical(method: str, path: str, timestamp: str, identity_field: str, body: bytes) -> bytes:
    fields = [method.upper(), canonical_target(path), timestamp, identity_field, hashlib.sha256(body).hexdigest()]
    return "\n".join([SIGNATURE_VERSION, *fields]).encode("utf-8")


def _signature(secret: str, message: bytes) -> str:
    digest = hmac.new(secret.encode("utf-8"), message, hashlib.sha256).hexdigest()
    return f"{SIGNATURE_VERSION}={digest}"


def sign(
    secret: str, *, method: str, path: str, now: int, identity: Identity | None, body: bytes = b""
) -> dict[str, str]:
    """Headers that the gateway adds to a request it forwards. ``path`` includes the query string."""
    if not secret:
        raise ValueError("the envelope secret is empty")
    identity_field = _b64encode(identity.to_json().encode("utf-8")) if identity else ""
    timestamp = str(int(now))
    return {
        TIMESTAMP_HEADER: timestamp,
        IDENTITY_HEADER: identity_field,
        SIGNATURE_HEADER: _signature(secret, _canonical(method, path, timestamp, identity_field, body)),
    }


def verify(
    secret: str,
    *,
    method: str,
    path: str,
    headers: Mapping[str, str],
    body: bytes,
    now: int,
    max_skew_seconds: int = DEFAULT_MAX_SKEW_SECONDS,
) -> Identity | None:
    """Check a forwarded request; return its identity (None for anonymous) or raise ``Unauthorized``.

    ``headers`` must be looked up case-insensitively by the caller's mapping or hold lower-case names.
    """
    if not secret:
        raise ValueError("the envelope secret is empty")
    timestamp = headers.get(TIMESTAMP_HEADER, "")
    signature = headers.get(SIGNATURE_HEADER, "")
    identity_field = headers.get(IDENTITY_HEADER, "")
    if not timestamp or not signature:
        raise Unauthorized("request is not signed by the gateway", code="unsigned_request")
    if not timestamp.isdigit() or abs(now - int(timestamp)) > max_skew_seconds:
        raise Unauthorized("request signature is stale", code="stale_request")
    expected = _signature(secret, _canonical(method, path, timestamp, identity_field, body))
    if not hmac.compare_digest(expected, signature):
        raise Unauthorized("request signature is invalid", code="bad_signature")
    if not identity_field:
        return None
    try:
        return Identity.from_json(_b64decode(identity_field).decode("utf-8"))
    except (ValueError, UnicodeDecodeError) as exc:
        # A valid signature over a malformed identity means a gateway bug, not a client error.
        raise Unauthorized("forwarded identity is malformed", code="bad_identity") from exc
