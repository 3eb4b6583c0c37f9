"""HMAC signatures: how merchants sign conversions and events, and how refguard signs webhooks.

Header `X-Refguard-Signature: t=<unix>,v1=<hex HMAC-SHA256(secret, "<t>.<body>")>`.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import time
from collections.abc import Sequence

SIGNATURE_HEADER = "X-Refguard-Signature"
SIGNATURE_TOLERANCE_S = 300


class SignatureInvalid(ValueError):
    pass


def program_signing_secret(secret_key: bytes, seed: str) -> str:
    """A program's signing secret (shown to admins), from the server key and the program's
    signing seed (`programs.signing_seed`: random, replaced by a rotation; the slug for programs
    made before secrets could rotate, so their secret did not change). The database alone holds
    no secret."""
    return hmac.new(secret_key, b"conversions:" + seed.encode(), hashlib.sha256).hexdigest()


def _hmac(secret: str, body: bytes, at: int) -> str:
    return hmac.new(secret.encode(), f"{at}.".encode() + body, hashlib.sha256).hexdigest()


def signature_header(secret: str, body: bytes, at: int) -> str:
    """`t=<unix>,v1=<hex HMAC-SHA256(secret, "<t>.<body>")>`: how conversions are signed by
    merchants, and how refguard signs its webhooks."""
    return f"t={at},v1={_hmac(secret, body, at)}"


def verify_signature(header: str, body: bytes, secret: str | Sequence[str], *,
                     now: float | None = None) -> None:
    """Check `X-Refguard-Signature: t=<unix>,v1=<hex>` against a secret, or against any of
    several (a program's current secret and, during a rotation's overlap, its previous one);
    raises SignatureInvalid."""
    stamp, candidates = signature_parts(header, now=now)
    secrets = [secret] if isinstance(secret, str) else list(secret)
    # Every comparison is made: the time taken tells nothing of which secret matched.
    expected = [_hmac(s, body, stamp) for s in secrets]
    matches = [hmac.compare_digest(e, v) for e in expected for v in candidates]
    if not any(matches):
        raise SignatureInvalid("the signature does not match")


_HEX_MAC = re.compile(r"[0-9a-f]{64}")
SIGNATURE_HEADER_MAX = 1024  # a timestamp and a few v1 values (one per secret in rotation)


def signature_parts(header: str, *, now: float | None = None) -> tuple[int, list[str]]:
    """The timestamp and the v1 values of a signature header, checked without the body (so a
    request whose header cannot verify is refused before its body is read): the timestamp is
    ASCII digits within the tolerance, the v1 values are what `_hmac` can produce (64 lowercase
    hex digits; anything else, non-ASCII text included, can never match). SignatureInvalid
    otherwise."""
    if len(header) > SIGNATURE_HEADER_MAX:
        raise SignatureInvalid("the signature header is too long")
    parts: dict[str, list[str]] = {}
    for item in header.split(","):
        key, _, value = item.strip().partition("=")
        parts.setdefault(key, []).append(value)
    raw = parts.get("t", [""])[0]
    # int() would also take " 5", "1_0", non-ASCII digits and 4,000-digit numbers.
    if not (raw.isascii() and raw.isdigit() and len(raw) <= 12):
        raise SignatureInvalid("the signature has no valid timestamp")
    stamp = int(raw)
    now = time.time() if now is None else now
    if abs(now - stamp) > SIGNATURE_TOLERANCE_S:
        raise SignatureInvalid("the signature timestamp is outside the 5 minute tolerance")
    candidates = [v for v in parts.get("v1", []) if _HEX_MAC.fullmatch(v)]
    if not candidates:
        raise SignatureInvalid("the signature does not match")
    return stamp, candidates


# Share pages (GET /s/{token}): the token names a program's referrer and is signed with a key of
# its own derived from the server's secret, so nobody can open another referrer's page by
# guessing ids. `<program id hex>.<referrer id hex>.<24 hex MAC>`.
_SHARE_MAC_BYTES = 12
_SHARE_TOKEN = re.compile(r"([0-9a-f]{1,16})\.([0-9a-f]{1,16})\.([0-9a-f]{24})")


def _share_mac(secret_key: bytes, program_id: int, referrer_id: int) -> str:
    key = hashlib.blake2b(secret_key, person=b"rg-share").digest()
    return hashlib.blake2b(f"{program_id}.{referrer_id}".encode(), key=key,
                           digest_size=_SHARE_MAC_BYTES).hexdigest()


def share_token(secret_key: bytes, program_id: int, referrer_id: int) -> str:
    """The token of a referrer's share page."""
    return f"{program_id:x}.{referrer_id:x}.{_share_mac(secret_key, program_id, referrer_id)}"


def share_token_ids(secret_key: bytes, token: str) -> tuple[int, int] | None:
    """(program id, referrer id) of a share token, or None when it is not one refguard made."""
    match = _SHARE_TOKEN.fullmatch(token)
    if match is None:
        return None
    program_id, referrer_id = int(match[1], 16), int(match[2], 16)
    if not hmac.compare_digest(match[3], _share_mac(secret_key, program_id, referrer_id)):
        return None
    return program_id, referrer_id
