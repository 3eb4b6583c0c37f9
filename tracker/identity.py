"""Keyed hashes of personal identifiers: comparable across records, useless without the key."""

from __future__ import annotations

import hashlib
import hmac

# Providers that ignore dots in the local part (and an alias domain of theirs).
_DOTLESS = {"gmail.com": "gmail.com", "googlemail.com": "gmail.com"}


def canonical_email(email: str) -> str:
    """The mailbox an address reaches: trimmed and lower-cased, without a `+tag` (sub-
    addressing, which the large providers all deliver to the same mailbox), and without dots
    where the provider ignores them (Gmail). So `Jo.Doe+promo@googlemail.com` is
    `jodoe@gmail.com`: a second account under an alias is the same person."""
    local, at, domain = email.strip().lower().rpartition("@")
    if not at or not local:
        return email.strip().lower()
    local = local.split("+", 1)[0] or local
    if domain in _DOTLESS:
        domain = _DOTLESS[domain]
        local = local.replace(".", "") or local
    return f"{local}@{domain}"


def email_hash(secret: bytes, email: str) -> bytes:
    """HMAC-SHA256 of the canonical email address."""
    return hmac.new(secret, canonical_email(email).encode(), hashlib.sha256).digest()
