"""The finance review page (/review): server-rendered HTML over the same evidence as the API.

The handlers; sessions.py keeps the login sessions and checks CSRF, render.py the templates
(templates/), the static files and the security headers, filters.py the presentation helpers.
Decisions go through `tracker.finance.ledger.decide`, so the page and the API write the same
audit rows and ledger entries; each is answered by a 303.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from urllib.parse import urlencode

from aiohttp import web

from tracker.errors import Conflict, NotFound
from tracker.finance.evidence import (
    RewardDetail,
    display_names,
    list_rewards,
    reward_detail,
    reward_rules,
)
from tracker.finance.ledger import FROM_STATUS, decide
from tracker.web import keys
from tracker.web.bodies import BodyError
from tracker.web.pages import database_guarded
from tracker.web.review import cases, program, render
from tracker.web.review.filters import age, counted
from tracker.web.review.graph import NODE_TYPES, layout
from tracker.web.review.render import page, see_other
from tracker.web.review.sessions import (
    COOKIE,
    LOGIN_ROLES,
    ROLES,
    SESSION_TTL,
    Form,
    Session,
    body_refused,
    create_session,
    cross_site,
    deciding,
    end_session,
    leaving,
    login_form_fields,
    viewing,
)

PAGE = 100
SORTS = ("risk", "amount", "age")
REASON_MAX = 1000
BULK_MAX = 1000
FLASH = {"approved": "Approved {rewards}.", "rejected": "Rejected {rewards}.",
         "first": "Recorded your approval of {rewards}; a second finance user must "
                  "approve too.",
         "skipped": "{rewards} could not be approved: decided meanwhile, or unknown."}
ACTIONS = (("approve", "Approve", ""), ("reject", "Reject", "reject"))


# -- form and query values ---------------------------------------------------------------------


def field(form: Form, key: str) -> str:
    value = form.get(key)
    return value if isinstance(value, str) else ""


def decision_reason(form: Form) -> str | None:
    """The form's reason on one line, or None if it is missing or not plain text."""
    reason = " ".join(field(form, "reason").split())
    if not reason or len(reason) > REASON_MAX or not reason.isprintable():
        return None
    return reason


def number(raw: str, digits: int = 18) -> int | None:
    """A non-negative integer written in ASCII digits ("²".isdigit() is true, int() of it
    fails), or None."""
    return int(raw) if raw.isascii() and raw.isdigit() and len(raw) <= digits else None


def reward_id(request: web.Request) -> int | None:
    return number(request.match_info["reward_id"])


def flash_text(query: Mapping[str, str]) -> str:
    """Fixed messages with counts only, so a crafted link cannot put words on the page."""
    parts = []
    for key, template in FLASH.items():
        n = number(query.get(key, ""), 6)
        if n:
            parts.append(template.format(rewards=counted(n, "reward")))
    return " ".join(parts)


# -- login -------------------------------------------------------------------------------------


def login_page(request: web.Request, message: str = "", status: int = 200) -> web.Response:
    return page(request, "login.html", {"title": "Log in", "flash": message}, status=status)


async def login_form(request: web.Request) -> web.Response:
    return login_page(request)


@database_guarded
async def login(request: web.Request) -> web.Response:
    # Decided on the headers before the body is read (sessions.py: login CSRF, stranger's body).
    if cross_site(request):
        return login_page(request, "Log in from this site's own login page.", 403)
    try:
        form = await login_form_fields(request)
    except BodyError as exc:
        return body_refused(exc)
    token = field(form, "token").strip()
    pool = request.app[keys.POOL]
    principal = await request.app[keys.TOKENS].resolve(pool, token)
    if principal is None:
        return login_page(request, "That token is unknown or revoked.", 401)
    if principal.role not in LOGIN_ROLES:
        return login_page(request, f"A {principal.role} token may not review rewards; use a "
                          "finance token.", 403)
    # A viewer reads the program pages (tracker.web.review.program), not the queue.
    response = see_other("/review" if principal.role in ROLES else "/review/programs")
    response.set_cookie(COOKIE, await create_session(pool, principal), path="/review",
                        max_age=int(SESSION_TTL.total_seconds()), httponly=True,
                        samesite="Strict",
                        secure=request.app[keys.SETTINGS].base_url.startswith("https://"))
    return response


@leaving
async def logout(request: web.Request, session: Session, form: Form) -> web.Response:
    await end_session(request.app[keys.POOL], session)
    response = see_other("/review/login")
    response.del_cookie(COOKIE, path="/review")
    return response


# -- the queue ---------------------------------------------------------------------------------


async def queue_page(request: web.Request, session: Session, *, flash: str = "",
                     status: int = 200) -> web.Response:
    sort = request.query.get("sort", "risk")
    sort = sort if sort in SORTS else "risk"
    offset = number(request.query.get("offset", ""), 9) or 0
    pool = request.app[keys.POOL]
    total = await pool.fetchval("SELECT count(*) FROM rewards WHERE status = 'flagged'")
    items = await list_rewards(pool, status="flagged", sort=sort, offset=offset, limit=PAGE)
    return page(request, "queue.html", {
        "title": "Review queue", "session": session, "flash": flash, "items": items,
        "total": total, "offset": offset, "sort": sort, "sorts": SORTS, "page_size": PAGE,
        "reason_max": REASON_MAX, "now": datetime.now(UTC)}, status=status)


@viewing
async def queue(request: web.Request, session: Session) -> web.Response:
    return await queue_page(request, session, flash=flash_text(request.query))


@deciding
async def bulk_approve(request: web.Request, session: Session, form: Form) -> web.Response:
    ids = [n for v in form.getall("id", []) if isinstance(v, str)
           and (n := number(v)) is not None][:BULK_MAX]
    reason = decision_reason(form)
    if not ids or reason is None:
        return await queue_page(request, session, status=400,
                                flash="Select at least one reward and give a reason (plain "
                                      f"text, at most {REASON_MAX} characters).")
    counts = dict.fromkeys(("approved", "first", "skipped"), 0)
    async with request.app[keys.POOL].acquire() as conn:
        for one in ids:
            try:
                decision = await decide(conn, one, "approve", session.principal.actor, reason,
                                        person=session.principal.identity,
                                        expected_status="flagged")
            except (Conflict, NotFound):
                counts["skipped"] += 1
                continue
            counts["approved" if decision.status == "approved" else "first"] += 1
    sort = field(form, "sort")
    query = {"sort": sort if sort in SORTS else "risk", **{k: n for k, n in counts.items() if n}}
    return see_other("/review?" + urlencode(query))


# -- one reward --------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Event:
    """A row of the timeline: when, how long after the row before, and what."""

    at: datetime
    after: str
    cells: tuple[str, ...]  # event, IP, country, browser, device, flags


def timeline(d: RewardDetail) -> list[Event]:
    """The attributed clicks, then the conversion; each with the time since the one before
    (a purchase seconds after its click is how click injection looks)."""
    events: list[tuple[datetime, tuple[str, ...]]] = []
    for t in d.touchpoints:
        flags = [f"bot ({t.bot_rule})" if t.is_bot else "",
                 "anonymous IP" if t.is_anonymous else "",
                 "hosting IP" if t.is_hosting else ""]
        browser = " / ".join(x for x in (t.ua_browser, t.ua_os) if x)
        events.append((t.ts, (f"click {t.position + 1} via {t.referrer}", t.ip or "",
                              t.country or "", browser, (t.device or "")[:12],
                              ", ".join(f for f in flags if f))))
    conv = d.conversion_detail
    events.append((conv.occurred_at, (f"{conv.type} {conv.event_id} by {conv.customer_id}",
                                      conv.ip or "", "", "", "", "")))
    return [Event(at, age(events[i - 1][0], at) + " later" if i else "", cells)
            for i, (at, cells) in enumerate(events)]


async def detail_page(request: web.Request, session: Session, *, flash: str = "",
                      status: int = 200) -> web.Response:
    rid = reward_id(request)
    async with request.app[keys.POOL].acquire() as conn:
        d = None if rid is None else await reward_detail(conn, rid)
        if d is not None:
            rules = await reward_rules(conn, d.reward.id)
            r = d.reward
            names = await display_names(conn, [(r.program, p) for p in (
                r.referrer, r.payee, d.conversion_detail.customer_id)])
    if d is None:
        return page(request, "missing.html", {"title": "Reward not found", "session": session},
                    status=404)
    return page(request, "reward.html", {
        "title": f"Reward {d.reward.id}", "session": session, "flash": flash, "d": d,
        "timeline": timeline(d), "drawing": layout(d.graph, d.reward.referrer),
        "node_types": NODE_TYPES, "reason_max": REASON_MAX, "rules": rules,
        "names": {who: name for (_p, who), name in names.items()},
        "actions": [a for a in ACTIONS if d.reward.status in FROM_STATUS[a[0]]
                    and not (a[0] == "reject" and d.reward.paid_at is not None)]},
        status=status)


@viewing
async def detail(request: web.Request, session: Session) -> web.Response:
    return await detail_page(request, session)


@deciding
async def decide_one(request: web.Request, session: Session, form: Form) -> web.Response:
    rid, action = reward_id(request), request.match_info["action"]
    reason = decision_reason(form)
    if rid is None:
        return await detail_page(request, session)  # the 404 page
    if reason is None:
        return await detail_page(request, session, status=400, flash="Give a reason (plain text, "
                                 f"at most {REASON_MAX} characters).")
    try:
        async with request.app[keys.POOL].acquire() as conn:
            # The status the page showed: a decision taken since by someone else is not
            # silently overturned (decide answers Conflict).
            decision = await decide(conn, rid, action, session.principal.actor, reason,
                                    person=session.principal.identity,
                                    expected_status=field(form, "seen") or None)
    except NotFound:
        return await detail_page(request, session)
    except Conflict as exc:
        return await detail_page(request, session, status=409, flash=f"Not done: {exc}.")
    done = "rejected" if action == "reject" else (
        "approved" if decision.status == "approved" else "first")
    return see_other(f"/review?{done}=1")


def add_routes(app: web.Application) -> None:
    render.setup(app)
    cases.add_routes(app)
    program.add_routes(app)
    app.router.add_get("/review", queue)
    app.router.add_get("/review/login", login_form)
    app.router.add_post("/review/login", login)
    app.router.add_post("/review/logout", logout)
    app.router.add_post("/review/bulk-approve", bulk_approve)
    app.router.add_get("/review/rewards/{reward_id}", detail)
    app.router.add_post("/review/rewards/{reward_id}/{action:approve|reject}", decide_one)
