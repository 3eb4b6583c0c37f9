"""Reports: attribution side by side, the funnel (tracker.asks.funnel), finance's decisions on
the fraud engine's verdicts (tracker.finance.decisions), incentive experiments
(tracker.finance.experiments), the referral candidates (tracker.asks.candidates), and the
program's economics and breakdowns (tracker.scoring.economics)."""

from __future__ import annotations

import contextlib
import re
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager
from datetime import UTC, datetime
from typing import Any

import asyncpg
from aiohttp import web

from attribution.models import MODELS
from tracker.asks.candidates import report as candidates_report
from tracker.asks.funnel import GROUPS, funnel_report
from tracker.finance.decisions import decisions_report
from tracker.finance.experiments import experiments_report
from tracker.formats import rfc3339
from tracker.jobs import EXPERIMENTS, FUNNEL, funnel_params
from tracker.programs import queries
from tracker.scoring.economics import (
    ATTRIBUTION,
    CACHE_MAX_AGE_S,
    CACHED_BREAKDOWNS,
    CONVERSION_TYPES,
    MIN_VISITORS,
    breakdown_params,
    breakdown_report,
    economics_report,
)
from tracker.scoring.queries import BREAKDOWN_DIMENSIONS, cached_report
from tracker.scoring.reports import attribution_report, half_life_days
from tracker.web import keys
from tracker.web.api.common import choice_param, program_by_slug, query_param, requires, time_param
from tracker.web.api.errors import invalid

READERS = ("viewer", "finance")
_DECIMAL = re.compile(r"(?:[0-9]{1,3}(?:\.[0-9]{1,17})?|\.[0-9]{1,17})(?:[eE][-+]?[0-9]{1,3})?")
CURRENCY = re.compile(r"[A-Z]{3}")


def _reads(request: web.Request) -> AbstractAsyncContextManager[asyncpg.Pool]:
    """The pool a report computes on (a report on a pool runs its reads at once): the read
    replica's, else the primary's. An unreachable replica is a 503 with Retry-After, not a
    report on the primary (tracker.db.Replica says why)."""
    return request.config_dict[keys.REPLICA].reads(request.config_dict[keys.POOL])


@contextlib.asynccontextmanager
async def _reading(request: web.Request) -> AsyncIterator[asyncpg.Connection]:
    """One connection of `_reads`, for a report that reads on one."""
    async with _reads(request) as pool, pool.acquire() as conn:
        yield conn


async def _program(request: web.Request) -> queries.Program:
    return await program_by_slug(request, query_param(request, "program", max_len=63))


@requires(*READERS)
async def attribution(request: web.Request) -> web.Response:
    """Every model's rows come from the reports job's copy while it is fresh (the report has
    no window, and Markov and Shapley over a large program take seconds), else are computed
    now (only the model asked for, when one is)."""
    program = await _program(request)
    model = choice_param(request, "model", list(MODELS))
    models = [model] if model else list(MODELS)
    cached = await cached_report(request.config_dict[keys.POOL], program.id, *ATTRIBUTION,
                                 CACHE_MAX_AGE_S)
    if cached is not None and set(models) <= set(cached.body):
        by_model: dict[str, list[dict[str, Any]]] = cached.body
        fresh = {"cached": True, "computed_at": rfc3339(cached.computed_at)}
    else:
        async with _reading(request) as conn:
            by_model = await attribution_report(conn, program.id, models,
                                                half_life_days(program.settings))
        fresh = {"cached": False, "computed_at": rfc3339(datetime.now(UTC))}
    if model:
        return web.json_response({"program": program.slug, "model": model,
                                  "rows": by_model[model], **fresh})
    # All models: `rows` lists every model's rows (each naming its model), `models` groups them.
    rows = [{"model": m, **row} for m in models for row in by_model[m]]
    return web.json_response({"program": program.slug, "model": None, "rows": rows,
                              "models": by_model, **fresh})


@requires(*READERS)
async def funnel(request: web.Request) -> web.Response:
    program = await _program(request)
    by = choice_param(request, "by", GROUPS) or "referrer"
    since, until = time_param(request, "since"), time_param(request, "until")
    if since is not None and until is not None and since >= until:
        raise invalid("since must be before until", "since")
    if since is None and until is None:
        return await _answer(request, program, FUNNEL[0], funnel_params(by),
                             extra={"since": None, "until": None})
    async with _reads(request) as pool:
        report = await funnel_report(pool, program.id, since=since, until=until, by=by)
    return _live(program, {"since": rfc3339(since) if since else None,
                           "until": rfc3339(until) if until else None, **report})


@requires(*READERS)
async def decisions(request: web.Request) -> web.Response:
    program = await _program(request)
    async with _reading(request) as conn:
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
    async with _reading(request) as conn:
        report = await candidates_report(conn, program.id, top)
    return web.json_response({"program": program.slug, "top": top, **report})


@requires(*READERS)
async def experiments(request: web.Request) -> web.Response:
    program = await _program(request)
    return await _answer(request, program, *EXPERIMENTS)


def _window(request: web.Request) -> tuple[datetime | None, datetime | None]:
    since, until = time_param(request, "since"), time_param(request, "until")
    if since is not None and until is not None and since >= until:
        raise invalid("since must be before until", "until")
    return since, until


@requires(*READERS)
async def economics(request: web.Request) -> web.Response:
    program = await _program(request)
    since, until = _window(request)
    currency = query_param(request, "currency", max_len=3)
    if (currency is None and "currency" in request.query) or \
            (currency is not None and not CURRENCY.fullmatch(currency)):
        raise invalid("currency must be an ISO 4217 code like USD", "currency")
    if since is None and until is None and currency is None:
        return await _answer(request, program, "economics", "")
    async with _reads(request) as pool:
        report = await economics_report(pool, program.id, program.settings, since=since,
                                        until=until, currency=currency)
    return _live(program, report)


@requires(*READERS)
async def breakdown(request: web.Request) -> web.Response:
    program = await _program(request)
    raw = query_param(request, "by", max_len=100)
    if raw is None:
        raise invalid("by is required: one or two of " + ", ".join(BREAKDOWN_DIMENSIONS), "by")
    by = raw.split(",")
    if len(by) > 2 or len(set(by)) != len(by) or any(d not in BREAKDOWN_DIMENSIONS for d in by):
        raise invalid("by must be one or two different ones of "
                      + ", ".join(BREAKDOWN_DIMENSIONS) + ", separated by a comma", "by")
    type_ = choice_param(request, "type", CONVERSION_TYPES) or "purchase"
    min_raw = query_param(request, "min_visitors", max_len=7)
    if (min_raw is None and "min_visitors" in request.query) or \
            (min_raw is not None and not (min_raw.isascii() and min_raw.isdigit())):
        raise invalid("min_visitors must be a whole number", "min_visitors")
    since, until = _window(request)
    if (since is None and until is None and min_raw is None and type_ == "purchase"
            and by in CACHED_BREAKDOWNS):
        return await _answer(request, program, "breakdown", breakdown_params(by))
    async with _reads(request) as pool:
        report = await breakdown_report(
            pool, program.id, program.settings, by, type_=type_, since=since, until=until,
            min_visitors=MIN_VISITORS if min_raw is None else int(min_raw))
    return _live(program, report)


def _live(program: queries.Program, report: dict[str, Any]) -> web.Response:
    return web.json_response({"program": program.slug, **report, "cached": False,
                              "computed_at": rfc3339(datetime.now(UTC))})


async def _answer(request: web.Request, program: queries.Program, report: str, params: str,
                  extra: dict[str, Any] | None = None) -> web.Response:
    """A default view (economics, a breakdown, the funnel, the experiments): the
    reports job's copy while it is fresh (CACHE_MAX_AGE_S), else computed now; `extra` goes
    before the report's fields in both."""
    pool = request.config_dict[keys.POOL]
    cached = await cached_report(pool, program.id, report, params, CACHE_MAX_AGE_S)
    if cached is not None:
        return web.json_response({"program": program.slug, **(extra or {}), **cached.body,
                                  "cached": True, "computed_at": rfc3339(cached.computed_at)})
    async with _reads(request) as reads:
        if report == "economics":
            body = await economics_report(reads, program.id, program.settings)
        elif report == FUNNEL[0]:
            body = await funnel_report(reads, program.id,
                                       by=params.removeprefix("by=") or "referrer")
        elif report == EXPERIMENTS[0]:
            async with reads.acquire() as conn:
                body = await experiments_report(conn, program.id, program.settings)
        else:
            body = await breakdown_report(reads, program.id, program.settings,
                                          params.removeprefix("by=").split(","))
    return _live(program, {**(extra or {}), **body})


def add_routes(app: web.Application) -> None:
    app.router.add_get("/reports/attribution", attribution)
    app.router.add_get("/reports/funnel", funnel)
    app.router.add_get("/reports/decisions", decisions)
    app.router.add_get("/reports/candidates", candidates)
    app.router.add_get("/reports/experiments", experiments)
    app.router.add_get("/reports/economics", economics)
    app.router.add_get("/reports/breakdown", breakdown)
