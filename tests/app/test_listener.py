"""One LISTEN connection per worker (tracker.listener): the link cache and the token cache
follow their channels on it, and both keep following after the connection was killed."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

import asyncpg
from aiohttp.test_utils import TestClient
from aiohttp.web import Application, Request

from tests.helpers import make_link
from tracker.auth import hash_token, revoke_token
from tracker.web import keys

Client = TestClient[Request, Application]
WAIT_S = 10.0


async def _until(check: Callable[[], object], what: str) -> None:
    deadline = time.monotonic() + WAIT_S
    while not check():
        assert time.monotonic() < deadline, f"never happened: {what}"
        await asyncio.sleep(0.02)


async def test_both_caches_follow_their_channels_on_one_connection_across_a_reconnect(
    client: Client, tokens: dict[str, str], conn: asyncpg.Connection,
    owner_conn: asyncpg.Connection,
) -> None:
    links, token_cache = client.app[keys.LINKS], client.app[keys.TOKENS]
    listener = links.listener
    assert token_cache.listener is listener
    await make_link(client, tokens)
    await _until(lambda: listener.conn is not None and token_cache.following, "following")
    first = listener.conn
    assert first is not None and listener.connects == 1

    assert await owner_conn.fetchval("SELECT pg_terminate_backend($1)",
                                     first.get_server_pid())
    await _until(lambda: listener.connects == 2 and listener.conn is not None
                 and token_cache.following, "the listener reconnects")
    assert listener.conn is not first

    # The link channel reaches the link cache on the new connection.
    await conn.execute("UPDATE links SET destination = 'https://shop.acme.test/new' "
                       "WHERE code = 'alice1'")
    await _until(lambda: (e := links.get("alice1")) is not None
                 and e.destination == "https://shop.acme.test/new", "the link is refreshed")

    # The token channel reaches the token cache: a revoked token is dropped at once.
    pool = client.app[keys.POOL]
    principal = await token_cache.resolve(pool, tokens["finance"])
    assert principal is not None
    assert hash_token(tokens["finance"]) in token_cache._cache
    dropped = token_cache.dropped
    await revoke_token(conn, principal.token_id, "test")
    await _until(lambda: token_cache.dropped > dropped, "the token cache hears the revocation")
    assert await token_cache.resolve(pool, tokens["finance"]) is None
