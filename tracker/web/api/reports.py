"""Reports: attribution side by side, the funnel (tracker.asks.funnel), finance's decisions on
the fraud engine's verdicts (tracker.finance.decisions), incentive experiments
(tracker.finance.experiments) and the referral candidates (tracker.asks.candidates)."""

from __future__ import annotations

import re

from aiohttp import web

from attribution.models import MODELS
from tracker.asks.candidates import report as candidates_report
from tracker.asks.funnel import GROUPS, funnel_report
from tracker.finance.decisions import decisions_report
from tracker.finance.experiments import experiments_report
from tracker.formats import rfc3339
from tracker.programs import queries
from tracker.scoring.reports import attribution_report
from tracker.web import keys
from tracker.web.api.common import (
    choice_param,
    program_by_slug,
    query_param,
    requires,
    time_param,
)
from tracker.web.api.errors import invalid

READERS = ("viewer", "finance")
_DECIMAL = re.compile(r"(?:[0-9]{1,3}(?:\.[0-9]{1,17})?|\.[0-9]{1,17})(?:[eE][-+]?[0-9]{1,3})?")


async def _program(request: web.Request) -> queries.Program:
    return await program_by_slug(request, query_param(request, "program", max_len=63))


@requires(*READERS)
async def attribution(request: web.Request) -> web.Response:
    program = await _program(request)
    model = choice_param(request, "model", list(MODELS))
    models = [model] if model else list(MODELS)
    half_life = float(program.settings.get("time_decay_half_life_days", 7.0))
    async with request.config_dict[keys.POOL].acquire() as conn:
        by_model = await attribution_report(conn, program.id, models, half_life)
    if model:
        return web.json_response({"program": program.slug, "model": model,
                                  "rows": by_model[model]})
    # All models: `rows` lists every model's rows (each naming its model), `models` groups them.
    rows = [{"model": m, **row} for m in models for row in by_model[m]]
    return web.json_response({"program": program.slug, "model": None, "rows": rows,
                              "models": by_model})


@requires(*READERS)
async def funnel(request: web.Request) -> web.Response:
    program = await _program(request)
    by = choice_param(request, "by", GROUPS) or "referrer"
    since, until = time_param(request, "since"), time_param(request, "until")
    if since is not None and until is not None and since >= until:
        raise invalid("since must be before until", "since")
    async with request.config_dict[keys.POOL].acquire() as conn:
        report = await funnel_report(conn, program.id, since=since, until=until, by=by)
    return web.json_response({"program": program.slug,
                              "since": rfc3339(since) if since else None,
                              "until": rfc3339(until) if until else None, **report})


@requires(*READERS)
async def decisions(request: web.Request) -> web.Response:
    program = await _program(request)
    async with request.config_dict[keys.POOL].acquire() as conn:
        report = await decisions_report(conn, program.id)
    return web.json_response({"program": program.slug, **report})


def _top(request: web.Request) -> float:
    """The share of the best-scored customers asked for: (0, 1], 0.2 when absent."""
    raw = query_param(request, "top", max_len=32)
    if raw is None:
        return 0.2
    # Decimal notation only (float() also takes " 0.2", "0_2", "nan" and "inf").
    if not _DECIMAL.fullmatch(raw) or not 0 < float(raw) <= 1:
        raise invalid("top must be a number in (0, 1]", "top")
    return float(raw)


@requires(*READERS)
async def candidates(request: web.Request) -> web.Response:
    """The customers most likely to refer a clean converting customer, best first; `model` is
    null (and `items` empty) until the candidates job or `refguard candidates refresh` fits
    the program."""
    program = await _program(request)
    top = _top(request)
    async with request.config_dict[keys.POOL].acquire() as conn:
        report = await candidates_report(conn, program.id, top)
    return web.json_response({"program": program.slug, "top": top, **report})
@requires(*READERS)
async def experiments(request: web.Request) -> web.Response:
    program = await _program(request)
    async with request.config_dict[keys.POOL].acquire() as conn:
        report = await experiments_report(conn, program.id, program.settings)
    return web.json_response({"program": program.slug, **report})


def add_routes(app: web.Application) -> None:
    app.router.add_get("/reports/attribution", attribution)
    app.router.add_get("/reports/funnel", funnel)
    app.router.add_get("/reports/decisions", decisions)
    app.router.add_get("/reports/candidates", candidates)
    app.router.add_get("/reports/experiments", experiments)
