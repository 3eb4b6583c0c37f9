"""Conversions: validation of a conversion body.

Shared by `POST /api/v1/conversions` and `refguard import`. A conversion is idempotent on
(program, event_id): the first store answers created, the same body again answers the stored
conversion, another body under the same event id is a conflict (the storage is in
tracker.intake.queries; `body_hash` here is what tells the bodies apart). Customers' events
(tracker.asks.events) are validated with the same pieces: FieldInvalid, opaque_text, event_time
and body_hash.
"""

from __future__ import annotations

import contextlib
import hashlib
import ipaddress
import json
import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from tracker.formats import CONVERSION_TYPES, MAX_UA, clean_text

FUTURE_TOLERANCE = timedelta(minutes=5)
_CURRENCY = re.compile(r"^[A-Z]{3}$")
_UUID = re.compile(r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")
_CODE = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
_FIELDS = {"program", "event_id", "type", "customer_id", "email", "amount", "currency",
           "occurred_at", "click_id", "visitor_id", "referral_code", "ip", "user_agent",
           "original_event_id", "customer_name"}
NAME_MAX = 200  # a customer's display name (tracker.programs.queries.NAME_MAX for referrers)


class FieldInvalid(ValueError):
    """A body (a conversion's, an event's: the API's or an import line's) with `field` at
    fault."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field


@dataclass(frozen=True, slots=True)
class ConversionInput:
    program: str
    event_id: str
    type: str
    customer_id: str
    email: str | None
    amount: int | None
    currency: str | None
    occurred_at: datetime
    click_id: str | None
    visitor_id: str | None
    referral_code: str | None
    ip: str | None
    user_agent: str | None
    original_event_id: str | None
    body_hash: bytes
    # The customer's display name as of this conversion (the latest one is kept per customer).
    customer_name: str | None = None


def opaque_text(body: dict[str, Any], key: str, *, required: bool,
                limit: int = 128) -> str | None:
    """A merchant's id or other opaque text: 1 to `limit` printable characters."""
    value = body.get(key)
    if value is None:
        if required:
            raise FieldInvalid(key, f"{key} is required")
        return None
    if not isinstance(value, str) or not 1 <= len(value) <= limit or not value.isprintable():
        raise FieldInvalid(key, f"{key} must be 1 to {limit} printable characters")
    return value


def event_time(raw: object, now: datetime, *, require_time: bool) -> datetime:
    """When something happened: RFC 3339 with an offset, from 2000 to 5 minutes ahead of
    `now` (`now` itself when absent and not `require_time`)."""
    if raw is None:
        if require_time:
            raise FieldInvalid("occurred_at", "occurred_at is required")
        return now
    if not isinstance(raw, str):
        raise FieldInvalid("occurred_at", "occurred_at must be an RFC 3339 timestamp")
    try:
        occurred_at = datetime.fromisoformat(raw)
    except ValueError:
        raise FieldInvalid("occurred_at",
                           "occurred_at must be an RFC 3339 timestamp") from None
    if occurred_at.tzinfo is None:
        raise FieldInvalid("occurred_at", "occurred_at needs a time zone (Z or +hh:mm)")
    if occurred_at > now + FUTURE_TOLERANCE:
        raise FieldInvalid("occurred_at", "occurred_at is more than 5 minutes ahead")
    if occurred_at.year < 2000:
        raise FieldInvalid("occurred_at", "occurred_at is too far in the past")
    return occurred_at


def _ip(raw: object) -> str | None:
    if raw is None:
        return None
    if isinstance(raw, str):
        with contextlib.suppress(ValueError):
            return str(ipaddress.ip_address(raw))
    raise FieldInvalid("ip", "ip must be an IPv4 or IPv6 address")


def _display_name(raw: object) -> str | None:
    if raw is None:
        return None
    text = raw.strip() if isinstance(raw, str) else ""
    if not text or len(text) > NAME_MAX or not text.isprintable():
        raise FieldInvalid("customer_name",
                                f"customer_name must be 1 to {NAME_MAX} printable characters")
    return text


def body_hash(body: dict[str, Any]) -> bytes:
    """What tells two bodies under one event id apart: sha256 of the body's canonical JSON
    (keys sorted at every level, no spaces), so key order and layout do not matter."""
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    return hashlib.sha256(canonical.encode()).digest()


def parse_conversion(body: object, *, now: datetime | None = None,
                     require_time: bool = False) -> ConversionInput:
    """Validate a conversion body (the API's, or an import line)."""
    if not isinstance(body, dict):
        raise FieldInvalid("body", "the body must be a JSON object")
    unknown = sorted(set(body) - _FIELDS)
    if unknown:
        raise FieldInvalid(unknown[0], f"unknown field {unknown[0]!r}")
    now = now or datetime.now(UTC)
    program = opaque_text(body, "program", required=True, limit=63)
    event_id = opaque_text(body, "event_id", required=True)
    ctype = body.get("type")
    if ctype not in CONVERSION_TYPES:
        raise FieldInvalid("type", f"type must be one of {', '.join(CONVERSION_TYPES)}")
    customer_id = opaque_text(body, "customer_id", required=True)
    email = opaque_text(body, "email", required=False, limit=320)
    if email is not None and "@" not in email:
        raise FieldInvalid("email", "email is not an email address")
    amount = body.get("amount")
    if amount is not None and (isinstance(amount, bool) or not isinstance(amount, int)
                               or not 0 <= amount <= 10**15):
        raise FieldInvalid("amount", "amount must be a non-negative integer in minor units")
    currency = body.get("currency")
    if currency is not None and (not isinstance(currency, str) or not _CURRENCY.match(currency)):
        raise FieldInvalid("currency", "currency must be an ISO 4217 code like USD")
    occurred_at = event_time(body.get("occurred_at"), now, require_time=require_time)
    click_id = body.get("click_id")
    if click_id is not None and (not isinstance(click_id, str) or not _UUID.match(click_id)):
        raise FieldInvalid("click_id", "click_id must be a UUID (the rg_cid value)")
    visitor_id = opaque_text(body, "visitor_id", required=False, limit=64)
    code = body.get("referral_code")
    if code is not None and (not isinstance(code, str) or not _CODE.match(code)):
        raise FieldInvalid("referral_code", "referral_code is not a link code")
    ip = _ip(body.get("ip"))
    user_agent = body.get("user_agent")
    if user_agent is not None and not isinstance(user_agent, str):
        raise FieldInvalid("user_agent", "user_agent must be a string")
    original = opaque_text(body, "original_event_id", required=False)
    customer_name = _display_name(body.get("customer_name"))
    return ConversionInput(
        program=program or "", event_id=event_id or "", type=ctype, customer_id=customer_id or "",
        email=email, amount=amount, currency=currency, occurred_at=occurred_at,
        click_id=click_id.lower() if click_id else None, visitor_id=visitor_id,
        referral_code=code, ip=ip, user_agent=clean_text(user_agent or "", MAX_UA),
        original_event_id=original, body_hash=body_hash(body),
        customer_name=customer_name,
    )
