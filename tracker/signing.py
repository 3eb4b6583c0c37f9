"""HMAC signatures: how merchants sign conversions and events, and how refguard signs webhooks.

Header `X-Refguard-Signature: t=<unix>,v1=<hex HMAC-SHA256(secret, "<t>.<body>")>`.
"""

from __future__ import annotations

import hashlib
import hmac
import time

SIGNATURE_HEADER = "X-Refguard-Signature"
SIGNATURE_TOLERANCE_S = 300


class SignatureInvalid(ValueError):
    pass


def program_signing_secret(secret_key: bytes, program: str) -> str:
    """The secret a merchant signs a program's conversions with (shown to admins)."""
    return hmac.new(secret_key, b"conversions:" + program.encode(), hashlib.sha256).hexdigest()


def _hmac(secret: str, body: bytes, at: int) -> str:
    return hmac.new(secret.encode(), f"{at}.".encode() + body, hashlib.sha256).hexdigest()


def signature_header(secret: str, body: bytes, at: int) -> str:
    """`t=<unix>,v1=<hex HMAC-SHA256(secret, "<t>.<body>")>`: how conversions are signed by
    merchants, and how refguard signs its webhooks."""
    return f"t={at},v1={_hmac(secret, body, at)}"


def verify_signature(header: str, body: bytes, secret: str, *, now: float | None = None) -> None:
    """Check `X-Refguard-Signature: t=<unix>,v1=<hex>`; raises SignatureInvalid."""
    parts: dict[str, list[str]] = {}
    for item in header.split(","):
        key, _, value = item.strip().partition("=")
        parts.setdefault(key, []).append(value)
    try:
        stamp = int(parts["t"][0])
    except (KeyError, ValueError):
        raise SignatureInvalid("the signature has no valid timestamp") from None
    now = time.time() if now is None else now
    if abs(now - stamp) > SIGNATURE_TOLERANCE_S:
        raise SignatureInvalid("the signature timestamp is outside the 5 minute tolerance")
    expected = _hmac(secret, body, stamp)
    if not any(hmac.compare_digest(expected, v) for v in parts.get("v1", [])):
        raise SignatureInvalid("the signature does not match")
