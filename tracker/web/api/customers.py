"""DELETE /api/v1/customers/{customer_id}: erase a customer's personal data (tracker.privacy).

The answer says what was erased and, while fraud decisions resting on the customer are still
open, what is kept for them until finance has decided (`kept`: null once nothing is)."""

from __future__ import annotations

from aiohttp import web

from tracker.privacy import erase_customer
from tracker.web import keys
from tracker.web.api.common import principal, program_by_slug, query_param, requires
from tracker.web.api.errors import not_found


@requires("integration")
async def erase(request: web.Request) -> web.Response:
    program = await program_by_slug(request, query_param(request, "program", max_len=63))
    customer_id = request.match_info["customer_id"]
    if not 1 <= len(customer_id) <= 128 or not customer_id.isprintable():
        raise not_found("customer")
    async with request.config_dict[keys.POOL].acquire() as conn:
        erased = await erase_customer(conn, program.id, customer_id, principal(request).actor)
    if not erased.found:
        raise not_found("customer")
    return web.json_response({
        "program": program.slug, "customer": customer_id,
        "erased": {"conversions": erased.conversions, "visitors": erased.visitors,
                   "clicks": erased.clicks, "referrer": erased.referrer,
                   "events": erased.events, "candidate_scores": erased.candidate_scores,
                   "asks": erased.asks},
        "kept": {"fields": list(erased.kept), "open_decisions": erased.open_decisions,
                 "until": "every reward resting on the customer is decided"}
        if erased.kept else None})


def add_routes(app: web.Application) -> None:
    app.router.add_delete("/customers/{customer_id}", erase)
