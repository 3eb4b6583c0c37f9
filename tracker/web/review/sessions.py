"""Review-page sessions and CSRF.

Finance logs in with a finance (or admin) token once; the page keeps a session in
`review_sessions` (the cookie carries a random id, the database its hash) with a CSRF token
that every POST must echo.
"""

from __future__ import annotations

import hmac
import secrets
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import asyncpg
from aiohttp import web
from multidict import MultiDictProxy

from tracker import audit
from tracker.auth import Principal, hash_token
from tracker.web import keys
from tracker.web.review.render import page, see_other

COOKIE = "rg_review"
SESSION_TTL = timedelta(hours=12)
ROLES = ("finance", "admin")


@dataclass(frozen=True, slots=True)
class Session:
    id_hash: bytes
    csrf: str
    principal: Principal


Form = MultiDictProxy[Any]
Viewer = Callable[[web.Request, Session], Awaitable[web.Response]]
Decider = Callable[[web.Request, Session, Form], Awaitable[web.Response]]


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


async def end_session(pool: asyncpg.Pool, session: Session) -> None:
    await pool.execute("DELETE FROM review_sessions WHERE id_hash = $1", session.id_hash)


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
            return page(request, "forbidden.html", {"title": "Not allowed"}, status=403)
        return await handler(request, session, form)

    return guarded
