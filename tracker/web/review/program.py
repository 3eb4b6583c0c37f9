"""The program page (/review/programs/{slug}): what works, drawn (issue 16).

Finance, admin and viewer sessions may open it (sessions.reading). It reads the same reports as
the API (tracker.scoring.economics, tracker.asks.funnel, tracker.finance.experiments) and draws
them with tracker.web.review.charts; every chart has a table of its numbers under it, and a
program without data gets a sentence per chart instead.

The economics over time are the economics report's per-month series (`by_month`: each
calendar month in the program time zone of the last MONTHS months up to the latest
conversion; the report's cohort accounting makes a month's figures those of its own
conversions, and the months sum to the report's totals). Every report the page draws is a
default view the reports job keeps (tracker.jobs.report_cache: economics and weekday x hour
breakdown by scoring, the funnel and the experiments report beside them); the page reads each
copy while it is under CACHE_MAX_AGE_S old and computes a report live only when its copy is
missing or stale. What the page read is also kept per program and currency in the app
(`PAGE_CACHE`, at most PAGES_KEPT entries) until its oldest figures are CACHE_MAX_AGE_S old;
the page says when its figures were computed. bench/program_page.py measures both.
"""

from __future__ import annotations

import re
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import asyncpg
from aiohttp import web

from tracker.asks.funnel import STAGES, funnel_report
from tracker.db import PRIMARY, Replica
from tracker.errors import NotFound
from tracker.finance.experiments import experiments_report
from tracker.formats import DECIMALS
from tracker.jobs import EXPERIMENTS, FUNNEL
from tracker.programs import queries
from tracker.scoring.economics import (
    CACHE_MAX_AGE_S,
    breakdown_params,
    breakdown_report,
    economics_report,
    zone,
)
from tracker.scoring.queries import cached_report
from tracker.web import keys
from tracker.web.review import charts
from tracker.web.review.render import page
from tracker.web.review.sessions import Session, reading

MONTHS = 12
WEEKDAYS = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")  # ISO 1..7
HOURS = tuple(f"{h:02d}" for h in range(24))
STAGE_NAMES = {"asked": "Asked", "shared": "Shared", "clicks": "Clicks",
               "unique_visitors": "Unique visitors", "signups": "Signups", "trials": "Trials",
               "purchases": "Purchases", "retained_90d": "Retained 90 days"}
HEAT = ["weekday", "hour"]
PAGES_KEPT = 256  # pages' data kept at most (program x currency)
_CODE = re.compile(r"[A-Z]{3}")


@dataclass(frozen=True, slots=True)
class Month:
    label: str  # 2026-11
    revenue: int  # referred revenue, net, minor units of the chosen currency
    cost: int  # incentive cost, net
    roi: float | None


def month_starts(last: datetime, count: int = MONTHS) -> list[datetime]:
    """The first instants of the `count` calendar months ending with `last`'s month, in
    `last`'s time zone, and the start of the month after (count + 1 values, oldest first)."""
    y, m = last.year, last.month
    out = []
    for back in range(count - 1, -2, -1):
        yy, mm = divmod((y * 12 + m - 1) - back, 12)
        out.append(datetime(yy, mm + 1, 1, tzinfo=last.tzinfo))
    return out


def month_row(label: str, month: dict[str, Any] | None, currency: str) -> Month:
    """A month of the economics' `by_month` series in one currency (None: nothing that
    month)."""
    if month is None:
        return Month(label, 0, 0, None)
    return Month(label, month["referred_revenue"].get(currency, 0),
                 month["incentive_cost"].get(currency, 0), month["roi"].get(currency))


def currencies_of(economics: dict[str, Any]) -> list[str]:
    return sorted(set(economics["referred_revenue"]) | set(economics["incentive_cost"]))


def pick_currency(asked: str | None, economics: dict[str, Any], settings: dict[str, Any]
                  ) -> str | None:
    """The currency asked for if the program has money in it, else the reward's, else the one
    with the most referred revenue."""
    available = currencies_of(economics)
    if asked in available:
        return asked
    reward = (settings.get("reward") or {}).get("currency")
    if reward in available:
        return str(reward)
    revenue = economics["referred_revenue"]
    return max(available, key=lambda c: (revenue.get(c, {}).get("net", 0), c), default=None)


def heat_cells(breakdown: dict[str, Any], measure: str = "clicks"
               ) -> dict[tuple[int, int], float]:
    """(weekday 0..6, hour 0..23) -> the measure, from a weekday x hour breakdown."""
    cells: dict[tuple[int, int], float] = {}
    for g in breakdown["groups"]:
        day, hour = g["key"].get("weekday"), g["key"].get("hour")
        if isinstance(day, int) and isinstance(hour, int) and 1 <= day <= 7 and 0 <= hour < 24:
            cells[(day - 1, hour)] = float(g.get(measure) or 0)
    return cells


def funnel_steps(total: dict[str, Any]) -> list[charts.Step]:
    rates = total.get("rates", {})
    return [charts.Step(STAGE_NAMES[s], None if total.get(s) is None else float(total[s]),
                        rates.get(s)) for s in STAGES]


Live = Callable[[asyncpg.Connection], Awaitable[dict[str, Any]]]


async def _cached_or(conn: asyncpg.Connection, program: queries.Program, report: str,
                     params: str, live: Live, *, replica: Replica,
                     valid: Callable[[dict[str, Any]], bool] = lambda body: True
                     ) -> tuple[dict[str, Any], datetime]:
    """The reports job's copy of a default view while it is fresh (and `valid`), else `live`
    computed now on the read replica (the primary without one, or while it is unreachable:
    the page's own cache bounds that load to one computation per program and currency every
    CACHE_MAX_AGE_S); with when it was computed."""
    cached = await cached_report(conn, program.id, report, params, CACHE_MAX_AGE_S)
    if cached is not None and valid(cached.body):
        return cached.body, cached.computed_at
    async with replica.view(conn) as read:
        return await live(read.conn), datetime.now(UTC)


def months_of(program: queries.Program, economics: dict[str, Any], currency: str
              ) -> list[Month]:
    """The last MONTHS calendar months of the economics' `by_month` series, from the first
    with money (see module)."""
    if not economics.get("as_of"):
        return []
    last = datetime.fromisoformat(economics["as_of"].replace("Z", "+00:00")).astimezone(
        zone(program.settings))
    series = {m["month"]: m for m in economics.get("by_month") or []}
    labels = [since.strftime("%Y-%m") for since in month_starts(last)[:-1]]
    out = [month_row(label, series.get(label), currency) for label in labels]
    # Drop the empty months before the first with money.
    while out and not (out[0].revenue or out[0].cost):
        out.pop(0)
    return out


def major_units(currency: str) -> charts.Fmt:
    """Minor units written short in major units (12345 USD cents -> 123)."""
    places = DECIMALS.get(currency, 2)

    def fmt(v: float) -> str:
        return charts.number(v / 10**places)
    return fmt


def interval(name: str, value: float | None, ci: list[float] | None, best: bool
             ) -> charts.Interval:
    low, high = ci if ci and len(ci) == 2 else (None, None)
    return charts.Interval(name, value, low, high, best=best)


def draw(program: str, currency: str | None, months: list[Month], *, steps: list[charts.Step],
         experiments: dict[str, Any], cells: dict[tuple[int, int], float]
         ) -> dict[str, Any]:
    """The page's charts (None where there is nothing to draw)."""
    out: dict[str, Any] = {"money": None, "roi": None, "funnel": None, "experiment": None,
                           "heat": None}
    if months and currency:
        labels = [m.label for m in months]
        out["money"] = charts.bars(
            "money", f"Referred revenue and incentive cost per month ({currency})",
            f"Net referred revenue and net incentive cost of {program} per calendar month, "
            f"in {currency}; the table below lists the figures.", categories=labels,
            series=[charts.Series("Referred revenue", "s1",
                                  tuple(float(m.revenue) for m in months)),
                    charts.Series("Incentive cost", "s2", tuple(float(m.cost) for m in months))],
            fmt=major_units(currency))
        if any(m.roi is not None for m in months):
            out["roi"] = charts.line(
                "roi", f"ROI per month ({currency})",
                "(revenue - incentive cost) / incentive cost per month; below zero the "
                "incentives cost more than the revenue they brought.", categories=labels,
                values=[m.roi for m in months], name="ROI")
    if any(s.value for s in steps):
        out["funnel"] = charts.funnel(
            "funnel", "Funnel: asked to retained at 90 days",
            "Each stage's count and its share of the stage before.", steps=steps)
    variants = experiments.get("variants") or []
    if any(v.get("referrers") for v in variants):
        rows = [interval(v["name"], v.get("conversion_rate"), v.get("conversion_rate_ci"),
                         v["name"] == experiments.get("winner")) for v in variants]
        out["experiment"] = charts.intervals(
            "experiment", "Conversion rate per variant, with intervals",
            "Each variant's share of referrers who brought a customer, with its "
            f"{round((1 - experiments.get('level', 0.05)) * 100)}% interval.", rows=rows,
            fmt=charts.percent)
        rois = []
        money_cur = currency or (experiments.get("currencies") or [None])[0]
        for v in variants:
            m = (v.get("money") or {}).get(money_cur) or {}
            rois.append(interval(v["name"], m.get("roi"), m.get("roi_ci"),
                                 v["name"] == experiments.get("winner")))
        if money_cur and any(r.value is not None for r in rois):
            out["experiment_roi"] = charts.intervals(
                "experiment-roi", f"ROI per variant ({money_cur}), with intervals",
                "Each variant's ROI with its bootstrap interval; below zero it lost money.",
                rows=rois)
    if any(cells.values()):
        out["heat"] = charts.heatmap(
            "heat", "Clicks by weekday and hour",
            "Clicks per weekday (rows) and hour of the day (columns) in the program's time "
            "zone; darker is more.", rows=WEEKDAYS, columns=HOURS, cells=cells)
    out.setdefault("experiment_roi", None)
    return out


@dataclass(frozen=True, slots=True)
class PageData:
    economics: dict[str, Any]
    currency: str | None
    months: list[Month]
    funnel: dict[str, Any]
    experiments: dict[str, Any]
    heat: dict[str, Any]
    computed_at: datetime


PageCache = dict[tuple[int, str | None], tuple[float, PageData]]  # -> (expiry in monotonic s, data)
PAGE_CACHE = web.AppKey("refguard_review_program_pages", dict)


async def gather(conn: asyncpg.Connection, program: queries.Program, asked: str | None,
                 cache: PageCache | None = None, *, replica: Replica = PRIMARY) -> PageData:
    """Every report the page draws: the reports job's copies where fresh, the others computed
    now (on `replica`); or the page's own copy of them while its oldest figures are under
    CACHE_MAX_AGE_S old (bench/program_page.py times this)."""
    asked = asked if asked is not None and _CODE.fullmatch(asked) else None
    key = (program.id, asked)
    now = time.monotonic()
    hit = None if cache is None else cache.get(key)
    if hit is not None and now < hit[0]:
        return hit[1]
    pid, settings = program.id, program.settings
    # A copy made before the economics had its months is computed again.
    economics, e_at = await _cached_or(
        conn, program, "economics", "", lambda read: economics_report(read, pid, settings),
        replica=replica, valid=lambda body: "by_month" in body)
    currency = pick_currency(asked, economics, settings)
    months = months_of(program, economics, currency) if currency else []
    funnel, f_at = await _cached_or(conn, program, *FUNNEL,
                                    lambda read: funnel_report(read, pid), replica=replica)
    experiments, x_at = await _cached_or(
        conn, program, *EXPERIMENTS, lambda read: experiments_report(read, pid, settings),
        replica=replica)
    heat, h_at = await _cached_or(
        conn, program, "breakdown", breakdown_params(HEAT),
        lambda read: breakdown_report(read, pid, settings, HEAT), replica=replica)
    computed_at = min(e_at, f_at, x_at, h_at)
    data = PageData(economics, currency, months, funnel, experiments, heat, computed_at)
    if cache is not None:
        if len(cache) >= PAGES_KEPT:
            cache.pop(min(cache, key=lambda k: cache[k][0]))
        age = (datetime.now(UTC) - computed_at).total_seconds()
        cache[key] = (now + CACHE_MAX_AGE_S - max(age, 0.0), data)
    return data


@reading
async def programs(request: web.Request, session: Session) -> web.Response:
    async with request.app[keys.POOL].acquire() as conn:
        items = await queries.list_programs(conn, 0, 1000)
    return page(request, "programs.html", {"title": "Programs", "session": session,
                                           "programs": items})


@reading
async def program_page(request: web.Request, session: Session) -> web.Response:
    slug = request.match_info["slug"]
    pool = request.app[keys.POOL]
    async with pool.acquire() as conn:
        try:
            program: queries.Program | None = await queries.get_program(conn, slug)
        except NotFound:
            program = None
        if program is None:
            return page(request, "missing.html", {"title": "Program not found",
                                                  "session": session, "what": "program"},
                        status=404)
        data = await gather(conn, program, request.query.get("currency"),
                            request.app[PAGE_CACHE], replica=request.app[keys.REPLICA])
    economics, currency, months = data.economics, data.currency, data.months
    experiments, heat = data.experiments, data.heat
    available = currencies_of(economics)
    cells = heat_cells(heat)
    steps = funnel_steps(data.funnel["total"])
    return page(request, "program.html", {
        "title": f"Program {program.slug}", "session": session, "program": program,
        "economics": economics, "economics_tz": heat.get("timezone", "UTC"),
        "computed_at": data.computed_at,
        "currency": currency, "currencies": available,
        "months": months, "steps": steps, "experiments": experiments,
        "heat_rows": [(WEEKDAYS[d], [cells.get((d, h), 0.0) for h in range(24)])
                      for d in range(7)], "hours": HOURS,
        "charts": draw(program.slug, currency, months, steps=steps, experiments=experiments,
                       cells=cells)})


def add_routes(app: web.Application) -> None:
    app[PAGE_CACHE] = {}
    app.router.add_get("/review/programs", programs)
    app.router.add_get("/review/programs/{slug}", program_page)
