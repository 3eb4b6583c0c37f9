"""The review queue by case (/review/cases), the money in view (/review/money) and the CSV
downloads of both.

A case is a group of rewards decided together: all of one referrer's, or all of a ring's (a
fraud flag over a group of accounts: rewards whose referrer or customer is a member). A group
decision is one `tracker.finance.ledger.decide` call per reward (one audit row each) that the
page showed in the group (their ids travel with the form), the reason naming the group
("group referrer:alice — <finance's reason>"). The filters travel in the query (and, for a
decision, as hidden fields), so the page, its CSV and the decision see the same rewards.
"""

from __future__ import annotations

import csv
import io
import re
from collections import defaultdict
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date
from decimal import Decimal
from urllib.parse import urlencode

from aiohttp import web

from tracker.errors import Conflict, NotFound
from tracker.finance import payouts
from tracker.finance.evidence import (
    CASE_STATUSES,
    CaseFilter,
    CaseRow,
    Reason,
    Ring,
    display_names,
    list_cases,
    reason_codes,
)
from tracker.finance.ledger import FROM_STATUS, decide
from tracker.finance.money import money_lines, owed_by_payee
from tracker.web import keys
from tracker.web.review.filters import counted
from tracker.web.review.render import HEADERS, page, see_other
from tracker.web.review.sessions import Form, Session, deciding, viewing

CASES_MAX = 1000  # rewards shown (and decided, and downloaded) at once
STATUS_LABELS = {"flagged": "flagged (waits for finance)",
                 "rejected-auto": "rejected automatically",
                 "approved-auto": "approved automatically",
                 "pending": "pending", "rejected": "rejected (anyone)",
                 "approved": "approved (anyone)", "paid": "paid"}
FILTER_KEYS = ("program", "status", "reason", "min", "max", "from", "to", "q")
GROUP_FLASH = {"approved": "Approved {rewards}.", "rejected": "Rejected {rewards}.",
               "first": "Recorded your approval of {rewards}; a second finance user must "
                        "approve too.",
               "unchanged": "{rewards} left as they were: decided meanwhile, or not open to "
                            "this decision by you."}
CSV_HEADER = ("reward_id", "program", "status", "amount", "currency", "referrer",
              "referrer_name", "customer", "customer_name", "beneficiary", "payee",
              "risk_score", "top_reason", "rings", "decided_by", "created_at")
_SLUG = re.compile(r"[A-Za-z0-9_.-]{1,64}")
_CODE = re.compile(r"[a-z0-9_]{1,64}")
_AMOUNT = re.compile(r"[0-9]{1,12}(?:\.[0-9]{1,3})?")
_DATE = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")
REASON_MAX = 1000


# -- the filter --------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Filters:
    """The filter as typed (`shown`, the valid values only: links and hidden fields repeat
    them), as the query reads it (`case`), and what was not understood (`problems`)."""

    case: CaseFilter
    shown: dict[str, str]
    problems: tuple[str, ...]

    @property
    def query(self) -> str:
        return urlencode({k: v for k, v in self.shown.items() if v})


def _day(raw: str) -> date | None:
    if not _DATE.fullmatch(raw):
        return None
    try:
        return date.fromisoformat(raw)
    except ValueError:
        return None


def read_filters(values: Mapping[str, str]) -> Filters:
    def get(key: str) -> str:
        value = values.get(key, "")
        return " ".join(value.split()) if isinstance(value, str) else ""

    shown: dict[str, str] = {}
    problems = []
    status = get("status") or "flagged"
    if status not in CASE_STATUSES:
        problems.append("status")
        status = "flagged"
    shown["status"] = status
    program = get("program")
    if program and not _SLUG.fullmatch(program):
        problems.append("program")
        program = ""
    reason = get("reason")
    if reason and not _CODE.fullmatch(reason):
        problems.append("reason")
        reason = ""
    amounts: dict[str, Decimal | None] = {}
    for key in ("min", "max"):
        raw = get(key)
        amounts[key] = Decimal(raw) if _AMOUNT.fullmatch(raw) else None
        if raw and amounts[key] is None:
            problems.append(f"{key} amount")
            raw = ""
        shown[key] = raw
    days: dict[str, date | None] = {}
    for key in ("from", "to"):
        raw = get(key)
        days[key] = _day(raw)
        if raw and days[key] is None:
            problems.append(f"date {key}")
            raw = ""
        shown[key] = raw
    search = get("q")
    if len(search) > 128 or not search.isprintable():
        problems.append("search")
        search = ""
    shown.update(program=program, reason=reason, q=search)
    case = CaseFilter(program=program or None, status=status, reason=reason or None,
                      min_amount=amounts["min"], max_amount=amounts["max"],
                      since=days["from"], until=days["to"], search=search or None)
    return Filters(case, {k: shown[k] for k in FILTER_KEYS}, tuple(problems))


# -- the groups --------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Group:
    """Rewards decided together: one referrer's (kind "referrer", key its external id) or one
    ring's (kind "ring", key the fraud flag id)."""

    kind: str
    program: str
    key: str
    name: str | None  # the referrer's display name
    rows: tuple[CaseRow, ...]
    totals: tuple[tuple[str, int], ...]  # (currency, amount), by currency
    reasons: tuple[str, ...]  # the strongest, at most three
    members: tuple[str, ...]
    ring: Ring | None = None

    @property
    def label(self) -> str:
        return f"{self.kind}:{self.key}"

    @property
    def can_approve(self) -> bool:
        return any(decidable(r, "approve") for r in self.rows)

    @property
    def can_reject(self) -> bool:
        return any(decidable(r, "reject") for r in self.rows)


def decidable(row: CaseRow, action: str) -> bool:
    """Whether the ledger takes this decision on the reward as it stands (a paid reward is
    never rejected: a refund reverses it)."""
    status = row.item.status
    return status in FROM_STATUS[action] and not (action == "reject" and
                                                  row.item.paid_at is not None)


def _totals(rows: list[CaseRow]) -> tuple[tuple[str, int], ...]:
    sums: dict[str, int] = defaultdict(int)
    for r in rows:
        sums[r.item.currency] += r.item.amount
    return tuple(sorted(sums.items()))


def _strongest(reasons: list[Reason], n: int = 3) -> tuple[str, ...]:
    best: dict[str, float] = {}
    for x in reasons:
        text = x.message or x.code or ""
        if text:
            best[text] = max(best.get(text, 0.0), x.weight or 0.0)
    return tuple(sorted(best, key=lambda t: -best[t])[:n])


def groups(rows: list[CaseRow], rings: Mapping[int, Ring],
           names: Mapping[tuple[str, str], str]) -> tuple[list[Group], list[Group]]:
    """The referrer groups (every row is in one) and the ring groups, most money first."""
    by_referrer: dict[tuple[str, str], list[CaseRow]] = defaultdict(list)
    by_ring: dict[int, list[CaseRow]] = defaultdict(list)
    for r in rows:
        by_referrer[(r.item.program, r.item.referrer)].append(r)
        for ring_id in r.rings:
            by_ring[ring_id].append(r)
    referrers = [
        Group("referrer", program, referrer, names.get((program, referrer)), tuple(members),
              _totals(members), _strongest([x for m in members for x in m.item.reasons]),
              tuple(sorted({m.customer for m in members})))
        for (program, referrer), members in by_referrer.items()]
    ring_groups = [
        Group("ring", members[0].item.program, str(ring_id), None, tuple(members),
              _totals(members), _strongest(list(rings[ring_id].reasons)
                                           + [x for m in members for x in m.item.reasons]),
              tuple(f"{m.type} {m.id}" for m in rings[ring_id].members
                    if m.type in ("referrer", "customer")), rings[ring_id])
        for ring_id, members in by_ring.items() if ring_id in rings]

    def weight(g: Group) -> tuple[int, int, str]:
        return (-len(g.rows), -sum(a for _c, a in g.totals), g.label)

    return sorted(referrers, key=weight), sorted(ring_groups, key=weight)


def people(rows: list[CaseRow]) -> set[tuple[str, str]]:
    return {(r.item.program, p) for r in rows for p in (r.item.referrer, r.customer)}


def flash_text(query: Mapping[str, str]) -> str:
    """Fixed messages with counts only (as on the queue)."""
    parts = []
    for key, template in GROUP_FLASH.items():
        raw = query.get(key, "")
        if raw.isascii() and raw.isdigit() and len(raw) <= 6 and int(raw):
            parts.append(template.format(rewards=counted(int(raw), "reward")))
    return " ".join(parts)


# -- handlers ----------------------------------------------------------------------------------


async def cases_page(request: web.Request, session: Session, values: Mapping[str, str], *,
                     flash: str = "", status: int = 200) -> web.Response:
    f = read_filters(values)
    pool = request.app[keys.POOL]
    rows, rings = await list_cases(pool, f.case, limit=CASES_MAX)
    names = await display_names(pool, people(rows))
    referrers, ring_groups = groups(rows, rings, names)
    programs = [r["slug"] for r in await pool.fetch("SELECT slug FROM programs ORDER BY slug")]
    if f.problems and not flash:
        flash = "Ignored what could not be read: " + ", ".join(f.problems) + "."
    return page(request, "cases.html", {
        "title": "Review by case", "session": session, "flash": flash, "f": f,
        "rows": rows, "limit": CASES_MAX, "referrers": referrers, "rings": ring_groups,
        "names": names, "programs": programs, "codes": await reason_codes(pool),
        "statuses": STATUS_LABELS, "reason_max": REASON_MAX,
        "totals": _totals(rows)}, status=status)


@viewing
async def cases(request: web.Request, session: Session) -> web.Response:
    return await cases_page(request, session, request.query, flash=flash_text(request.query))


@viewing
async def cases_csv(request: web.Request, session: Session) -> web.Response:
    """Exactly the rewards the page shows for the same filters, cells safe for spreadsheets
    (tracker.finance.payouts.csv_cell)."""
    f = read_filters(request.query)
    pool = request.app[keys.POOL]
    rows, _rings = await list_cases(pool, f.case, limit=CASES_MAX)
    names = await display_names(pool, people(rows))
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(CSV_HEADER)
    for r in rows:
        i = r.item
        top = i.top_reason
        writer.writerow([payouts.csv_cell(v) for v in (
            i.id, i.program, i.status, i.amount, i.currency, i.referrer,
            names.get((i.program, i.referrer), ""), r.customer,
            names.get((i.program, r.customer), ""), i.beneficiary, i.payee,
            "" if i.risk_score is None else f"{i.risk_score:.2f}",
            "" if top is None else (top.message or top.code or ""),
            ";".join(str(x) for x in r.rings), i.decided_by or "", i.created_at.isoformat())])
    return csv_response(out.getvalue(), "review-cases.csv")


def csv_response(text: str, filename: str) -> web.Response:
    return web.Response(text=text, content_type="text/csv", charset="utf-8", headers={
        **HEADERS, "Content-Disposition": f'attachment; filename="{filename}"'})


@deciding
async def decide_group(request: web.Request, session: Session, form: Form) -> web.Response:
    action = request.match_info["action"]
    values = {k: v for k, v in form.items() if isinstance(v, str)}
    f = read_filters(values)
    kind, program, key = (values.get(k, "") for k in ("kind", "group_program", "key"))
    reason = " ".join(values.get("reason", "").split())
    if not reason or len(reason) > REASON_MAX or not reason.isprintable():
        return await cases_page(request, session, values, status=400,
                                flash="Give a reason for the group (plain text, at most "
                                      f"{REASON_MAX} characters).")
    rows, rings = await list_cases(request.app[keys.POOL], f.case, limit=CASES_MAX)
    names = await display_names(request.app[keys.POOL], people(rows))
    by_referrer, by_ring = groups(rows, rings, names)
    chosen = next((g for g in by_referrer + by_ring
                   if g.kind == kind and g.program == program and g.key == key), None)
    # Only the rewards the page showed: one that joined the group since is left for a look.
    seen = {n for v in form.getall("id", []) if isinstance(v, str)
            and v.isascii() and v.isdigit() and len(v) <= 18 and (n := int(v))}
    deciding_on = [] if chosen is None else [r for r in chosen.rows if r.item.id in seen]
    if chosen is None or not deciding_on:
        return await cases_page(request, session, values, status=409,
                                flash="That group has nothing left under these filters; "
                                      "nothing was changed.")
    counts = dict.fromkeys(GROUP_FLASH, 0)
    said = f"group {chosen.label} — {reason}"
    async with request.app[keys.POOL].acquire() as conn:
        for row in deciding_on:
            if not decidable(row, action):
                counts["unchanged"] += 1
                continue
            try:
                decision = await decide(conn, row.item.id, action, session.principal.actor,
                                        said, person=session.principal.identity,
                                        expected_status=row.item.status)
            except (Conflict, NotFound):
                counts["unchanged"] += 1
                continue
            done = "rejected" if action == "reject" else (
                "approved" if decision.status == "approved" else "first")
            counts[done] += 1
    query = {**{k: v for k, v in f.shown.items() if v}, **{k: n for k, n in counts.items() if n}}
    return see_other("/review/cases?" + urlencode(query))


@viewing
async def money(request: web.Request, session: Session) -> web.Response:
    program = request.query.get("program", "")
    program = program if _SLUG.fullmatch(program) else ""
    pool = request.app[keys.POOL]
    async with pool.acquire() as conn:
        pid = await conn.fetchval("SELECT id FROM programs WHERE slug = $1", program) \
            if program else None
        batches = [] if program and pid is None else await payouts.list_batches(
            conn, program_id=pid, limit=100)
    return page(request, "money.html", {
        "title": "Money", "session": session, "program": program,
        "lines": await money_lines(pool, program=program or None),
        "owed": await owed_by_payee(pool, program=program or None),
        "batches": batches,
        "programs": [r["slug"] for r in await pool.fetch(
            "SELECT slug FROM programs ORDER BY slug")]})


@viewing
async def batch_csv(request: web.Request, session: Session) -> web.Response:
    """A payout batch's CSV, as `GET /api/v1/payouts/{batch_id}` with Accept: text/csv answers
    it, for the page's session."""
    detail = None
    async with request.app[keys.POOL].acquire() as conn:
        try:
            detail = await payouts.get_batch(conn, request.match_info["batch_id"])
        except NotFound:
            detail = None
    if detail is None:
        return page(request, "missing.html", {"title": "Batch not found", "session": session,
                                              "what": "payout batch"}, status=404)
    return csv_response(payouts.batch_csv(detail), f"payout-{detail.batch_id}.csv")


def add_routes(app: web.Application) -> None:
    app.router.add_get("/review/cases", cases)
    app.router.add_get("/review/cases.csv", cases_csv)
    app.router.add_post("/review/groups/{action:approve|reject}", decide_group)
    app.router.add_get("/review/money", money)
    app.router.add_get("/review/payouts/{batch_id}.csv", batch_csv)
