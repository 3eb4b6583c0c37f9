"""GET /api/v1/fraud/flags: what the latest scan flagged, with reasons, members and evidence."""

from __future__ import annotations

import json

from aiohttp import web

from tracker.web import keys
from tracker.web.api.common import (
    encode_cursor,
    id_cursor,
    limit_param,
    page,
    program_by_slug,
    query_param,
    requires,
)


@requires("finance", "viewer")
async def list_flags(request: web.Request) -> web.Response:
    slug = query_param(request, "program", max_len=63)
    # Without a program: every program's flags (an unknown one is a 404, not no flags).
    program_id = None if slug is None else (await program_by_slug(request, slug)).id
    pool = request.config_dict[keys.POOL]
    # A conversion's flag is named after its strongest reason; `kind` also finds the flags
    # that carry it as a lesser one (a burst beside a self-referral).
    kind = query_param(request, "kind", max_len=64)
    limit = limit_param(request)
    rows = await pool.fetch(
        """SELECT f.id, p.slug, f.kind, f.score, f.conversion_id, f.reasons::text AS reasons,
                  f.members::text AS members, f.evidence::text AS evidence
           FROM fraud_flags f JOIN programs p ON p.id = f.program_id
           WHERE ($1::bigint IS NULL OR f.program_id = $1) AND f.id > $3
             AND ($2::text IS NULL OR f.kind = $2
                  OR f.reasons @> jsonb_build_array(jsonb_build_object('code', $2::text)))
           ORDER BY f.id LIMIT $4""",
        program_id, kind, id_cursor(request), limit)
    items = [{"id": r["id"], "program": r["slug"], "kind": r["kind"], "score": r["score"],
              "conversion": r["conversion_id"], "reasons": json.loads(r["reasons"]),
              "members": json.loads(r["members"]), "evidence": json.loads(r["evidence"])}
             for r in rows]
    return page(items, limit, encode_cursor(rows[-1]["id"]) if rows else None)


def add_routes(app: web.Application) -> None:
    app.router.add_get("/fraud/flags", list_flags)
