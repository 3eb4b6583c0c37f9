"""POST /api/v1/conversions: from the merchant's backend, by token or signed request."""

from __future__ import annotations

import json
from typing import Any

from aiohttp import web

from tracker.errors import NotFound
from tracker.formats import rfc3339
from tracker.identity import email_hash
from tracker.intake.conversions import ConversionInvalid, parse_conversion
from tracker.intake.queries import Conversion, store_conversion
from tracker.programs import queries
from tracker.signing import (
    SIGNATURE_HEADER,
    SignatureInvalid,
    program_signing_secret,
    verify_signature,
)
from tracker.web import keys
from tracker.web.api.common import authenticate
from tracker.web.api.errors import ApiError, bad_request, conflict, invalid, json_errors, not_found

ROLES = frozenset({"admin", "integration"})


def conversion_json(c: Conversion, program: str) -> dict[str, Any]:
    return {
        "id": c.id,
        "program": program,
        "event_id": c.event_id,
        "type": c.type,
        "customer_id": c.customer_id,
        "amount": c.amount,
        "currency": c.currency,
        "occurred_at": rfc3339(c.occurred_at),
        "received_at": rfc3339(c.received_at),
    }


@json_errors
async def create_conversion(request: web.Request) -> web.Response:
    raw = await request.read()
    signature = request.headers.get(SIGNATURE_HEADER)
    if "Authorization" in request.headers or signature is None:
        await authenticate(request, ROLES)
    try:
        body = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        if signature is not None and "Authorization" not in request.headers:
            raise ApiError(401, "unauthorized", "the signature does not match") from None
        raise bad_request("the body is not valid JSON") from None
    slug = body.get("program") if isinstance(body, dict) else None
    pool = request.config_dict[keys.POOL]
    settings = request.config_dict[keys.SETTINGS]
    program = None
    if isinstance(slug, str) and len(slug) <= 63:
        try:
            program = await queries.get_program(pool, slug)
        except NotFound:
            program = None
    if "Authorization" not in request.headers and signature is not None:
        # Verified before anything else is said about the body: no oracle for strangers.
        secret = program_signing_secret(settings.secret_key, program.slug if program else "")
        try:
            verify_signature(signature, raw, secret)
        except SignatureInvalid as exc:
            raise ApiError(401, "unauthorized", str(exc)) from None
    try:
        conv = parse_conversion(body)
    except ConversionInvalid as exc:
        raise invalid(str(exc), exc.field) from None
    if program is None:
        raise not_found("program")
    digest = email_hash(settings.secret_key, conv.email) if conv.email else None
    async with pool.acquire() as conn:
        stored = await store_conversion(conn, program.id, conv, digest)
    if stored.conflict:
        raise conflict(f"event {conv.event_id!r} was reported before with another body")
    return web.json_response(conversion_json(stored.conversion, program.slug),
                             status=201 if stored.created else 200)


create_conversion.roles = ROLES  # type: ignore[attr-defined]


def add_routes(app: web.Application) -> None:
    app.router.add_post("/conversions", create_conversion)
