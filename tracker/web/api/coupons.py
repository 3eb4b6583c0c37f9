"""Coupon pools (issue 14): codes a merchant uploads for `coupon` reward rules.

`POST /api/v1/programs/{slug}/coupons` (admin, integration) `{pool, codes: [...]}` adds codes
to a pool (at most MAX_CODES a call, each 1 to 64 printable characters without surrounding
spaces); codes the pool has already are left as they are: the answer counts `added` and
`already`. `GET /api/v1/programs/{slug}/coupons?pool=` answers how many codes each pool has
`available` and `assigned`: counts only, never the codes (a code is a voucher worth money; an
approved coupon reward shows its own code to finance and admins).

A code is handed out when its reward is approved (tracker.finance.clearance, ledger.decide),
once: a reward never gets a second code, a code never a second reward.
"""

from __future__ import annotations

import re
from typing import Any

from aiohttp import web

from tracker import audit
from tracker.finance import queries as finance_queries
from tracker.web import keys
from tracker.web.api.common import principal, program_by_slug, query_param, requires
from tracker.web.api.errors import invalid, read_json

MAX_CODES = 10_000
CODE_MAX = 64
POOL = re.compile(r"^[a-z0-9][a-z0-9_-]{0,63}$")
_POOL_RULE = "a slug of a-z, 0-9, '_' or '-' (1 to 64 characters)"


def _pool(value: object) -> str:
    if not isinstance(value, str) or not POOL.match(value):
        raise invalid(f"pool must be {_POOL_RULE}", "pool")
    return value


def _codes(value: object) -> list[str]:
    if not isinstance(value, list) or not value or len(value) > MAX_CODES:
        raise invalid(f"codes must be a list of 1 to {MAX_CODES} codes", "codes")
    for i, code in enumerate(value):
        if not isinstance(code, str) or not 1 <= len(code) <= CODE_MAX \
                or not code.isprintable() or code != code.strip():
            raise invalid(f"codes[{i}] must be 1 to {CODE_MAX} printable characters without "
                          "surrounding spaces", "codes")
    return list(dict.fromkeys(value))  # a code twice in one call is one code


@requires("integration")
async def upload(request: web.Request) -> web.Response:
    program = await program_by_slug(request, request.match_info["slug"])  # 404 before 422
    body = await read_json(request)
    pool = _pool(body.get("pool"))
    codes = _codes(body.get("codes"))
    who = principal(request)
    async with request.config_dict[keys.POOL].acquire() as conn, conn.transaction():
        added = await finance_queries.add_coupons(conn, program.id, pool, codes)
        await audit.record(conn, actor=who.actor, action="coupons.upload",
                           object_type="coupon_pool", object_id=pool, program_id=program.id,
                           details={"added": added, "already": len(codes) - added})
        counts = await finance_queries.coupon_counts(conn, program.id, pool)
    answer: dict[str, Any] = {"program": program.slug, "pool": pool, "added": added,
                              "already": len(codes) - added}
    if counts:
        answer |= {"available": counts[0].available, "assigned": counts[0].assigned}
    return web.json_response(answer)


@requires("integration", "finance", "viewer")
async def counts(request: web.Request) -> web.Response:
    program = await program_by_slug(request, request.match_info["slug"])
    raw = query_param(request, "pool", max_len=64)
    pool = None if raw is None else _pool(raw)
    rows = await finance_queries.coupon_counts(request.config_dict[keys.POOL], program.id, pool)
    items = [{"pool": c.pool, "available": c.available, "assigned": c.assigned} for c in rows]
    if pool is not None and not items:
        items = [{"pool": pool, "available": 0, "assigned": 0}]
    return web.json_response({"program": program.slug, "items": items})


def add_routes(app: web.Application) -> None:
    app.router.add_post("/programs/{slug}/coupons", upload)
    app.router.add_get("/programs/{slug}/coupons", counts)
