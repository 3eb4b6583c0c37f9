"""Keyed hashes of personal identifiers: comparable across records, useless without the key."""

from __future__ import annotations

import hashlib
import hmac


def email_hash(secret: bytes, email: str) -> bytes:
    """HMAC-SHA256 of a normalised (trimmed, lower-cased) email address."""
    return hmac.new(secret, email.strip().lower().encode(), hashlib.sha256).digest()
