"""Conversions: validation of a conversion body.

Shared by `POST /api/v1/conversions` and `refguard import`. A conversion is idempotent on
(program, event_id): the first store answers created, the same body again answers the stored
conversion, another body under the same event id is a conflict (the storage is in
tracker.intake.queries; `body_hash` here is what tells the bodies apart).
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


class ConversionInvalid(ValueError):
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


def _opaque(body: dict[str, Any], key: str, *, required: bool, limit: int = 128) -> str | None:
    value = body.get(key)
    if value is None:
        if required:
            raise ConversionInvalid(key, f"{key} is required")
        return None
    if not isinstance(value, str) or not 1 <= len(value) <= limit or not value.isprintable():
        raise ConversionInvalid(key, f"{key} must be 1 to {limit} printable characters")
    return value


def _occurred_at(raw: object, now: datetime, *, require_time: bool) -> datetime:
    if raw is None:
        if require_time:
            raise ConversionInvalid("occurred_at", "occurred_at is required")
        return now
    if not isinstance(raw, str):
        raise ConversionInvalid("occurred_at", "occurred_at must be an RFC 3339 timestamp")
    try:
        occurred_at = datetime.fromisoformat(raw)
    except ValueError:
        raise ConversionInvalid("occurred_at",
                                "occurred_at must be an RFC 3339 timestamp") from None
    if occurred_at.tzinfo is None:
        raise ConversionInvalid("occurred_at", "occurred_at needs a time zone (Z or +hh:mm)")
    if occurred_at > now + FUTURE_TOLERANCE:
        raise ConversionInvalid("occurred_at", "occurred_at is more than 5 minutes ahead")
    if occurred_at.year < 2000:
        raise ConversionInvalid("occurred_at", "occurred_at is too far in the past")
    return occurred_at


def _ip(raw: object) -> str | None:
    if raw is None:
        return None
    if isinstance(raw, str):
        with contextlib.suppress(ValueError):
            return str(ipaddress.ip_address(raw))
    raise ConversionInvalid("ip", "ip must be an IPv4 or IPv6 address")


def _display_name(raw: object) -> str | None:
    if raw is None:
        return None
    text = raw.strip() if isinstance(raw, str) else ""
    if not text or len(text) > NAME_MAX or not text.isprintable():
        raise ConversionInvalid("customer_name",
                                f"customer_name must be 1 to {NAME_MAX} printable characters")
    return text


def parse_conversion(body: object, *, now: datetime | None = None,
                     require_time: bool = False) -> ConversionInput:
    """Validate a conversion body (the API's, or an import line)."""
    if not isinstance(body, dict):
        raise ConversionInvalid("body", "the body must be a JSON object")
    unknown = sorted(set(body) - _FIELDS)
    if unknown:
        raise ConversionInvalid(unknown[0], f"unknown field {unknown[0]!r}")
    now = now or datetime.now(UTC)
    program = _opaque(body, "program", required=True, limit=63)
    event_id = _opaque(body, "event_id", required=True)
    ctype = body.get("type")
    if ctype not in CONVERSION_TYPES:
        raise ConversionInvalid("type", f"type must be one of {', '.join(CONVERSION_TYPES)}")
    customer_id = _opaque(body, "customer_id", required=True)
    email = _opaque(body, "email", required=False, limit=320)
    if email is not None and "@" not in email:
        raise ConversionInvalid("email", "email is not an email address")
    amount = body.get("amount")
    if amount is not None and (isinstance(amount, bool) or not isinstance(amount, int)
                               or not 0 <= amount <= 10**15):
        raise ConversionInvalid("amount", "amount must be a non-negative integer in minor units")
    currency = body.get("currency")
    if currency is not None and (not isinstance(currency, str) or not _CURRENCY.match(currency)):
        raise ConversionInvalid("currency", "currency must be an ISO 4217 code like USD")
    occurred_at = _occurred_at(body.get("occurred_at"), now, require_time=require_time)
    click_id = body.get("click_id")
    if click_id is not None and (not isinstance(click_id, str) or not _UUID.match(click_id)):
        raise ConversionInvalid("click_id", "click_id must be a UUID (the rg_cid value)")
    visitor_id = _opaque(body, "visitor_id", required=False, limit=64)
    code = body.get("referral_code")
    if code is not None and (not isinstance(code, str) or not _CODE.match(code)):
        raise ConversionInvalid("referral_code", "referral_code is not a link code")
    ip = _ip(body.get("ip"))
    user_agent = body.get("user_agent")
    if user_agent is not None and not isinstance(user_agent, str):
        raise ConversionInvalid("user_agent", "user_agent must be a string")
    original = _opaque(body, "original_event_id", required=False)
    customer_name = _display_name(body.get("customer_name"))
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    return ConversionInput(
        program=program or "", event_id=event_id or "", type=ctype, customer_id=customer_id or "",
        email=email, amount=amount, currency=currency, occurred_at=occurred_at,
        click_id=click_id.lower() if click_id else None, visitor_id=visitor_id,
        referral_code=code, ip=ip, user_agent=clean_text(user_agent or "", MAX_UA),
        original_event_id=original, body_hash=hashlib.sha256(canonical.encode()).digest(),
        customer_name=customer_name,
    )
