"""Conversions: validation, request signatures and idempotent storage.

Shared by `POST /api/v1/conversions` and `refguard import`. A conversion is idempotent on
(program, event_id): the first store answers created, the same body again answers the stored
conversion, another body under the same event id is a conflict.
"""

from __future__ import annotations

import hashlib
import ipaddress
import json
import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg

from tracker.formats import CONVERSION_TYPES, MAX_UA, clean_text

FUTURE_TOLERANCE = timedelta(minutes=5)
_CURRENCY = re.compile(r"^[A-Z]{3}$")
_UUID = re.compile(r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")
_CODE = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
_FIELDS = {"program", "event_id", "type", "customer_id", "email", "amount", "currency",
           "occurred_at", "click_id", "visitor_id", "referral_code", "ip", "user_agent",
           "original_event_id"}


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


def _opaque(body: dict[str, Any], key: str, *, required: bool, limit: int = 128) -> str | None:
    value = body.get(key)
    if value is None:
        if required:
            raise ConversionInvalid(key, f"{key} is required")
        return None
    if not isinstance(value, str) or not 1 <= len(value) <= limit or not value.isprintable():
        raise ConversionInvalid(key, f"{key} must be 1 to {limit} printable characters")
    return value


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
    raw_time = body.get("occurred_at")
    if raw_time is None:
        if require_time:
            raise ConversionInvalid("occurred_at", "occurred_at is required")
        occurred_at = now
    else:
        if not isinstance(raw_time, str):
            raise ConversionInvalid("occurred_at", "occurred_at must be an RFC 3339 timestamp")
        try:
            occurred_at = datetime.fromisoformat(raw_time)
        except ValueError:
            raise ConversionInvalid("occurred_at",
                                    "occurred_at must be an RFC 3339 timestamp") from None
        if occurred_at.tzinfo is None:
            raise ConversionInvalid("occurred_at", "occurred_at needs a time zone (Z or +hh:mm)")
        if occurred_at > now + FUTURE_TOLERANCE:
            raise ConversionInvalid("occurred_at", "occurred_at is more than 5 minutes ahead")
        if occurred_at.year < 2000:
            raise ConversionInvalid("occurred_at", "occurred_at is too far in the past")
    click_id = body.get("click_id")
    if click_id is not None and (not isinstance(click_id, str) or not _UUID.match(click_id)):
        raise ConversionInvalid("click_id", "click_id must be a UUID (the rg_cid value)")
    visitor_id = _opaque(body, "visitor_id", required=False, limit=64)
    code = body.get("referral_code")
    if code is not None and (not isinstance(code, str) or not _CODE.match(code)):
        raise ConversionInvalid("referral_code", "referral_code is not a link code")
    ip = body.get("ip")
    if ip is not None:
        try:
            ip = str(ipaddress.ip_address(ip)) if isinstance(ip, str) else None
        except ValueError:
            ip = None
        if ip is None:
            raise ConversionInvalid("ip", "ip must be an IPv4 or IPv6 address")
    user_agent = body.get("user_agent")
    if user_agent is not None and not isinstance(user_agent, str):
        raise ConversionInvalid("user_agent", "user_agent must be a string")
    original = _opaque(body, "original_event_id", required=False)
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    return ConversionInput(
        program=program or "", event_id=event_id or "", type=ctype, customer_id=customer_id or "",
        email=email, amount=amount, currency=currency, occurred_at=occurred_at,
        click_id=click_id.lower() if click_id else None, visitor_id=visitor_id,
        referral_code=code, ip=ip, user_agent=clean_text(user_agent or "", MAX_UA),
        original_event_id=original, body_hash=hashlib.sha256(canonical.encode()).digest(),
    )


@dataclass(frozen=True, slots=True)
class Stored:
    row: dict[str, Any]
    created: bool
    conflict: bool


_RETURNING = """id, event_id, type, customer_id, amount, currency, occurred_at, body_hash,
                received_at"""


async def store_conversion(conn: asyncpg.Connection, program_id: int, conv: ConversionInput,
                           email_hash: bytes | None, *, source: str = "api") -> Stored:
    """Insert idempotently; concurrent identical posts store exactly one row."""
    row = await conn.fetchrow(
        f"""INSERT INTO conversions (program_id, event_id, type, customer_id, email_hash, amount,
                currency, occurred_at, click_id, visitor_id, referral_code, original_event_id, ip,
                user_agent, body_hash, source)
            VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9::uuid, $10, $11, $12, $13::inet, $14, $15,
                    $16)
            ON CONFLICT (program_id, event_id) DO NOTHING
            RETURNING {_RETURNING}""",
        program_id, conv.event_id, conv.type, conv.customer_id, email_hash, conv.amount,
        conv.currency, conv.occurred_at, conv.click_id, conv.visitor_id, conv.referral_code,
        conv.original_event_id, conv.ip, conv.user_agent, conv.body_hash, source,
    )
    if row is not None:
        return Stored(dict(row), created=True, conflict=False)
    existing = await conn.fetchrow(
        f"SELECT {_RETURNING} FROM conversions WHERE program_id = $1 AND event_id = $2",
        program_id, conv.event_id,
    )
    assert existing is not None  # noqa: S101 (the conflicting row exists; rows are never deleted)
    return Stored(dict(existing), created=False,
                  conflict=bytes(existing["body_hash"]) != conv.body_hash)


_STAGE_COLUMNS = ("n", "program_id", "event_id", "type", "customer_id", "email_hash", "amount",
                  "currency", "occurred_at", "click_id", "visitor_id", "referral_code",
                  "original_event_id", "ip", "user_agent", "body_hash")
_STORED = ", ".join(_STAGE_COLUMNS[1:])


async def store_conversions(
    conn: asyncpg.Connection, items: list[tuple[int, ConversionInput, bytes | None]],
    *, source: str = "import",
) -> list[str]:
    """Many conversions in one round trip; per item "created", "existing" or "conflict".

    The same rules as `store_conversion`: the first body stored under an event id wins; the
    same body again is "existing", another body is a "conflict" (also within one batch).
    """
    records = [
        (i, pid, c.event_id, c.type, c.customer_id, digest, c.amount, c.currency, c.occurred_at,
         c.click_id, c.visitor_id, c.referral_code, c.original_event_id, c.ip, c.user_agent,
         c.body_hash)
        for i, (pid, c, digest) in enumerate(items)
    ]
    async with conn.transaction():
        await conn.execute(
            """CREATE TEMP TABLE IF NOT EXISTS conversions_stage (
                   n int, program_id bigint, event_id text, type text, customer_id text,
                   email_hash bytea, amount bigint, currency text, occurred_at timestamptz,
                   click_id uuid, visitor_id text, referral_code text, original_event_id text,
                   ip inet, user_agent text, body_hash bytea) ON COMMIT DELETE ROWS""")
        await conn.copy_records_to_table("conversions_stage", records=records,
                                         columns=_STAGE_COLUMNS)
        created = await conn.fetch(
            f"""INSERT INTO conversions ({_STORED}, source)
                SELECT DISTINCT ON (program_id, event_id) {_STORED}, $1
                FROM conversions_stage ORDER BY program_id, event_id, n
                ON CONFLICT (program_id, event_id) DO NOTHING
                RETURNING program_id, event_id""", source)
        stored = await conn.fetch(
            """SELECT s.n, c.body_hash = s.body_hash AS same FROM conversions_stage s
               JOIN conversions c ON c.program_id = s.program_id AND c.event_id = s.event_id""")
    new_keys = {(r["program_id"], r["event_id"]) for r in created}
    same = {r["n"]: r["same"] for r in stored}
    statuses: list[str] = []
    claimed: set[tuple[int, str]] = set()
    for i, (pid, conv, _digest) in enumerate(items):
        key = (pid, conv.event_id)
        if key in new_keys and key not in claimed:
            claimed.add(key)
            statuses.append("created")
        else:
            statuses.append("existing" if same.get(i) else "conflict")
    return statuses
