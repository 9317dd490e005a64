"""Strict base64url (RFC 4648 section 5), as JWTs, Web Push keys and VAPID keys use it."""

from __future__ import annotations

import base64
import binascii
import re

_B64URL = re.compile(r"^[A-Za-z0-9_-]*={0,2}$")


def b64url_decode(text: str) -> bytes:
    """Decode with or without padding; ``ValueError`` for any other alphabet or a bad length."""
    if not _B64URL.match(text):
        raise ValueError("not base64url")
    bare = text.rstrip("=")
    if len(bare) % 4 == 1:
        raise ValueError("impossible base64 length")
    try:
        return base64.urlsafe_b64decode(bare + "=" * (-len(bare) % 4))
    except binascii.Error as exc:
        raise ValueError("not base64url") from exc


def is_p256_public_key(raw: bytes) -> bool:
    """An uncompressed P-256 point, the only form browsers and VAPID use (0x04 || X || Y)."""
    return len(raw) == 65 and raw[0] == 0x04
