"""Strict base64url (RFC 4648 section 5), as JWTs, Web Push keys and VAPID keys use it.

Standard library only: the edge (JWTs, VAPID key, subscriptions) and the functions (subscriptions)
decode with this one function, so a key one side accepts is a key the other side accepts.
"""

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
