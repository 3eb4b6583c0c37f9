"""API tokens: created once, stored as SHA-256 hashes, tied to a person, revocable, looked up
through a cache that every change of a token clears at once.

A token may be tied to a person (`refguard token create --person P`): rules that count people,
such as four-eyes approvals, count a person's tokens once (`Principal.identity`). Revoking a
token ends its review-page sessions, and the database announces every change of a token on
the `refguard_tokens` channel (migrations/0012_token_people.sql), so each worker's
`TokenCache` drops it before the next request.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import secrets
import time
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import asyncpg

from tracker.errors import Conflict, NotFound
from tracker.listener import Listener

log = logging.getLogger(__name__)

ROLES = ("admin", "integration", "finance", "viewer")
TOKEN_PREFIX = "rg_"  # noqa: S105 (a prefix, not a secret)
CACHE_TTL_S = 30.0
CHANNEL = "refguard_tokens"
NAME_MAX = 200


@dataclass(frozen=True, slots=True)
class Principal:
    token_id: int
    name: str
    role: str
    person: str | None = None  # the person holding the token, when it is tied to one

    @property
    def actor(self) -> str:
        """Who did it, as audit rows and decisions name them."""
        return f"token:{self.token_id}:{self.name}"

    @property
    def identity(self) -> str:
        """The one pair of eyes behind the token, as the four-eyes rule counts them: the person
        it is tied to, else the token itself."""
        return f"person:{self.person}" if self.person is not None else self.actor


@dataclass(frozen=True, slots=True)
class TokenInfo:
    """A token as `refguard token list` and GET /api/v1/tokens show it: never its secret."""

    id: int
    name: str
    role: str
    person: str | None
    created_at: datetime
    revoked_at: datetime | None

    def as_dict(self) -> dict[str, Any]:
        return {"id": self.id, "name": self.name, "role": self.role, "person": self.person,
                "created_at": self.created_at, "revoked_at": self.revoked_at}


def hash_token(token: str) -> bytes:
    # Tokens carry 256 random bits, so a plain hash is enough (no salt or stretching needed).
    return hashlib.sha256(token.encode("utf-8", "surrogateescape")).digest()


def _check_text(what: str, value: str) -> None:
    if not 1 <= len(value) <= NAME_MAX or not value.isprintable():
        raise ValueError(f"{what} must be 1 to {NAME_MAX} printable characters")


async def create_token(conn: asyncpg.Connection, role: str, name: str,
                       person: str | None = None) -> tuple[str, int]:
    """A new token (shown once) and its id. The database keeps only the hash."""
    if role not in ROLES:
        raise ValueError(f"unknown role {role!r}; roles: {', '.join(ROLES)}")
    _check_text("name", name)
    if person is not None:
        _check_text("person", person)
    token = TOKEN_PREFIX + secrets.token_urlsafe(32)
    async with conn.transaction():
        token_id = await conn.fetchval(
            """INSERT INTO api_tokens (name, role, token_hash, person) VALUES ($1, $2, $3, $4)
               RETURNING id""",
            name, role, hash_token(token), person,
        )
        await conn.execute(
            """INSERT INTO audit_log (actor, action, object_type, object_id, details)
               VALUES ('cli', 'token.create', 'api_token', $1, jsonb_build_object('role', $2::text,
               'name', $3::text, 'person', $4::text))""",
            str(token_id), role, name, person,
        )
    return token, int(token_id)


_COLUMNS = "id, name, role, person, created_at, revoked_at"


def _info(row: asyncpg.Record) -> TokenInfo:
    return TokenInfo(row["id"], row["name"], row["role"], row["person"], row["created_at"],
                     row["revoked_at"])


async def list_tokens(conn: asyncpg.Connection | asyncpg.Pool, *, after: int = 0,
                      limit: int | None = None) -> list[TokenInfo]:
    """Tokens by id, revoked ones included (their `revoked_at` is set)."""
    rows = await conn.fetch(
        f"SELECT {_COLUMNS} FROM api_tokens WHERE id > $1 ORDER BY id LIMIT $2",
        after, limit)
    return [_info(r) for r in rows]


async def find_token(conn: asyncpg.Connection, ref: str) -> TokenInfo:
    """The token `ref` names: its id (digits), else its name. A name held by several live
    tokens is a Conflict (revoke by id); NotFound when nothing matches."""
    if ref.isascii() and ref.isdigit() and len(ref) <= 18:
        row = await conn.fetchrow(f"SELECT {_COLUMNS} FROM api_tokens WHERE id = $1",
                                  int(ref))
        if row is not None:
            return _info(row)
    rows = await conn.fetch(
        f"""SELECT {_COLUMNS} FROM api_tokens WHERE name = $1
            ORDER BY revoked_at IS NULL DESC, id""", ref)
    live = [r for r in rows if r["revoked_at"] is None]
    if len(live) > 1:
        raise Conflict(f"{len(live)} tokens are named {ref!r} (ids "
                       f"{', '.join(str(r['id']) for r in live)}); give the id")
    if not rows:
        raise NotFound("token")
    return _info(rows[0])


async def revoke_token(conn: asyncpg.Connection, token_id: int, actor: str) -> tuple[TokenInfo,
                                                                                     bool]:
    """Revoke a token: it stops working at once on every worker (the database announces the
    change to their caches) and its review-page sessions end. Returns the token and whether
    this call revoked it (False: it was revoked already). NotFound for an unknown id."""
    async with conn.transaction():
        row = await conn.fetchrow(
            f"""UPDATE api_tokens SET revoked_at = now() WHERE id = $1 AND revoked_at IS NULL
                RETURNING {_COLUMNS}""", token_id)
        if row is None:
            row = await conn.fetchrow(
                f"SELECT {_COLUMNS} FROM api_tokens WHERE id = $1", token_id)
            if row is None:
                raise NotFound("token")
            return _info(row), False
        sessions = await conn.fetchval(
            "WITH ended AS (DELETE FROM review_sessions WHERE token_id = $1 RETURNING 1) "
            "SELECT count(*) FROM ended", token_id)
        await conn.execute(
            """INSERT INTO audit_log (actor, action, object_type, object_id, details)
               VALUES ($1, 'token.revoke', 'api_token', $2, jsonb_build_object('role', $3::text,
               'name', $4::text, 'person', $5::text, 'sessions_ended', $6::bigint))""",
            actor, str(token_id), row["role"], row["name"], row["person"], sessions)
    return _info(row), True


class TokenCache:
    """Resolves bearer tokens; positive answers are cached for a few seconds, and only while
    the cache follows the `refguard_tokens` channel (`start`; on the worker's shared
    tracker.listener, `follow`): a change of a token (its revocation) drops it at once. Not
    following (never started, or the database away), every request looks its token up."""

    def __init__(self, ttl_s: float = CACHE_TTL_S) -> None:
        self.ttl_s = ttl_s
        self._cache: dict[bytes, tuple[float, Principal]] = {}
        self._generation = 0  # bumped by every drop: a look-up that raced one is not cached
        self._following = False
        self._followed = asyncio.Event()  # set while following
        self.listener: Listener | None = None
        self._started = False
        self.dropped = 0  # tokens dropped on notice (for tests and curiosity)

    @property
    def following(self) -> bool:
        return self._following

    async def resolve(self, pool: asyncpg.Pool, token: str) -> Principal | None:
        if not token.startswith(TOKEN_PREFIX) or len(token) > 100:
            return None
        digest = hash_token(token)
        hit = self._cache.get(digest)
        now = time.monotonic()
        if hit is not None and self._following and now - hit[0] < self.ttl_s:
            return hit[1]
        generation = self._generation
        row = await pool.fetchrow(
            """SELECT id, name, role, person FROM api_tokens
               WHERE token_hash = $1 AND revoked_at IS NULL""",
            digest,
        )
        if row is None:
            self._cache.pop(digest, None)
            return None
        principal = Principal(row["id"], row["name"], row["role"], row["person"])
        if self._following and generation == self._generation:
            if len(self._cache) > 10_000:
                self._cache.clear()
            self._cache[digest] = (now, principal)
        return principal

    def drop(self, token_id: int | None = None) -> None:
        """Forget token `token_id` (None: every token)."""
        self._generation += 1
        if token_id is None:
            self._cache.clear()
            return
        for digest, (_at, principal) in list(self._cache.items()):
            if principal.token_id == token_id:
                del self._cache[digest]
        self.dropped += 1

    def _on_notify(self, conn: Any, pid: int, channel: str, payload: str) -> None:
        try:
            self.drop(int(payload))
        except ValueError:
            self.drop()

    def follow(self, listener: Listener) -> None:
        """Follow the channel on `listener` (the worker's shared one, tracker.web.app) rather
        than a connection of its own; before `start`."""
        self.listener = listener
        listener.subscribe(CHANNEL, self._on_notify, on_connect=self._on_connect,
                           on_lost=self._on_lost)

    async def _on_connect(self, conn: asyncpg.Connection) -> None:
        self.drop()  # whatever changed while nobody listened
        self._following = True
        self._followed.set()

    def _on_lost(self) -> None:
        self._following = False
        self._followed.clear()
        self.drop()

    async def start(self, dsn: str, wait_s: float = 0.0) -> None:
        """Follow the channel (reconnecting as needed). Returns at once, or once following
        (at most `wait_s`): until then requests simply look their tokens up."""
        listener = self.listener
        if listener is None:
            listener = Listener(dsn, name="token-cache")
            self.follow(listener)
        listener.start()
        self._started = True
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._followed.wait(), timeout=wait_s)

    async def close(self) -> None:
        if self._started and self.listener is not None:
            self._started = False
            await self.listener.close()
        self._following = False
        self._followed.clear()
