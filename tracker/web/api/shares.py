"""POST /api/v1/shares: a share the referrer made outside the share page, as the merchant
reports it (tracker.asks.shares.record_share, source "api"). Not idempotent: each call is one
share. An unknown program, referrer or ask is a 404; an ask made to another customer a 422
(field ask_id), as a refund naming another customer's purchase is."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from aiohttp import web

from tracker.asks.queries import Share
from tracker.asks.shares import ShareInvalid, record_share
from tracker.formats import CHANNEL_RE, rfc3339
from tracker.intake.conversions import FieldInvalid, event_time
from tracker.programs import queries
from tracker.web import keys
from tracker.web.api.common import opaque_id, program_by_slug, requires, string
from tracker.web.api.errors import invalid, read_json

FIELDS = frozenset({"program", "referrer", "channel", "occurred_at", "ask_id"})


def share_json(share: Share) -> dict[str, Any]:
    return {
        "id": share.id,
        "program": share.program,
        "referrer": share.referrer,
        "channel": share.channel,
        "ask_id": share.ask_id,
        "occurred_at": rfc3339(share.occurred_at),
        "source": share.source,
        "created_at": rfc3339(share.created_at),
    }


def _ask_id(raw: object) -> int | None:
    if raw is None:
        return None
    if isinstance(raw, bool) or not isinstance(raw, int) or not 1 <= raw < 2**63:
        raise invalid("ask_id must be the id of an ask (a positive integer)", "ask_id")
    return raw


@requires("integration")
async def create_share(request: web.Request) -> web.Response:
    body = await read_json(request)
    unknown = sorted(set(body) - FIELDS)
    if unknown:
        raise invalid(f"unknown field {unknown[0]!r}", unknown[0])
    slug = string(body, "program", max_len=63)
    referrer_id = opaque_id(body, "referrer")
    assert referrer_id is not None  # noqa: S101 (required)
    channel = string(body, "channel", max_len=32, pattern=CHANNEL_RE)
    assert channel is not None  # noqa: S101 (required)
    try:
        occurred_at = event_time(body.get("occurred_at"), datetime.now(UTC), require_time=False)
    except FieldInvalid as exc:
        raise invalid(str(exc), exc.field) from None
    ask_id = _ask_id(body.get("ask_id"))
    program = await program_by_slug(request, slug)
    async with request.config_dict[keys.POOL].acquire() as conn:
        referrer = await queries.get_referrer(conn, program.id, referrer_id)
        try:
            share = await record_share(conn, program.id, referrer.id, channel, occurred_at,
                                       "api", ask_id)
        except ShareInvalid as exc:
            raise invalid(str(exc), exc.field) from None
    return web.json_response(share_json(share), status=201)


def add_routes(app: web.Application) -> None:
    app.router.add_post("/shares", create_share)
