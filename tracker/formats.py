"""The shared vocabulary of formats: timestamps, client text, slugs and conversion types.

Every domain speaks these; they live here so that no domain reaches into another for them.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime

CONVERSION_TYPES = ("signup", "trial", "purchase", "renewal", "refund", "chargeback")
# The types that earn credit; refunds and chargebacks reverse earlier ones.
CREDITED_TYPES = CONVERSION_TYPES[:4]
SLUG_RE = re.compile(r"[a-z0-9][a-z0-9_-]{0,62}")
MAX_UA = 1024  # characters of a user agent kept, from a click or a conversion


def rfc3339(value: datetime) -> str:
    """`2026-11-23T12:00:00.123Z`: UTC with milliseconds, as every answer writes time."""
    value = value.astimezone(UTC)
    # The year zero-padded by hand: strftime's %Y gives "10" for the year 10 on glibc.
    return (f"{value.year:04d}" + value.strftime("-%m-%dT%H:%M:%S.")
            + f"{value.microsecond // 1000:03d}Z")


def clean_text(value: str, limit: int) -> str | None:
    """Free text from a client (a user agent, a header) as PostgreSQL can store it, cut to
    `limit` characters; None when nothing is left."""
    if not value:
        return None
    if len(value) > limit:
        value = value[:limit]
    # PostgreSQL text takes neither NUL nor lone surrogates (undecodable bytes from the wire).
    if "\x00" in value:
        value = value.replace("\x00", "")
    if not value.isascii():
        value = value.encode("utf-8", "surrogateescape").decode("utf-8", "replace")
    return value or None


# ISO 4217 minor units where they are not 2.
DECIMALS = {**dict.fromkeys(("BIF", "CLP", "DJF", "GNF", "ISK", "JPY", "KMF", "KRW", "PYG",
                             "RWF", "UGX", "VND", "VUV", "XAF", "XOF", "XPF"), 0),
            **dict.fromkeys(("BHD", "IQD", "JOD", "KWD", "LYD", "OMR", "TND"), 3)}


def money(amount: int | None, currency: str | None) -> str:
    """Minor units as an amount in its currency: money(123450, "USD") is "1,234.50 USD"."""
    if amount is None:
        return "—"
    code = (currency or "").upper()
    places = DECIMALS.get(code, 2)
    major, minor = divmod(abs(amount), 10**places)
    sign = "-" if amount < 0 else ""
    text = f"{sign}{major:,}" + (f".{minor:0{places}d}" if places else "")
    return f"{text} {code}".strip()
