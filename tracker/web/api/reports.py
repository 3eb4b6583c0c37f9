"""Reports: attribution side by side, the funnel, finance's decisions on the fraud
engine's verdicts (tracker.finance.decisions) and incentive experiments
(tracker.finance.experiments)."""

from __future__ import annotations

from aiohttp import web

from attribution.models import MODELS
from tracker.finance.decisions import decisions_report
from tracker.finance.experiments import experiments_report
from tracker.programs import queries
from tracker.scoring.reports import attribution_report, funnel_report
from tracker.web import keys
from tracker.web.api.common import choice_param, program_by_slug, query_param, requires

READERS = ("viewer", "finance")


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
    async with request.config_dict[keys.POOL].acquire() as conn:
        report = await funnel_report(conn, program.id)
    return web.json_response({"program": program.slug, **report})


@requires(*READERS)
async def decisions(request: web.Request) -> web.Response:
    program = await _program(request)
    async with request.config_dict[keys.POOL].acquire() as conn:
        report = await decisions_report(conn, program.id)
    return web.json_response({"program": program.slug, **report})


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
    app.router.add_get("/reports/experiments", experiments)
