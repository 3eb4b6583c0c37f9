"""GET /api/v1/asks (DESIGN section 5): who was asked to refer, when, and what came of it."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from tracker.asks.queries import STAGES, AskItem, list_asks
from tracker.asks.sharing import share_url as page_url
from tracker.formats import rfc3339
from tracker.web import keys
from tracker.web.api.common import (
    choice_param,
    encode_cursor,
    id_cursor,
    limit_param,
    page,
    program_by_slug,
    query_param,
    requires,
)


def _ask_json(ask: AskItem, base_url: str, secret_key: bytes) -> dict[str, Any]:
    share_url = None
    if ask.referrer_id is not None:
        share_url = page_url(secret_key, base_url, ask.program_id, ask.referrer_id)
    return {
        "id": ask.id,
        "program": ask.program,
        "customer": ask.customer_id,
        "trigger": {"type": ask.trigger_type, "score": ask.trigger_score,
                    "occurred_at": rfc3339(ask.occurred_at)},
        "status": ask.status,
        "reason": ask.reason,
        "deadline": rfc3339(ask.deadline),
        "sent_at": None if ask.sent_at is None else rfc3339(ask.sent_at),
        "share_url": share_url,
        "created_at": rfc3339(ask.created_at),
    }


@requires("finance", "viewer")
async def list_(request: web.Request) -> web.Response:
    status = choice_param(request, "status", STAGES)
    limit = limit_param(request)
    slug = query_param(request, "program", max_len=63)
    program_id = None
    if slug is not None:
        program_id = (await program_by_slug(request, slug)).id  # unknown: 404, not no asks
    asks = await list_asks(request.config_dict[keys.POOL], program_id=program_id,
                           status=status, after=id_cursor(request), limit=limit)
    settings = request.config_dict[keys.SETTINGS]
    items = [_ask_json(a, settings.base_url, settings.secret_key) for a in asks]
    return page(items, limit, encode_cursor(asks[-1].id) if asks else None)


def add_routes(app: web.Application) -> None:
    app.router.add_get("/asks", list_)
