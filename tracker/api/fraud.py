"""GET /api/v1/fraud/flags: what the latest scan flagged, with reasons, members and evidence."""

from __future__ import annotations

import json

from aiohttp import web

from tracker import keys
from tracker.api.common import (
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
    program = await program_by_slug(request, query_param(request, "program", max_len=63))
    pool = request.config_dict[keys.POOL]
    # A conversion's flag is named after its strongest reason; `kind` also finds the flags
    # that carry it as a lesser one (an anomaly beside a self-referral).
    kind = query_param(request, "kind", max_len=64)
    limit = limit_param(request)
    rows = await pool.fetch(
        """SELECT id, kind, score, conversion_id, reasons::text AS reasons,
                  members::text AS members, evidence::text AS evidence
           FROM fraud_flags
           WHERE program_id = $1 AND id > $3
             AND ($2::text IS NULL OR kind = $2
                  OR reasons @> jsonb_build_array(jsonb_build_object('code', $2::text)))
           ORDER BY id LIMIT $4""",
        program.id, kind, id_cursor(request), limit)
    items = [{"id": r["id"], "kind": r["kind"], "score": r["score"],
              "conversion": r["conversion_id"], "reasons": json.loads(r["reasons"]),
              "members": json.loads(r["members"]), "evidence": json.loads(r["evidence"])}
             for r in rows]
    return page(items, limit, encode_cursor(rows[-1]["id"]) if rows else None)


def add_routes(app: web.Application) -> None:
    app.router.add_get("/fraud/flags", list_flags)
