"""Real P-256 public keys for tests, derived from fixed private values so that cases stay stable."""

from __future__ import annotations

import base64

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec


def p256_point(private_value: int) -> bytes:
    """The uncompressed public point (0x04 || X || Y) of the private value ``private_value``."""
    key = ec.derive_private_key(private_value, ec.SECP256R1())
    return key.public_key().public_bytes(serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint)


def b64url(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()
