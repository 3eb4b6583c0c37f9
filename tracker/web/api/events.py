"""POST /api/v1/events: a customer's moment, from the merchant's backend by token or signed
request as conversions are (tracker.web.api.signed); validated and stored by tracker.asks.events,
idempotent on (program, event_id): 201 first, 200 with the same answer for the same body, 409
for another body."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from tracker.asks.events import PROPERTIES_MAX_BYTES, parse_event, store_event
from tracker.asks.queries import Event
from tracker.formats import rfc3339
from tracker.intake.conversions import FieldInvalid
from tracker.web import keys
from tracker.web.api.errors import conflict, invalid, json_errors, not_found
from tracker.web.api.signed import merchant_body

ROLES = frozenset({"admin", "integration"})
# An event is a few hundred bytes; its properties at most PROPERTIES_MAX_BYTES.
SIGNED_BODY_MAX = 4 * PROPERTIES_MAX_BYTES


def event_json(event: Event) -> dict[str, Any]:
    return {
        "id": event.id,
        "program": event.program,
        "event_id": event.event_id,
        "customer_id": event.customer_id,
        "type": event.type,
        "occurred_at": rfc3339(event.occurred_at),
        "score": event.score,
        "properties": event.properties,
        "received_at": rfc3339(event.received_at),
    }


@json_errors
async def create_event(request: web.Request) -> web.Response:
    given = await merchant_body(request, ROLES, signed_limit=SIGNED_BODY_MAX)
    try:
        event = parse_event(given.body)
    except FieldInvalid as exc:
        raise invalid(str(exc), exc.field) from None
    if given.program is None:
        raise not_found("program")
    async with request.config_dict[keys.POOL].acquire() as conn:
        stored = await store_event(conn, given.program.id, event)
    if stored.conflict:
        raise conflict(f"event {event.event_id!r} was reported before with another body")
    return web.json_response(event_json(stored.event), status=201 if stored.created else 200)


create_event.roles = ROLES  # type: ignore[attr-defined]


def add_routes(app: web.Application) -> None:
    app.router.add_post("/events", create_event)
