"""Authentication, roles, pagination and small validators shared by the API handlers."""

from __future__ import annotations

import base64
import binascii
import functools
import re
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime
from typing import Any

from aiohttp import web

from tracker.auth import Principal
from tracker.programs import queries
from tracker.web import keys
from tracker.web.api.errors import ApiError, invalid, json_errors

PRINCIPAL = web.RequestKey("principal", Principal)

ALL_ROLES = frozenset({"admin", "integration", "finance", "viewer"})
EXTERNAL_ID_MAX = 128

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def requires(*roles: str) -> Callable[[Handler], Handler]:
    """Bearer-token authentication and a role check; admin may do everything."""
    allowed = frozenset(roles) | {"admin"}

    def wrap(handler: Handler) -> Handler:
        @functools.wraps(handler)
        async def guarded(request: web.Request) -> web.StreamResponse:
            request[PRINCIPAL] = await authenticate(request, allowed)
            return await handler(request)

        checked = json_errors(guarded)
        checked.roles = allowed  # type: ignore[attr-defined]
        return checked

    return wrap


async def authenticate(request: web.Request, allowed: frozenset[str]) -> Principal:
    """The bearer token's principal, if its role is allowed; else a 401 or 403."""
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise ApiError(401, "unauthorized", "missing bearer token")
    found = await request.config_dict[keys.TOKENS].resolve(
        request.config_dict[keys.POOL], token.strip()
    )
    if found is None:
        raise ApiError(401, "unauthorized", "invalid or revoked token")
    if found.role not in allowed:
        raise ApiError(
            403, "forbidden",
            f"the {found.role} role may not do this (needs {' or '.join(sorted(allowed))})",
        )
    return found


def principal(request: web.Request) -> Principal:
    return request[PRINCIPAL]


async def program_by_slug(request: web.Request, slug: str | None) -> queries.Program:
    """The program named by a request: 422 when no slug was given, 404 when none has it."""
    if slug is None:
        raise invalid("program is required", "program")
    return await queries.get_program(request.config_dict[keys.POOL], slug)


# -- validators --------------------------------------------------------------------------------


def string(
    body: dict[str, Any], key: str, *, required: bool = True, max_len: int = 200,
    pattern: re.Pattern[str] | None = None,
) -> str | None:
    value = body.get(key)
    if value is None:
        if required:
            raise invalid(f"{key} is required", key)
        return None
    if not isinstance(value, str):
        raise invalid(f"{key} must be a string", key)
    if not value or len(value) > max_len:
        raise invalid(f"{key} must be 1 to {max_len} characters", key)
    if pattern is not None and not pattern.fullmatch(value):
        raise invalid(f"{key} has characters that are not allowed", key)
    return value


def required_string(body: dict[str, Any], key: str, **kwargs: Any) -> str:
    value = string(body, key, required=True, **kwargs)
    assert value is not None  # noqa: S101 (required=True)
    return value


def opaque_id(body: dict[str, Any], key: str, *, required: bool = True) -> str | None:
    """A merchant id: opaque, 1 to 128 characters, no control characters."""
    value = string(body, key, required=required, max_len=EXTERNAL_ID_MAX)
    if value is not None and not value.isprintable():
        raise invalid(f"{key} must not contain control characters", key)
    return value


def _single(request: web.Request, key: str) -> str | None:
    """A query parameter's one value (None when absent); given twice, it is an error."""
    values = request.query.getall(key, [])
    if len(values) > 1:
        raise invalid(f"{key} is given {len(values)} times; give it once", key)
    return values[0] if values else None


def query_param(request: web.Request, key: str, *, max_len: int = 200) -> str | None:
    value = _single(request, key)
    if value is None or value == "":
        return None
    if len(value) > max_len:
        raise invalid(f"{key} is too long", key)
    return value


def choice_param(request: web.Request, key: str, allowed: Sequence[str]) -> str | None:
    """An optional parameter that must be one of `allowed` when given (even empty)."""
    value = _single(request, key)
    if value is not None and value not in allowed:
        raise invalid(f"{key} must be one of {', '.join(allowed)}", key)
    return value


def limit_param(request: web.Request) -> int:
    raw = _single(request, "limit")
    if raw is None:
        return 100
    if not (raw.isascii() and raw.isdigit()):  # int() also takes " 5", "1_0" and non-ASCII digits
        raise invalid("limit must be an integer", "limit")
    value = int(raw)
    if not 1 <= value <= 1000:
        raise invalid("limit must be between 1 and 1000", "limit")
    return value


def time_param(request: web.Request, key: str) -> datetime | None:
    raw = query_param(request, key, max_len=64)
    return None if raw is None else parse_time(raw, key)


def parse_time(raw: str, key: str) -> datetime:
    """An RFC 3339 timestamp (UTC when it names no offset) as an aware UTC datetime. Its UTC
    time must fall in years 1 to 9999 (`9999-12-31T23:59:59-23:59` is in year 10000): refused
    here in the API's words, not by the database driver in its own."""
    try:
        value = datetime.fromisoformat(raw)
    except ValueError:
        raise invalid(f"{key} must be an RFC 3339 timestamp", key) from None
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    try:
        return value.astimezone(UTC)
    except OverflowError:
        raise invalid(f"{key} is out of range (years 1 to 9999, in UTC)", key) from None


def encode_cursor(*parts: object) -> str:
    raw = "|".join(str(p) for p in parts).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(request: web.Request, n_parts: int) -> list[str] | None:
    raw = _single(request, "cursor")
    if not raw:
        return None
    try:
        padded = raw + "=" * (-len(raw) % 4)
        parts = base64.urlsafe_b64decode(padded.encode()).decode().split("|")
    except (binascii.Error, UnicodeDecodeError, ValueError):
        raise invalid("cursor is not valid", "cursor") from None
    if len(parts) != n_parts:
        raise invalid("cursor is not valid", "cursor")
    return parts


def id_cursor(request: web.Request) -> int:
    parts = decode_cursor(request, 1)
    if parts is None:
        return 0
    raw = parts[0]
    # Digits only (int() also takes " 5", "1_0" and non-ASCII digits), within bigint.
    if not (raw.isascii() and raw.isdigit() and len(raw) <= 19 and int(raw) < 2**63):
        raise invalid("cursor is not valid", "cursor")
    return int(raw)


def page(items: list[dict[str, Any]], limit: int, next_cursor: str | None) -> web.Response:
    return web.json_response({"items": items, "next": next_cursor if len(items) >= limit else None})
