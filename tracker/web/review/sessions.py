"""Review-page sessions and CSRF.

Finance logs in with a finance (or admin) token once (a viewer token may log in too, and sees
only the program pages: `reading`; the queue, cases and money need finance or admin: `viewing`,
`deciding`); the page keeps a session in
`review_sessions` (the cookie carries a random id, the database its hash) with a CSRF token
that every POST must echo.

The login form has no session yet, so no token to echo: a page elsewhere could post someone's
browser into the attacker's session (login CSRF; the victim then reviews, and reveals, inside an
account the attacker watches). So a login is refused (403) when the browser says it comes from
another site (`cross_site`): `Sec-Fetch-Site` when the browser sends it (its own verdict, which
no page can set), otherwise `Origin`, which must be this server's. A login with neither header is
let through: every current browser sends at least one of them on a POST, so that is a
non-browser client (curl, a script), which has no victim's browser to abuse. That is what the
rest of the page does too: its POSTs are guarded by the session's CSRF token and the SameSite
cookie, which a non-browser client with its own session passes as a browser does.
"""

from __future__ import annotations

import hmac
import secrets
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any
from urllib.parse import urlsplit

import asyncpg
from aiohttp import web
from multidict import MultiDictProxy

from tracker import audit
from tracker.auth import Principal, hash_token
from tracker.web import keys
from tracker.web.bodies import BodyError, read_form
from tracker.web.pages import database_guarded
from tracker.web.review.render import page, see_other

COOKIE = "rg_review"
SESSION_TTL = timedelta(hours=12)
ROLES = ("finance", "admin")  # review rewards and see the money
LOGIN_ROLES = (*ROLES, "viewer")  # a viewer reads the program pages only
FORM_MAX = 64 * 1024  # a decision's form: a reason and at most 1000 reward ids
LOGIN_MAX = 4096  # the login form: a token
_DEFAULT_PORTS = {"http": 80, "https": 443}


@dataclass(frozen=True, slots=True)
class Session:
    id_hash: bytes
    csrf: str
    principal: Principal


Form = MultiDictProxy[Any]
Viewer = Callable[[web.Request, Session], Awaitable[web.Response]]
Decider = Callable[[web.Request, Session, Form], Awaitable[web.Response]]


async def load_session(pool: asyncpg.Pool, cookie: str | None) -> Session | None:
    """The live session of a cookie, if its token is still a finance, admin or viewer token. Read on
    every request, never cached: a revoked token's sessions end with the revocation (which
    also deletes them, tracker.auth.revoke_token)."""
    if not cookie or len(cookie) > 100:
        return None
    id_hash = hash_token(cookie)
    row = await pool.fetchrow(
        """SELECT s.csrf, t.id, t.name, t.role, t.person FROM review_sessions s
           JOIN api_tokens t ON t.id = s.token_id
           WHERE s.id_hash = $1 AND s.expires_at > now() AND t.revoked_at IS NULL
             AND t.role = ANY($2::text[])""", id_hash, list(LOGIN_ROLES))
    if row is None:
        return None
    return Session(id_hash, row["csrf"],
                   Principal(row["id"], row["name"], row["role"], row["person"]))


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


async def end_session(pool: asyncpg.Pool, session: Session) -> None:
    await pool.execute("DELETE FROM review_sessions WHERE id_hash = $1", session.id_hash)


def _origin(url: str) -> tuple[str, str, int] | None:
    """(scheme, host, port) of an origin or URL, or None when it is not one."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        return None
    if parts.scheme not in _DEFAULT_PORTS or not parts.hostname:
        return None
    return parts.scheme, parts.hostname.lower(), port or _DEFAULT_PORTS[parts.scheme]


def cross_site(request: web.Request) -> bool:
    """Whether a browser says this POST comes from a page of another site (module docstring).
    `Sec-Fetch-Site` must be `same-origin` (or `none`: typed by the user). Without it, `Origin`
    must be the public URL's or name this host (either scheme: behind a TLS proxy the request
    arrives as http); `Origin: null` (a sandboxed or opaque page) is cross-site."""
    fetch_site = request.headers.get("Sec-Fetch-Site")
    if fetch_site is not None:
        return fetch_site not in ("same-origin", "none")
    origin = request.headers.get("Origin")
    if origin is None:
        return False
    theirs = _origin(origin)
    if theirs is None:
        return True
    if theirs == _origin(request.app[keys.SETTINGS].base_url):
        return False
    ours = _origin(f"{theirs[0]}://{request.host}")
    return ours is None or ours[1:] != theirs[1:]


async def login_form_fields(request: web.Request) -> Form:
    """The login form, read as a stranger's body (tracker.web.bodies); BodyError otherwise."""
    return await read_form(request, request.app[keys.BODY_READS], limit=LOGIN_MAX,
                           unauthenticated=True)


def body_refused(exc: BodyError) -> web.Response:
    """A form body that was refused (too slow, too large, too many at once): plain text, and the
    connection closed."""
    resp = web.Response(status=exc.status, text=exc.message)
    resp.force_close()
    if exc.status == 503:
        resp.headers["Retry-After"] = "1"
    return resp


def not_yours(request: web.Request) -> web.Response:
    """A signed-in viewer on a finance page."""
    return page(request, "forbidden.html", {
        "title": "Not allowed", "why": "A viewer token may open the program pages only."},
        status=403)


def reading(handler: Viewer) -> Callable[[web.Request], Awaitable[web.Response]]:
    """GET handlers any signed-in user may open (finance, admin, viewer), or a 303 to the
    login form."""

    async def guarded(request: web.Request) -> web.Response:
        session = await load_session(request.app[keys.POOL], request.cookies.get(COOKIE))
        if session is None:
            return see_other("/review/login")
        return await handler(request, session)

    return database_guarded(guarded)


def viewing(handler: Viewer) -> Callable[[web.Request], Awaitable[web.Response]]:
    """GET handlers: a signed-in finance user, or a 303 to the login form (a viewer: 403)."""

    async def guarded(request: web.Request) -> web.Response:
        session = await load_session(request.app[keys.POOL], request.cookies.get(COOKIE))
        if session is None:
            return see_other("/review/login")
        if session.principal.role not in ROLES:
            return not_yours(request)
        return await handler(request, session)

    return database_guarded(guarded)


def deciding(handler: Decider, *, roles: tuple[str, ...] = ROLES
             ) -> Callable[[web.Request], Awaitable[web.Response]]:
    """POST handlers: a signed-in finance user (one of `roles`) whose form carries the
    session's CSRF token."""

    async def guarded(request: web.Request) -> web.Response:
        # The session cookie first: a stranger's body is never read.
        session = await load_session(request.app[keys.POOL], request.cookies.get(COOKIE))
        if session is None:
            return page(request, "forbidden.html", {"title": "Not allowed"}, status=403)
        if session.principal.role not in roles:
            return not_yours(request)
        try:
            form = await read_form(request, request.app[keys.BODY_READS], limit=FORM_MAX)
        except BodyError as exc:
            return body_refused(exc)
        sent = form.get("csrf")
        if not isinstance(sent, str) or not hmac.compare_digest(
                sent.encode(), session.csrf.encode()):
            return page(request, "forbidden.html", {"title": "Not allowed"}, status=403)
        return await handler(request, session, form)

    return database_guarded(guarded)


def leaving(handler: Decider) -> Callable[[web.Request], Awaitable[web.Response]]:
    """The logout: any signed-in user, with the CSRF token."""
    return deciding(handler, roles=LOGIN_ROLES)
