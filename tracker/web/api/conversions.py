"""POST /api/v1/conversions: from the merchant's backend, by token or signed request
(tracker.web.api.signed: a signed body is read as a stranger's, at most SIGNED_BODY_MAX bytes).
A refund or chargeback without `original_event_id` is stored naming the purchase of its
customer that it reverses (tracker.intake.queries.store_checked, resolve_original).
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from tracker.formats import rfc3339
from tracker.identity import email_hash
from tracker.intake.conversions import FieldInvalid, parse_conversion
from tracker.intake.queries import Conversion, ReversalProblem, store_checked
from tracker.web import keys
from tracker.web.api.errors import conflict, invalid, json_errors, not_found
from tracker.web.api.signed import merchant_body

ROLES = frozenset({"admin", "integration"})
SIGNED_BODY_MAX = 64 * 1024  # a conversion is a few hundred bytes


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
    given = await merchant_body(request, ROLES, signed_limit=SIGNED_BODY_MAX)
    program, settings = given.program, request.config_dict[keys.SETTINGS]
    try:
        conv = parse_conversion(given.body)
    except FieldInvalid as exc:
        raise invalid(str(exc), exc.field) from None
    if program is None:
        raise not_found("program")
    digest = email_hash(settings.secret_key, conv.email) if conv.email else None
    async with request.config_dict[keys.POOL].acquire() as conn:
        stored = await store_checked(conn, program.id, conv, digest)
    if isinstance(stored, ReversalProblem):
        raise invalid(stored.message, stored.field)
    if stored.conflict:
        raise conflict(f"event {conv.event_id!r} was reported before with another body")
    return web.json_response(conversion_json(stored.conversion, program.slug),
                             status=201 if stored.created else 200)


create_conversion.roles = ROLES  # type: ignore[attr-defined]


def add_routes(app: web.Application) -> None:
    app.router.add_post("/conversions", create_conversion)
