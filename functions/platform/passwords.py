"""Password hashing with the standard library's scrypt (memory-hard; no native dependency)."""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
from functools import cache

# n=2**14, r=8 costs 16 MiB and ~50 ms: affordable per login in a 512 MiB Lambda, slow for a cracker.
_N, _R, _P = 2**14, 8, 1
_MAXMEM = 64 * 1024 * 1024


def _b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode("ascii")


def hash_password(password: str) -> str:
    salt = secrets.token_bytes(16)
    digest = hashlib.scrypt(password.encode("utf-8"), salt=salt, n=_N, r=_R, p=_P, maxmem=_MAXMEM, dklen=32)
    return f"scrypt${_N}${_R}${_P}${_b64(salt)}${_b64(digest)}"


def verify_password(password: str, encoded: str) -> bool:
    try:
        scheme, n, r, p, salt, expected = encoded.split("$")
        if scheme != "scrypt":
            return False
        digest = hashlib.scrypt(
            password.encode("utf-8"),
            salt=base64.b64decode(salt),
            n=int(n),
            r=int(r),
            p=int(p),
            maxmem=_MAXMEM,
            dklen=32,
        )
    except (ValueError, TypeError):
        return False
    return hmac.compare_digest(digest, base64.b64decode(expected))


@cache
def dummy_hash() -> str:
    """Verified against when the e-mail is unknown, so a login takes as long whether the user exists."""
    return hash_password(secrets.token_urlsafe(16))
