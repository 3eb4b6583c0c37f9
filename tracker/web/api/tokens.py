"""API tokens for admins: GET /api/v1/tokens (never their secrets) and
POST /api/v1/tokens/{token_id}/revoke (the token stops working at once on every worker)."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from tracker.auth import TokenInfo, list_tokens, revoke_token
from tracker.formats import rfc3339
from tracker.web import keys
from tracker.web.api.common import encode_cursor, id_cursor, limit_param, page, principal, requires
from tracker.web.api.errors import conflict, not_found


def as_json(token: TokenInfo) -> dict[str, Any]:
    return {**token.as_dict(), "created_at": rfc3339(token.created_at),
            "revoked_at": None if token.revoked_at is None else rfc3339(token.revoked_at)}


def _token_id(request: web.Request) -> int:
    raw = request.match_info["token_id"]
    if not (raw.isascii() and raw.isdigit()) or len(raw) > 18:
        raise not_found("token")
    return int(raw)


@requires("admin")
async def list_(request: web.Request) -> web.Response:
    limit = limit_param(request)
    found = await list_tokens(request.config_dict[keys.POOL], after=id_cursor(request),
                              limit=limit)
    return page([as_json(t) for t in found], limit,
                encode_cursor(found[-1].id) if found else None)


@requires("admin")
async def revoke(request: web.Request) -> web.Response:
    token_id = _token_id(request)
    who = principal(request)
    if token_id == who.token_id:
        # Not through itself: an admin must not lock themselves out by a slip (another admin
        # token or `refguard token revoke` can do it).
        raise conflict("this is the token making the request; revoke it with another admin "
                       "token or `refguard token revoke`")
    async with request.config_dict[keys.POOL].acquire() as conn:
        token, _now = await revoke_token(conn, token_id, who.actor)
    # This worker forgets it now; the others when the database's notice reaches them.
    request.config_dict[keys.TOKENS].drop(token_id)
    return web.json_response(as_json(token))


def add_routes(app: web.Application) -> None:
    app.router.add_get("/tokens", list_)
    app.router.add_post("/tokens/{token_id}/revoke", revoke)
