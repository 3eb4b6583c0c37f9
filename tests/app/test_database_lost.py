"""The API when its database connections die under it (a restart, a failover): a clear 503
with Retry-After, never a 500, and the next request after the database is back succeeds."""

from __future__ import annotations

import asyncpg
import pytest
from aiohttp.test_utils import TestClient
from aiohttp.web import Application, Request

from tests.helpers import auth

Client = TestClient[Request, Application]


async def _kill_app_connections(owner_conn: asyncpg.Connection) -> int:
    return int(await owner_conn.fetchval(
        "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
        "WHERE datname = current_database() AND pid <> pg_backend_pid()"))


@pytest.mark.parametrize("path", ["/api/v1/programs", "/api/v1/rewards"])
async def test_pooled_connections_killed_while_idle_answer_503_then_recover(
    client: Client, tokens: dict[str, str], owner_conn: asyncpg.Connection, path: str,
) -> None:
    first = await client.get(path, headers=auth(tokens["admin"]))
    assert first.status == 200  # the pool now holds an idle connection
    assert await _kill_app_connections(owner_conn) >= 1

    answers = [await client.get(path, headers=auth(tokens["admin"])) for _ in range(3)]
    statuses = [a.status for a in answers]
    assert 500 not in statuses
    for answer in answers:
        if answer.status == 503:
            assert answer.headers["Retry-After"] == "1"
            assert (await answer.json())["error"]["code"] == "unavailable"
    # The pool replaces a dead connection: service comes back without a restart.
    assert statuses[-1] == 200


async def test_a_closed_pool_answers_503_with_retry_after(
    client: Client, tokens: dict[str, str],
) -> None:
    from tracker.web import keys

    await client.app[keys.POOL].close()
    resp = await client.post("/api/v1/programs", json={"slug": "x"},
                             headers=auth(tokens["admin"]))
    assert resp.status == 503 and resp.headers["Retry-After"] == "1"
