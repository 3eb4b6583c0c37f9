"""API tokens: created once, stored as SHA-256 hashes, looked up with a short cache."""

from __future__ import annotations

import hashlib
import secrets
import time
from dataclasses import dataclass

import asyncpg

ROLES = ("admin", "integration", "finance", "viewer")
TOKEN_PREFIX = "rg_"  # noqa: S105 (a prefix, not a secret)
CACHE_TTL_S = 30.0


@dataclass(frozen=True, slots=True)
class Principal:
    token_id: int
    name: str
    role: str

    @property
    def actor(self) -> str:
        return f"token:{self.token_id}:{self.name}"


def hash_token(token: str) -> bytes:
    # Tokens carry 256 random bits, so a plain hash is enough (no salt or stretching needed).
    return hashlib.sha256(token.encode("utf-8", "surrogateescape")).digest()


async def create_token(conn: asyncpg.Connection, role: str, name: str) -> tuple[str, int]:
    """A new token (shown once) and its id. The database keeps only the hash."""
    if role not in ROLES:
        raise ValueError(f"unknown role {role!r}; roles: {', '.join(ROLES)}")
    if not 1 <= len(name) <= 200:
        raise ValueError("name must be 1 to 200 characters")
    token = TOKEN_PREFIX + secrets.token_urlsafe(32)
    async with conn.transaction():
        token_id = await conn.fetchval(
            "INSERT INTO api_tokens (name, role, token_hash) VALUES ($1, $2, $3) RETURNING id",
            name, role, hash_token(token),
        )
        await conn.execute(
            """INSERT INTO audit_log (actor, action, object_type, object_id, details)
               VALUES ('cli', 'token.create', 'api_token', $1, jsonb_build_object('role', $2::text,
               'name', $3::text))""",
            str(token_id), role, name,
        )
    return token, int(token_id)


class TokenCache:
    """Resolves bearer tokens; positive answers are cached for a few seconds."""

    def __init__(self, ttl_s: float = CACHE_TTL_S) -> None:
        self.ttl_s = ttl_s
        self._cache: dict[bytes, tuple[float, Principal]] = {}

    async def resolve(self, pool: asyncpg.Pool, token: str) -> Principal | None:
        if not token.startswith(TOKEN_PREFIX) or len(token) > 100:
            return None
        digest = hash_token(token)
        hit = self._cache.get(digest)
        now = time.monotonic()
        if hit is not None and now - hit[0] < self.ttl_s:
            return hit[1]
        row = await pool.fetchrow(
            "SELECT id, name, role FROM api_tokens WHERE token_hash = $1 AND revoked_at IS NULL",
            digest,
        )
        if row is None:
            self._cache.pop(digest, None)
            return None
        principal = Principal(row["id"], row["name"], row["role"])
        if len(self._cache) > 10_000:
            self._cache.clear()
        self._cache[digest] = (now, principal)
        return principal
