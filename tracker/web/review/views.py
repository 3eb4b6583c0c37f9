"""The finance review page (/review): server-rendered HTML over the same evidence as the API.

Finance logs in with a finance (or admin) token once; the page keeps a session in
`review_sessions` (the cookie carries a random id, the database its hash) with a CSRF token
that every POST must echo. Decisions go through `tracker.finance.ledger.decide`, so the page and the
API write the same audit rows and ledger entries; each is answered by a 303.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from html import escape
from typing import Any
from urllib.parse import urlencode

import asyncpg
import networkx as nx
from aiohttp import web
from multidict import MultiDictProxy

from tracker import audit
from tracker.auth import Principal, hash_token
from tracker.errors import Conflict, NotFound
from tracker.finance.evidence import list_rewards, reward_detail, reward_item
from tracker.finance.ledger import FROM_STATUS, decide
from tracker.formats import rfc3339
from tracker.web import keys

COOKIE = "rg_review"
SESSION_TTL = timedelta(hours=12)
ROLES = ("finance", "admin")
PAGE = 100
SORTS = ("risk", "amount", "age")
REASON_MAX = 1000
BULK_MAX = 1000
GRAPH_SEED = 7
GRAPH_LABELS = 20  # above this many nodes only the referrer is named (the rest on hover)
# ISO 4217 minor units where they are not 2.
DECIMALS = {**dict.fromkeys(("BIF", "CLP", "DJF", "GNF", "ISK", "JPY", "KMF", "KRW", "PYG",
                             "RWF", "UGX", "VND", "VUV", "XAF", "XOF", "XPF"), 0),
            **dict.fromkeys(("BHD", "IQD", "JOD", "KWD", "LYD", "OMR", "TND"), 3)}
FLASH = {"approved": "Approved {rewards}.", "rejected": "Rejected {rewards}.",
         "first": "Recorded your approval of {rewards}; a second finance user must "
                  "approve too.",
         "skipped": "{rewards} could not be approved: decided meanwhile, or unknown."}
NODE_TYPES = {"referrer": "referrer", "customer": "customer", "ip": "IP address",
              "device": "device"}

CSS = """
:root{--fg:#1d2330;--muted:#5b6475;--line:#dde1e8;--bg:#f5f6f8;--accent:#1f5fbf;--bad:#b3261e}
*{box-sizing:border-box}
body{margin:0;font:15px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;
color:var(--fg);background:var(--bg)}
header{display:flex;flex-wrap:wrap;gap:.4rem 1rem;align-items:center;padding:.6rem 1rem;
background:#fff;border-bottom:1px solid var(--line)}
header .brand{font-weight:700;text-decoration:none;color:var(--fg)}
header .who{margin-left:auto;color:var(--muted);font-size:.9em}
header form{margin:0}
main{max-width:1100px;margin:0 auto;padding:1rem}
h1{font-size:1.35rem;margin:.2rem 0 1rem;overflow-wrap:anywhere}
h2{font-size:1.1rem;margin:0 0 .6rem}
a{color:var(--accent)}
.card{background:#fff;border:1px solid var(--line);border-radius:8px;padding:1rem;
margin:0 0 1rem}
.scroll{overflow-x:auto}
table{border-collapse:collapse;width:100%}
.scroll table{min-width:36rem}
th,td{text-align:left;padding:.4rem .55rem;border-bottom:1px solid var(--line);
vertical-align:top}
th{font-weight:600;color:var(--muted);font-size:.85em;white-space:nowrap}
td.num{text-align:right;white-space:nowrap;font-variant-numeric:tabular-nums}
td.nowrap{white-space:nowrap}
.flash{padding:.6rem .8rem;border-radius:6px;background:#e7f4ea;border:1px solid #b9dfc2;
margin:0 0 1rem}
.flash.error{background:#fdecea;border-color:#f5c2bd}
.muted{color:var(--muted)}
label{display:block;font-weight:600;margin:0 0 .3rem}
textarea,input[type=password],input[type=text]{width:100%;font:inherit;padding:.45rem;
border:1px solid var(--line);border-radius:6px}
textarea{min-height:4.5rem}
button{font:inherit;padding:.45rem .9rem;border-radius:6px;border:1px solid var(--accent);
background:var(--accent);color:#fff;cursor:pointer;margin-top:.5rem}
button:disabled{opacity:.5;cursor:default}
button.reject{background:var(--bad);border-color:var(--bad)}
button.link{background:none;border:0;color:var(--accent);padding:0;margin:0;
text-decoration:underline}
.bar{display:flex;flex-wrap:wrap;gap:.5rem 1rem;align-items:end;margin:.8rem 0 0}
.bar>div{flex:1 1 16rem}
nav.sort a{margin-right:.7rem}
nav.sort a[aria-current]{font-weight:700;color:var(--fg);text-decoration:none}
.pages{display:flex;gap:1rem;margin-top:.8rem}
.decide{display:grid;grid-template-columns:repeat(auto-fit,minmax(16rem,1fr));gap:1rem}
dl.facts{display:grid;grid-template-columns:max-content 1fr;gap:.25rem 1rem;margin:0}
dl.facts dt{color:var(--muted)}
dl.facts dd{margin:0;overflow-wrap:anywhere}
ul.reasons{margin:0;padding-left:1.2rem}
ul.reasons li{margin:.2rem 0}
.graph svg{display:block;width:100%;height:auto;max-height:32rem;background:#fbfcfd;
border:1px solid var(--line);border-radius:6px}
.legend{display:flex;flex-wrap:wrap;gap:.3rem 1rem;list-style:none;padding:0;
margin:.5rem 0 1rem;font-size:.9em}
.dot{display:inline-block;width:.8em;height:.8em;border-radius:50%;margin-right:.3em}
.t-referrer{fill:#d9480f;background:#d9480f}.t-customer{fill:#1f5fbf;background:#1f5fbf}
.t-ip{fill:#2b8a3e;background:#2b8a3e}.t-device{fill:#7048e8;background:#7048e8}
circle{stroke:#fff;stroke-width:1.5}circle.me{stroke:#111;stroke-width:3}
line.uses{stroke:#b8bfcb;stroke-width:1.2;stroke-dasharray:4 3}
line.referred{stroke:#5b6475;stroke-width:1.6}
svg text{font-size:13px;fill:#1d2330;text-anchor:middle}svg text.me{font-weight:700}
.edge{display:inline-block;width:1.6em;border-top:2px solid #5b6475;margin-right:.3em;
vertical-align:middle}.edge.uses{border-top:2px dashed #b8bfcb}
@media (max-width:600px){main{padding:.6rem}.card{padding:.7rem}th,td{padding:.35rem .4rem}
body{font-size:14px}
.scroll table.stack{min-width:0}table.stack thead{display:none}
table.stack tr{display:flex;flex-wrap:wrap;gap:.1rem .9rem;padding:.5rem 0;
border-bottom:1px solid var(--line)}
table.stack td{display:block;border:0;padding:.1rem 0;text-align:left}
table.stack td[data-label]::before{content:attr(data-label) " ";color:var(--muted);
font-size:.85em}
table.stack td.wide{flex-basis:100%}}
"""
JS = """(function () {
  var all = document.getElementById("all"), bulk = document.getElementById("bulk");
  if (!all || !bulk) return;
  var boxes = [].slice.call(document.querySelectorAll('input[name="id"]'));
  function sync() {
    var n = boxes.filter(function (b) { return b.checked; }).length;
    bulk.disabled = n === 0;
    bulk.textContent = "Approve selected (" + n + ")";
  }
  boxes.forEach(function (b) { b.addEventListener("change", sync); });
  all.addEventListener("change", function () {
    boxes.forEach(function (b) { b.checked = all.checked; });
    sync();
  });
  sync();
})();"""


def _csp_hash(source: str) -> str:
    return "'sha256-" + base64.b64encode(hashlib.sha256(source.encode()).digest()).decode() + "'"


# Hashes rather than 'unsafe-inline': only this stylesheet and this script may run.
HEADERS = {
    "Content-Security-Policy": f"default-src 'none'; style-src {_csp_hash(CSS)}; "
                               f"script-src {_csp_hash(JS)}; form-action 'self'; "
                               "frame-ancestors 'none'; base-uri 'none'",
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",
}


@dataclass(frozen=True, slots=True)
class Session:
    id_hash: bytes
    csrf: str
    principal: Principal


Form = MultiDictProxy[Any]
Viewer = Callable[[web.Request, Session], Awaitable[web.Response]]
Decider = Callable[[web.Request, Session, Form], Awaitable[web.Response]]


# -- sessions ----------------------------------------------------------------------------------


async def load_session(pool: asyncpg.Pool, cookie: str | None) -> Session | None:
    """The live session of a cookie, if its token is still a finance or admin token."""
    if not cookie or len(cookie) > 100:
        return None
    id_hash = hash_token(cookie)
    row = await pool.fetchrow(
        """SELECT s.csrf, t.id, t.name, t.role FROM review_sessions s
           JOIN api_tokens t ON t.id = s.token_id
           WHERE s.id_hash = $1 AND s.expires_at > now() AND t.revoked_at IS NULL
             AND t.role = ANY($2::text[])""", id_hash, list(ROLES))
    if row is None:
        return None
    return Session(id_hash, row["csrf"], Principal(row["id"], row["name"], row["role"]))


async def create_session(pool: asyncpg.Pool, principal: Principal) -> str:
    """A new session for the principal; returns the cookie value (shown to the browser only)."""
    session_id = secrets.token_urlsafe(32)
    async with pool.acquire() as conn, conn.transaction():
        await conn.execute("DELETE FROM review_sessions WHERE expires_at <= now()")
        await conn.execute(
            """INSERT INTO review_sessions (id_hash, token_id, csrf, expires_at)
               VALUES ($1, $2, $3, now() + $4::interval)""",
            hash_token(session_id), principal.token_id, secrets.token_urlsafe(32), SESSION_TTL)
        await audit.record(conn, actor=principal.actor, action="review.login",
                    object_type="api_token", object_id=str(principal.token_id))
    return session_id


def viewing(handler: Viewer) -> Callable[[web.Request], Awaitable[web.Response]]:
    """GET handlers: a signed-in finance user, or a 303 to the login form."""

    async def guarded(request: web.Request) -> web.Response:
        session = await load_session(request.app[keys.POOL], request.cookies.get(COOKIE))
        if session is None:
            return see_other("/review/login")
        return await handler(request, session)

    return guarded


def deciding(handler: Decider) -> Callable[[web.Request], Awaitable[web.Response]]:
    """POST handlers: a signed-in finance user whose form carries the session's CSRF token."""

    async def guarded(request: web.Request) -> web.Response:
        form = await request.post()
        session = await load_session(request.app[keys.POOL], request.cookies.get(COOKIE))
        sent = form.get("csrf")
        if session is None or not isinstance(sent, str) or not hmac.compare_digest(
                sent.encode(), session.csrf.encode()):
            return page("Not allowed", "<p>This form has expired or did not come from the "
                        "review page. Nothing was changed.</p>"
                        '<p><a href="/review">Back to the review queue</a></p>', status=403)
        return await handler(request, session, form)

    return guarded


# -- layout and formatting ---------------------------------------------------------------------


def page(title: str, body: str, *, session: Session | None = None, status: int = 200,
         flash: str = "") -> web.Response:
    """The one page layout: header, optional message, body; with the security headers."""
    who = ""
    if session is not None:
        who = (f'<span class="who">{escape(session.principal.name)} '
               f'({escape(session.principal.role)})</span>'
               f'<form method="post" action="/review/logout">{csrf_field(session)}'
               '<button class="link">Log out</button></form>')
    kind = "flash error" if status >= 400 else "flash"
    note = f'<p class="{kind}" role="status">{escape(flash)}</p>' if flash else ""
    html = f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{escape(title)} · refguard review</title><style>{CSS}</style></head>
<body><header><a class="brand" href="/review">refguard review</a>{who}</header>
<main><h1>{escape(title)}</h1>{note}{body}</main><script>{JS}</script></body></html>"""
    return web.Response(text=html, status=status, content_type="text/html", headers=HEADERS)


def see_other(location: str) -> web.Response:
    return web.Response(status=303, headers={**HEADERS, "Location": location})


def csrf_field(session: Session) -> str:
    return f'<input type="hidden" name="csrf" value="{escape(session.csrf)}">'


def money(amount: int | None, currency: str | None) -> str:
    if amount is None:
        return "—"
    code = (currency or "").upper()
    places = DECIMALS.get(code, 2)
    major, minor = divmod(abs(amount), 10**places)
    sign = "-" if amount < 0 else ""
    text = f"{sign}{major:,}" + (f".{minor:0{places}d}" if places else "")
    return f"{text} {escape(code)}".strip()


def when(value: datetime | None) -> str:
    if value is None:
        return "—"
    utc = value.astimezone(UTC)
    return f'<time datetime="{rfc3339(utc)}">{utc:%Y-%m-%d %H:%M:%S} UTC</time>'


def age(since: datetime, now: datetime) -> str:
    seconds = max(0, int((now - since).total_seconds()))
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if seconds >= size:
            return f"{seconds // size} {unit}"
    return f"{seconds} s"


def measure(value: object) -> str:
    """A reason's measured value or threshold, as text."""
    if isinstance(value, float):
        return f"{value:.3f}".rstrip("0").rstrip(".")
    if isinstance(value, list | tuple):
        return ", ".join(measure(v) for v in value)
    return str(value)


def risk(score: float | None) -> str:
    return "—" if score is None else f"{score:.2f}"


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


def table(head: tuple[str, ...], rows: list[str], css: str = "") -> str:
    heading = "".join(f"<th>{h}</th>" for h in head)
    return (f'<div class="scroll"><table{css}><thead><tr>{heading}</tr></thead>'
            f'<tbody>{"".join(rows)}</tbody></table></div>')


# -- login -------------------------------------------------------------------------------------


def login_page(message: str = "", status: int = 200) -> web.Response:
    body = """<form class="card" method="post" action="/review/login">
<label for="token">Finance token</label>
<input id="token" type="password" name="token" autocomplete="off" required>
<button>Log in</button>
<p class="muted">Use a token with the finance or admin role (<code>refguard token create
--role finance --name you</code>). The page keeps you signed in for 12 hours.</p></form>"""
    return page("Log in", body, status=status, flash=message)


async def login_form(request: web.Request) -> web.Response:
    return login_page()


async def login(request: web.Request) -> web.Response:
    token = field(await request.post(), "token").strip()
    pool = request.app[keys.POOL]
    principal = await request.app[keys.TOKENS].resolve(pool, token)
    if principal is None:
        return login_page("That token is unknown or revoked.", 401)
    if principal.role not in ROLES:
        return login_page(f"A {principal.role} token may not review rewards; use a finance "
                          "token.", 403)
    response = see_other("/review")
    response.set_cookie(COOKIE, await create_session(pool, principal), path="/review",
                        max_age=int(SESSION_TTL.total_seconds()), httponly=True,
                        samesite="Strict",
                        secure=request.app[keys.SETTINGS].base_url.startswith("https://"))
    return response


@deciding
async def logout(request: web.Request, session: Session, form: Form) -> web.Response:
    await request.app[keys.POOL].execute("DELETE FROM review_sessions WHERE id_hash = $1",
                                         session.id_hash)
    response = see_other("/review/login")
    response.del_cookie(COOKIE, path="/review")
    return response


# -- the queue ---------------------------------------------------------------------------------


def counted(n: int, noun: str) -> str:
    """'1 reward', '3 rewards'."""
    return f"{n} {noun}{'' if n == 1 else 's'}"


def flash_text(query: Mapping[str, str]) -> str:
    """Fixed messages with counts only, so a crafted link cannot put words on the page."""
    parts = []
    for key, template in FLASH.items():
        n = number(query.get(key, ""), 6)
        if n:
            parts.append(template.format(rewards=counted(n, "reward")))
    return " ".join(parts)


def queue_row(item: dict[str, Any], now: datetime) -> str:
    reasons = sorted(item["reasons"], key=lambda r: -float(r.get("weight") or 0))
    top = escape(str(reasons[0].get("message", ""))) if reasons else "—"
    rid = item["id"]
    # data-label: on a phone the rows stack and each cell names itself.
    return (f'<tr><td><input type="checkbox" name="id" value="{rid}" '
            f'aria-label="select reward {rid}"></td>'
            f'<td class="nowrap"><a href="/review/rewards/{rid}">Reward {rid}</a></td>'
            f'<td class="num" data-label="Amount">{money(item["amount"], item["currency"])}</td>'
            f'<td class="num" data-label="Risk">{risk(item["risk_score"])}</td>'
            f'<td class="nowrap" data-label="Age">'
            f'{age(item["flagged_at"] or item["created_at"], now)}</td>'
            f'<td data-label="Program">{escape(item["program"])}</td>'
            f'<td data-label="Referrer">{escape(item["referrer"])}</td>'
            f'<td data-label="Payee">{escape(item["payee"])}</td>'
            f'<td class="wide" data-label="Top reason">{top}</td></tr>')


async def queue_page(request: web.Request, session: Session, *, flash: str = "",
                     status: int = 200) -> web.Response:
    sort = request.query.get("sort", "risk")
    sort = sort if sort in SORTS else "risk"
    offset = number(request.query.get("offset", ""), 9) or 0
    pool = request.app[keys.POOL]
    total = await pool.fetchval("SELECT count(*) FROM rewards WHERE status = 'flagged'")
    rows = await list_rewards(pool, status="flagged", sort=sort, offset=offset, limit=PAGE)
    now = datetime.now(UTC)
    sorts = " ".join(
        f'<a href="/review?sort={s}"{" aria-current=page" if s == sort else ""}>{s}</a>'
        for s in SORTS)
    shown = f" Showing {offset + 1} to {offset + len(rows)}." if rows and total > PAGE else ""
    waiting = "1 flagged reward waits" if total == 1 else f"{total} flagged rewards wait"
    parts = [f"<p>{waiting} for a decision.{shown}</p>"
             f'<nav class="sort">Sort by: {sorts}</nav>']
    if not rows:
        parts.append('<p class="card">Nothing to review: no flagged rewards.</p>' if not total
                     else f'<p class="card">Nothing on this page. <a href="/review?sort={sort}">'
                          "Back to the first page</a></p>")
        return page("Review queue", "".join(parts), session=session, flash=flash,
                    status=status)
    parts.append(
        f'<form class="card" method="post" action="/review/bulk-approve">{csrf_field(session)}'
        f'<input type="hidden" name="sort" value="{sort}">'
        + table(('<input type="checkbox" id="all" aria-label="select all">', "Reward",
                 "Amount", "Risk", "Age", "Program", "Referrer", "Payee", "Top reason"),
                [queue_row(reward_item(r), now) for r in rows], ' class="stack"')
        + '<div class="bar"><div><label for="bulk-reason">Reason for the selected</label>'
          f'<input id="bulk-reason" type="text" name="reason" maxlength="{REASON_MAX}" required>'
          "</div>"
          '<button id="bulk">Approve selected</button></div></form>')
    links = []
    if offset > 0:
        links.append(f'<a href="/review?sort={sort}&amp;offset={max(0, offset - PAGE)}">'
                     "Previous</a>")
    if offset + PAGE < total:
        links.append(f'<a href="/review?sort={sort}&amp;offset={offset + PAGE}">Next</a>')
    parts.append(f'<nav class="pages">{"".join(links)}</nav>')
    return page("Review queue", "".join(parts), session=session, flash=flash, status=status)


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
                decision = await decide(conn, one, "approve", session.principal.actor, reason)
            except (Conflict, NotFound):
                counts["skipped"] += 1
                continue
            counts["approved" if decision.status == "approved" else "first"] += 1
    sort = field(form, "sort")
    query = {"sort": sort if sort in SORTS else "risk", **{k: n for k, n in counts.items() if n}}
    return see_other("/review?" + urlencode(query))


# -- one reward --------------------------------------------------------------------------------


def facts(d: dict[str, Any]) -> str:
    conv = d["conversion_detail"]
    pairs = [
        ("Status", escape(d["status"])),
        ("Amount", money(d["amount"], d["currency"])),
        ("Paid to", f'{escape(d["payee"])} <span class="muted">({escape(d["beneficiary"])})'
                    "</span>"),
        ("Referrer", escape(d["referrer"])),
        ("Program", escape(d["program"])),
        ("Risk", risk(d["risk_score"])),
        ("Conversion", f'{escape(conv["type"])} {escape(conv["event_id"])} by customer '
                       f'{escape(conv["customer_id"])}, {money(conv["amount"], conv["currency"])}'),
        ("Calculation", calculation(d["calculation"], d["currency"], conv["currency"])),
        ("Created", when(d["created_at"])),
        ("Hold until", when(d["hold_until"])),
        ("Flagged", when(d["flagged_at"])),
    ]
    if d["decided_by"]:
        pairs.append(("Decided", f'{escape(d["decided_by"])}, {when(d["decided_at"])}: '
                                 f'{escape(d["decision_reason"] or "")}'))
    pairs += [("Approval", f'{escape(a["actor"])}, {when(a["at"])}: {escape(a["reason"])}')
              for a in d["approvals"]]
    items = "".join(f"<dt>{k}</dt><dd>{v}</dd>" for k, v in pairs)
    return f'<section class="card"><dl class="facts">{items}</dl></section>'


def calculation(calc: dict[str, Any], currency: str, base_currency: str | None) -> str:
    """How the amount came about (tracker.finance.clearance writes these keys), money as money."""
    parts = []
    for key, value in calc.items():
        if value is None:
            continue
        if key == "base" and isinstance(value, int):
            text = money(value, base_currency or currency)
        elif key in ("whole", "share") and isinstance(value, int):
            text = money(value, currency)
        elif key == "credit" and isinstance(value, int | float):
            text = f"{value:.0%}"
        else:
            text = escape(measure(value))
        parts.append(f"{escape(key.replace('_', ' '))} {text}")
    return ", ".join(parts) or "—"


def reasons_section(reasons: list[dict[str, Any]]) -> str:
    items = "".join(
        f'<li><strong>{escape(str(r.get("message", r.get("code", ""))))}</strong> '
        f'<span class="muted">measured {escape(measure(r.get("value")))}, threshold '
        f'{escape(measure(r.get("threshold")))}</span></li>' for r in reasons)
    body = f'<ul class="reasons">{items}</ul>' if items else "<p>No reasons were recorded.</p>"
    return f'<section class="card"><h2>Why it was flagged</h2>{body}</section>'


def timeline(d: dict[str, Any]) -> str:
    """The attributed clicks, then the conversion; each with the time since the one before
    (a purchase seconds after its click is how click injection looks)."""
    events: list[tuple[datetime, tuple[str, ...]]] = []
    for t in d["touchpoints"]:
        flags = [f"bot ({t['bot_rule']})" if t["is_bot"] else "",
                 "anonymous IP" if t["is_anonymous"] else "",
                 "hosting IP" if t["is_hosting"] else ""]
        browser = " / ".join(str(x) for x in (t["ua_browser"], t["ua_os"]) if x)
        events.append((t["ts"], (f"click {t['position'] + 1} via {t['referrer']}", t["ip"] or "",
                                 t["country"] or "", browser, (t["device"] or "")[:12],
                                 ", ".join(f for f in flags if f))))
    conv = d["conversion_detail"]
    events.append((conv["occurred_at"], (
        f"{conv['type']} {conv['event_id']} by {conv['customer_id']}", conv["ip"] or "", "", "",
        "", "")))
    rows = []
    for i, (at, cells) in enumerate(events):
        after = age(events[i - 1][0], at) + " later" if i else ""
        rows.append(f'<tr><td class="nowrap">{when(at)}</td><td class="nowrap">{after}</td>'
                    + "".join(f"<td>{escape(c)}</td>" for c in cells) + "</tr>")
    return ('<section class="card"><h2>Timeline (UTC)</h2>'
            + table(("Time", "After", "Event", "IP", "Country", "Browser", "Device", "Flags"),
                    rows) + "</section>")


def credits_section(credits: list[dict[str, Any]]) -> str:
    rows = [f'<tr><td>{escape(c["referrer"])}</td><td>{escape(c["model"])}</td>'
            f'<td class="num">{c["credit"]:.0%}</td></tr>' for c in credits]
    body = table(("Referrer", "Model", "Credit"), rows) if rows else "<p>No credits.</p>"
    return f'<section class="card"><h2>Attribution credits</h2>{body}</section>'


def short(label: str, kind: str) -> str:
    limit = 8 if kind == "device" else 14
    return label if len(label) <= limit else label[:limit - 1] + "…"


def graph_svg(graph: dict[str, list[dict[str, str]]], referrer: str) -> str:
    """The referrer's neighbourhood as an inline SVG, laid out by a seeded spring layout."""
    width, height, pad_x, pad_y = 520, 360, 60, 24
    nodes = graph["nodes"]
    g = nx.Graph()
    g.add_nodes_from(n["id"] for n in nodes)
    g.add_edges_from((e["source"], e["target"]) for e in graph["edges"])
    pos = {n: (float(x), float(y)) for n, (x, y) in nx.spring_layout(g, seed=GRAPH_SEED).items()}
    xs, ys = [p[0] for p in pos.values()], [p[1] for p in pos.values()]

    def at(node: str) -> tuple[float, float]:
        x, y = pos[node]
        sx = (x - min(xs)) / ((max(xs) - min(xs)) or 1)
        sy = (y - min(ys)) / ((max(ys) - min(ys)) or 1)
        return pad_x + sx * (width - 2 * pad_x), pad_y + sy * (height - 2 * pad_y - 16)

    lines = []
    for e in graph["edges"]:
        (x1, y1), (x2, y2) = at(e["source"]), at(e["target"])
        lines.append(f'<line class="{escape(e["kind"])}" x1="{x1:.1f}" y1="{y1:.1f}" '
                     f'x2="{x2:.1f}" y2="{y2:.1f}"/>')
    dots = []
    for n in nodes:
        x, y = at(n["id"])
        me = n["type"] == "referrer" and n["label"] == referrer
        css = ' class="me"' if me else ""
        label = (f'<text{css} x="{x:.1f}" y="{y + (27 if me else 21):.1f}">'
                 f'{escape(short(n["label"], n["type"]))}</text>'
                 if me or len(nodes) <= GRAPH_LABELS else "")
        dots.append(
            f'<g><title>{escape(NODE_TYPES.get(n["type"], n["type"]))}: '
            f'{escape(n["label"])}</title>'
            f'<circle class="t-{escape(n["type"])}{" me" if me else ""}" cx="{x:.1f}" '
            f'cy="{y:.1f}" r="{12 if me else 7}"/>{label}</g>')
    return (f'<svg viewBox="0 0 {width} {height}" role="img" '
            f'aria-label="accounts, IP addresses and devices around referrer '
            f'{escape(referrer)}">{"".join(lines)}{"".join(dots)}</svg>')


def _accounts(members: list[dict[str, str]]) -> int:
    return sum(m["type"] in ("referrer", "customer") for m in members)


def network_section(d: dict[str, Any]) -> str:
    legend = "".join(f'<li><span class="dot t-{k}"></span>{v}</li>' for k, v in NODE_TYPES.items())
    legend += ('<li><span class="edge"></span>referred</li>'
               '<li><span class="edge uses"></span>used (IP or device)</li>')
    rings = "".join(
        f'<li><strong>{escape(r["kind"])}</strong> (score {risk(r["score"])}, '
        f'{counted(_accounts(r["members"]), "account")}): '
        + escape("; ".join(str(x.get("message", "")) for x in r["reasons"]))
        + '<br><span class="muted">'
        + escape(", ".join(f'{m["type"]} {m["id"]}' for m in r["members"][:30]))
        + ("…" if len(r["members"]) > 30 else "") + "</span></li>"
        for r in d["rings"])
    ring_list = (f'<h2>Rings with this referrer</h2><ul class="reasons">{rings}</ul>' if rings
                 else '<p class="muted">This referrer belongs to no ring found so far.</p>')
    hover = ('<p class="muted">Point at a dot to see whose it is; the rings below list '
             "everyone.</p>" if len(d["graph"]["nodes"]) > GRAPH_LABELS else "")
    return (f'<section class="card graph"><h2>The referrer\'s network</h2>'
            f'{graph_svg(d["graph"], d["referrer"])}<ul class="legend">{legend}</ul>'
            f"{hover}{ring_list}</section>")


def decide_section(d: dict[str, Any], session: Session) -> str:
    forms = []
    for action, verb, css in (("approve", "Approve", ""), ("reject", "Reject", ' class="reject"')):
        if d["status"] not in FROM_STATUS[action]:
            continue
        forms.append(
            f'<form method="post" action="/review/rewards/{d["id"]}/{action}">'
            f'{csrf_field(session)}<label for="{action}-reason">Reason to {action}</label>'
            f'<textarea id="{action}-reason" name="reason" maxlength="{REASON_MAX}" required>'
            f'</textarea><button{css}>{verb}</button></form>')
    body = (f'<div class="decide">{"".join(forms)}</div>' if forms
            else f"<p>This reward is {escape(d['status'])}; there is nothing to decide.</p>")
    return f'<section class="card" id="decide"><h2>Decision</h2>{body}</section>'


def history_section(history: list[dict[str, Any]]) -> str:
    rows = [f'<tr><td class="nowrap">{when(h["at"])}</td><td>{escape(h["actor"])}</td>'
            f'<td>{escape(h["action"])}</td><td>{escape(h["reason"] or "")}</td></tr>'
            for h in history]
    body = table(("Time", "Actor", "Action", "Reason"), rows) if rows else "<p>No history.</p>"
    return f'<section class="card"><h2>History</h2>{body}</section>'


async def detail_page(request: web.Request, session: Session, *, flash: str = "",
                      status: int = 200) -> web.Response:
    rid = reward_id(request)
    async with request.app[keys.POOL].acquire() as conn:
        d = None if rid is None else await reward_detail(conn, rid)
    if d is None:
        return page("Reward not found", '<p>There is no such reward. <a href="/review">Back to '
                    "the queue</a></p>", session=session, status=404)
    body = ('<p><a href="/review">← Queue</a> · <a href="#decide">Decision</a></p>'
            + facts(d) + reasons_section(d["reasons"]) + timeline(d)
            + credits_section(d["credits"]) + network_section(d) + decide_section(d, session)
            + history_section(d["history"]))
    return page(f"Reward {d['id']}", body, session=session, flash=flash, status=status)


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
            decision = await decide(conn, rid, action, session.principal.actor, reason)
    except NotFound:
        return await detail_page(request, session)
    except Conflict as exc:
        return await detail_page(request, session, status=409, flash=f"Not done: {exc}.")
    done = "rejected" if action == "reject" else (
        "approved" if decision.status == "approved" else "first")
    return see_other(f"/review?{done}=1")


def add_routes(app: web.Application) -> None:
    app.router.add_get("/review", queue)
    app.router.add_get("/review/login", login_form)
    app.router.add_post("/review/login", login)
    app.router.add_post("/review/logout", logout)
    app.router.add_post("/review/bulk-approve", bulk_approve)
    app.router.add_get("/review/rewards/{reward_id}", detail)
    app.router.add_post("/review/rewards/{reward_id}/{action:approve|reject}", decide_one)
