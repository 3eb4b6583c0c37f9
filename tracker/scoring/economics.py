"""What works (issue 16): the program's economics and the breakdown of its clicks.

Both read scoring's facts (conversions, credits, touchpoints, clicks) and finance's (rewards,
the ledger) through SQL only, so they live here, below finance. Definitions (also written in
the OpenAPI document, tracker/web/api/openapi.py):

- *paying conversion*: a purchase or renewal with an amount and a currency; its *net* is its
  amount less the refunds and chargebacks naming it (`original_event_id`, given, or for one
  that names only its customer the purchase tracker.intake.queries.resolve_original found when
  it was stored; one without an amount takes back the whole purchase). A refund or chargeback
  naming no purchase (its customer had none before it) is netted at its own time against its
  own customer.
- *customer*: someone with a paying conversion; their *first payment* is the earliest one (its
  currency is the customer's currency). *Referred*: a conversion of theirs at or before the
  first payment carries attribution credit; their *referrer* is the one with the largest
  credit on the earliest such conversion. *Other*: every other customer.
- The window [since, until) selects by the time things happened: money by the paying
  conversion's occurred_at, rewards by their conversion's, customers (counts, retention, LTV,
  cost per customer, the viral coefficient) by their first payment. A refund or clawback of a
  conversion in the window counts there, whenever it came (cohort accounting: a month's
  figures do not move when a later month is added, only when its own conversions are
  refunded).
- Money is per currency, minor units; `currency` keeps only that currency's money and the
  customers whose first payment was in it.
"""

from __future__ import annotations

import functools
from collections import defaultdict
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import asyncpg

from attribution.models import MODELS
from tracker import metrics
from tracker.db import PRIMARY, Replica
from tracker.formats import CREDITED_TYPES, rfc3339
from tracker.programs.queries import REFERRER_KINDS
from tracker.scoring import queries
from tracker.scoring.reports import attribution_report, half_life_days

GRANTED = ("approved", "paid")
OPEN = ("pending", "flagged")
SIDES = ("referrer", "referee")
LTV_DAYS = (90, 365)
MIN_VISITORS = 30  # a breakdown group with fewer unique visitors is marked `small`
CONVERSION_TYPES = CREDITED_TYPES  # what a breakdown may count


def zone(settings: dict[str, Any]) -> ZoneInfo:
    """The program's `settings.timezone` (validated when stored), UTC when absent."""
    name = settings.get("timezone")
    try:
        return ZoneInfo(name if isinstance(name, str) and name else "UTC")
    except (ZoneInfoNotFoundError, ValueError):
        return ZoneInfo("UTC")


def _ratio(num: float, den: float, digits: int = 6) -> float | None:
    return round(num / den, digits) if den else None


def _money() -> dict[str, int]:
    return {"gross": 0, "refunds": 0, "chargebacks": 0, "net": 0}


def _cost() -> dict[str, dict[str, int]]:
    return {side: {"granted": 0, "clawed_back": 0, "net": 0, "open": 0}
            for side in (*SIDES, "total")}


def _sorted(d: dict[str, Any]) -> dict[str, Any]:
    return dict(sorted(d.items()))


async def economics_report(db: asyncpg.Connection | asyncpg.Pool, program_id: int,
                           settings: dict[str, Any], *, since: datetime | None = None,
                           until: datetime | None = None, currency: str | None = None
                           ) -> dict[str, Any]:
    """The program's economics over [since, until) (see the module's definitions). Given a
    pool, the customers' and the rewards' reads run at once (queries.report_reads)."""
    tz = zone(settings)
    (customers, money, months, month_money), all_rewards, as_of = await queries.report_reads(
        db,
        lambda conn: queries.customer_groups(conn, program_id, since=since, until=until,
                                             currency=currency, tz=tz.key),
        lambda conn: queries.reward_money(conn, program_id, since, until, tz.key),
        lambda conn: queries.latest_conversion(conn, program_id))
    rewards = [r for r in all_rewards if currency is None or r.currency == currency]
    groups, by_kind = _customer_groups(customers, money)
    cost, prevented = _incentives(rewards, by_kind)
    referred = groups["referred"]
    currencies = sorted(set(referred["revenue"]) | set(cost))
    roi: dict[str, float | None] = {}
    per_customer: dict[str, float | None] = {}
    for cur in currencies:
        net_cost = cost[cur]["total"]["net"] if cur in cost else 0
        revenue = referred["revenue"].get(cur, _money())["net"]
        roi[cur] = _ratio(revenue - net_cost, net_cost)
        per_customer[cur] = _ratio(net_cost, referred["by_currency"].get(cur, 0), 2)
    return {
        "since": rfc3339(since) if since else None,
        "until": rfc3339(until) if until else None,
        "currency": currency,
        "as_of": rfc3339(as_of) if as_of else None,
        "referred_customers": referred["customers"],
        "referred_revenue": _sorted(referred["revenue"]),
        "incentive_cost": _sorted(dict(cost)),
        "roi": roi,
        "cost_per_referred_customer": per_customer,
        "fraud_prevented": prevented,
        "customers": {g: _finish_group(v) for g, v in groups.items()},
        "by_referrer_kind": {k: _finish_kind(v) for k, v in by_kind.items()},
        "viral": viral_by_month(months),
        "by_month": money_by_month(month_money, rewards),
    }


def money_by_month(money: list[queries.MonthMoney], rewards: list[queries.RewardMoney]
                   ) -> list[dict[str, Any]]:
    """The report's money split by calendar month (program time zone) of the conversions it
    belongs to, oldest first, months with neither referred money nor rewards left out: per
    currency the referred revenue (net), the incentive cost (total net) and ROI, each as the
    report over [month start, next month start) with the same `currency` would give it, so
    the months sum to the report's totals (cohort accounting)."""
    revenue: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    for m in money:
        if m.referred:
            revenue[m.month][m.currency] += m.gross - m.refunds - m.chargebacks
    per_month: dict[str, list[queries.RewardMoney]] = defaultdict(list)
    for r in rewards:
        per_month[r.month].append(r)
    out = []
    for month in sorted(set(revenue) | set(per_month)):
        cost, _ = _incentives(per_month.get(month, []),
                              {k: _kind_row() for k in REFERRER_KINDS})
        rev = revenue.get(month, {})
        currencies = sorted(set(rev) | set(cost))
        net_cost = {c: cost[c]["total"]["net"] if c in cost else 0 for c in currencies}
        out.append({
            "month": month,
            "referred_revenue": {c: rev.get(c, 0) for c in currencies},
            "incentive_cost": net_cost,
            "roi": {c: _ratio(rev.get(c, 0) - net_cost[c], net_cost[c]) for c in currencies},
        })
    return out


def _customer_groups(customers: list[queries.CustomerGroup], money: list[queries.MoneyGroup]
                     ) -> tuple[dict[str, dict[str, Any]], dict[str, dict[str, Any]]]:
    """Referred and other customers (counts, revenue, retention, LTV), and the referred by
    their referrer's advocate kind (counts, revenue)."""
    groups = {g: _group() for g in ("referred", "other")}
    by_kind = {k: _kind_row() for k in REFERRER_KINDS}
    for c in customers:
        g = groups["referred" if c.referred else "other"]
        g["customers"] += c.customers
        g["by_currency"][c.currency] += c.customers
        if c.referred:
            by_kind[c.kind or "non_buyer"]["referred_customers"] += c.customers
        g["retention"]["eligible"] += c.eligible_90d
        g["retention"]["retained"] += c.retained_90d
        # LTV counts every eligible customer of the currency, also those with nothing left.
        for days, n, value in ((90, c.eligible_90d, c.net_90d),
                               (365, c.eligible_365d, c.net_365d)):
            if n:
                g["ltv"][days][c.currency][0] += n
                g["ltv"][days][c.currency][1] += value
    for m in money:
        g = groups["referred" if m.referred else "other"]
        row = g["revenue"].setdefault(m.currency, _money())
        row["gross"] += m.gross
        row["refunds"] += m.refunds
        row["chargebacks"] += m.chargebacks
        row["net"] += m.gross - m.refunds - m.chargebacks
        if m.referred:
            by_kind[m.kind or "non_buyer"]["revenue"][m.currency] += (
                m.gross - m.refunds - m.chargebacks)
    return groups, by_kind


def _incentives(rewards: list[queries.RewardMoney], by_kind: dict[str, dict[str, Any]]
                ) -> tuple[dict[str, dict[str, dict[str, int]]], dict[str, Any]]:
    """Incentive cost per currency and beneficiary side (granted: approved or paid, or
    reversed after a clawback took it back; clawed_back; net; open: pending or flagged), the
    net cost per advocate kind (into `by_kind`), and the fraud prevented."""
    cost: dict[str, dict[str, dict[str, int]]] = defaultdict(_cost)
    prevented: dict[str, dict[str, Any]] = {s: {"count": 0, "money": defaultdict(int)}
                                            for s in ("rejected", "reversed")}
    for r in rewards:
        sides = (cost[r.currency][r.beneficiary], cost[r.currency]["total"])
        if r.status in GRANTED:
            by_kind[r.kind]["incentive_cost"][r.currency] += r.amount
            for side in sides:
                side["granted"] += r.amount
                side["net"] += r.amount
        elif r.status == "reversed" and r.clawed_back:
            for side in sides:
                side["granted"] += r.clawed_back
                side["clawed_back"] += r.clawed_back
        elif r.status in OPEN:
            for side in sides:
                side["open"] += r.amount
        if r.status in prevented:
            prevented[r.status]["count"] += r.n
            prevented[r.status]["money"][r.currency] += r.amount
    return cost, {s: {"count": v["count"], "money": _sorted(v["money"])}
                  for s, v in prevented.items()}


def _group() -> dict[str, Any]:
    return {"customers": 0, "by_currency": defaultdict(int), "revenue": {},
            "retention": {"eligible": 0, "retained": 0},
            "ltv": {d: defaultdict(lambda: [0, 0]) for d in LTV_DAYS}}


def _finish_group(g: dict[str, Any]) -> dict[str, Any]:
    ret = g["retention"]
    return {
        "customers": g["customers"],
        "customers_by_currency": _sorted(g["by_currency"]),
        "revenue": _sorted(g["revenue"]),
        "revenue_per_customer": {cur: _ratio(m["net"], g["by_currency"].get(cur, 0), 2)
                                 for cur, m in sorted(g["revenue"].items())},
        "retention_90d": {**ret, "rate": _ratio(ret["retained"], ret["eligible"])},
        **{f"ltv_{d}d": {cur: {"customers": n, "value": _ratio(total, n, 2)}
                         for cur, (n, total) in sorted(g["ltv"][d].items())}
           for d in LTV_DAYS},
    }


def _kind_row() -> dict[str, Any]:
    return {"referred_customers": 0, "revenue": defaultdict(int),
            "incentive_cost": defaultdict(int)}


def _finish_kind(k: dict[str, Any]) -> dict[str, Any]:
    currencies = sorted(set(k["revenue"]) | set(k["incentive_cost"]))
    return {
        "referred_customers": k["referred_customers"],
        "revenue": {c: k["revenue"].get(c, 0) for c in currencies},
        "incentive_cost": {c: k["incentive_cost"].get(c, 0) for c in currencies},
        "roi": {c: _ratio(k["revenue"].get(c, 0) - k["incentive_cost"].get(c, 0),
                          k["incentive_cost"].get(c, 0)) for c in currencies},
    }


def viral_by_month(months: list[queries.MonthGroup]) -> list[dict[str, Any]]:
    """Per calendar month (program time zone) with first payments in the window: referred
    customers, the distinct referrers credited with them, `per_referrer` = referred /
    referrers, customers before the month (first payment earlier, whatever the window) and
    `per_customer` = referred / those."""
    out = []
    before = 0
    for m in months:
        if m.acquired:
            out.append({
                "month": m.month,
                "referred_customers": m.referred,
                "referrers": m.referrers,
                "per_referrer": _ratio(m.referred, m.referrers),
                "customers_before": before,
                "per_customer": _ratio(m.referred, before),
            })
        before += m.customers
    return out


# -- breakdown ---------------------------------------------------------------------------------


async def breakdown_report(db: asyncpg.Connection | asyncpg.Pool, program_id: int,
                           settings: dict[str, Any], by: list[str], *, type_: str = "purchase",
                           since: datetime | None = None, until: datetime | None = None,
                           min_visitors: int = MIN_VISITORS) -> dict[str, Any]:
    """Clicks, unique visitors, conversions (of `type_`, each in its last touch's group),
    conversion rate (conversions / unique visitors) and net revenue per currency, per group of
    one or two dimensions; groups under `min_visitors` unique visitors are marked `small`.
    Given a pool, its three reads run at once (queries.report_reads)."""
    reports = await breakdown_reports(db, program_id, settings, [by], type_=type_,
                                      since=since, until=until, min_visitors=min_visitors)
    return reports[0]


async def breakdown_reports(db: asyncpg.Connection | asyncpg.Pool, program_id: int,
                            settings: dict[str, Any], sets: list[list[str]], *,
                            type_: str = "purchase", since: datetime | None = None,
                            until: datetime | None = None, min_visitors: int = MIN_VISITORS
                            ) -> list[dict[str, Any]]:
    """`breakdown_report` for each of `sets`, from one scan of the clicks by group, one for
    their total and one of the conversions (the reports job computes every default view at
    once)."""
    tz = zone(settings)
    # On a pool the clicks by group, the longest read, runs in parts of disjoint visitors.
    parts = queries.VISITOR_PARTS if isinstance(db, asyncpg.Pool) else 1
    total, conversions, *clicks = await queries.report_reads(
        db,
        lambda conn: queries.breakdown_total(conn, program_id, since=since, until=until),
        lambda conn: queries.breakdown_conversions(conn, program_id, sets, type_=type_,
                                                   since=since, until=until, tz=tz.key),
        *(functools.partial(queries.breakdown_clicks, program_id=program_id, sets=sets,
                            since=since, until=until, tz=tz.key, part=part, parts=parts)
          for part in range(parts)))
    # _breakdown adds up rows of the same group: those of the parts.
    return [_breakdown(by, [row for part in clicks for row in part[i]], total, convs,
                       tz=tz.key, type_=type_, since=since, until=until,
                       min_visitors=min_visitors)
            for i, (by, convs) in enumerate(zip(sets, conversions, strict=True))]


def _breakdown(by: list[str], clicks: list[queries.BreakdownRow],
               all_clicks: queries.BreakdownRow, conversions: list[queries.BreakdownConversions],
               *, tz: str, type_: str, since: datetime | None, until: datetime | None,
               min_visitors: int) -> dict[str, Any]:
    rows: dict[tuple[Any, ...], dict[str, Any]] = defaultdict(
        lambda: {"clicks": 0, "unique_visitors": 0, "conversions": 0,
                 "revenue": defaultdict(int)})
    for c in clicks:
        rows[c.keys]["clicks"] += c.clicks
        rows[c.keys]["unique_visitors"] += c.visitors
    total: dict[str, Any] = {"clicks": all_clicks.clicks,
                             "unique_visitors": all_clicks.visitors, "conversions": 0,
                             "revenue": defaultdict(int)}
    for v in conversions:
        rows[v.keys]["conversions"] += v.conversions
        total["conversions"] += v.conversions
        if v.currency is not None:
            rows[v.keys]["revenue"][v.currency] += v.net
            total["revenue"][v.currency] += v.net

    def finish(row: dict[str, Any]) -> dict[str, Any]:
        return {**row, "conversion_rate": _ratio(row["conversions"], row["unique_visitors"]),
                "revenue": _sorted(row["revenue"]),
                "small": row["unique_visitors"] < min_visitors}

    def order(item: tuple[tuple[Any, ...], Any]) -> tuple[Any, ...]:
        return tuple((k is None, k if k is not None else "") for k in item[0])

    return {
        "by": by,
        "type": type_,
        "timezone": tz,
        "since": rfc3339(since) if since else None,
        "until": rfc3339(until) if until else None,
        "min_visitors": min_visitors,
        "groups": [{"key": dict(zip(by, keys, strict=True)), **finish(row)}
                   for keys, row in sorted(rows.items(), key=order)],
        "total": finish(total),
    }


# -- the reports job and its gauges ------------------------------------------------------------

CACHE_MAX_AGE_S = 900.0  # a cached view older than this is computed again on request
ATTRIBUTION = ("attribution", "")  # every model's rows: {model: [row, ...]}
CACHED_BREAKDOWNS = (*([d] for d in queries.BREAKDOWN_DIMENSIONS), ["weekday", "hour"])
MAX_PROGRAM_SERIES = 50  # the gauges carry at most this many programs (the first by id)


def breakdown_params(by: list[str]) -> str:
    """The cache key of a breakdown's default view (no window, purchases, MIN_VISITORS)."""
    return "by=" + ",".join(by)


async def refresh_report_cache(conn: asyncpg.Connection, replica: Replica = PRIMARY) -> None:
    """Compute and store every program's default views: the economics over its whole history,
    the breakdown by each dimension (and weekday x hour) and the attribution under every
    model (the report has no window: this copy answers every request for it while fresh),
    each stored in its own transaction; computed from one snapshot of `replica` per program
    (the primary without one)."""
    sets = [list(by) for by in CACHED_BREAKDOWNS]
    for program in await queries.programs_named(conn, None):
        async with replica.view(conn) as read:
            economics = await economics_report(read.conn, program.id, program.settings)
            attribution = await attribution_report(read.conn, program.id, list(MODELS),
                                                   half_life_days(program.settings))
            breakdowns = await breakdown_reports(read.conn, program.id, program.settings, sets)
        await queries.store_report(conn, program.id, "economics", "", economics)
        await queries.store_report(conn, program.id, *ATTRIBUTION, attribution)
        for by, body in zip(sets, breakdowns, strict=True):
            await queries.store_report(conn, program.id, "breakdown", breakdown_params(by),
                                       body)


async def publish_economics_metrics(conn: asyncpg.Connection) -> None:
    """Per-program gauges from the cached economics (every node publishes the same): referred
    revenue (net), incentive cost (net) and ROI per currency, for at most MAX_PROGRAM_SERIES
    programs; a ROI that is undefined (no cost) has no series."""
    cached = await queries.cached_reports(conn, "economics", "", MAX_PROGRAM_SERIES)
    for gauge in (metrics.PROGRAM_REFERRED_REVENUE, metrics.PROGRAM_INCENTIVE_COST,
                  metrics.PROGRAM_ROI):
        gauge.clear()
    for c in cached:
        for cur, money in c.body["referred_revenue"].items():
            metrics.PROGRAM_REFERRED_REVENUE.labels(program=c.slug, currency=cur).set(
                money["net"])
        for cur, cost in c.body["incentive_cost"].items():
            metrics.PROGRAM_INCENTIVE_COST.labels(program=c.slug, currency=cur).set(
                cost["total"]["net"])
        for cur, roi in c.body["roi"].items():
            if roi is not None:
                metrics.PROGRAM_ROI.labels(program=c.slug, currency=cur).set(roi)
