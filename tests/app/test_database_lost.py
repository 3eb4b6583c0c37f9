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


async def _page_answers(client: Client, path: str, headers: dict[str, str]) -> list[int]:
    statuses = []
    for _ in range(3):
        resp = await client.get(path, headers=headers, allow_redirects=False)
        statuses.append(resp.status)
        if resp.status == 503:
            assert resp.headers["Retry-After"] == "1"
            assert resp.headers["Content-Type"].startswith("text/plain")
            assert "unavailable" in await resp.text()
    return statuses


@pytest.mark.parametrize("path", ["/review", "/review/cases", "/review/money",
                                  "/review/programs"])
async def test_review_pages_answer_503_while_the_database_is_lost_then_recover(
    client: Client, tokens: dict[str, str], owner_conn: asyncpg.Connection, path: str,
) -> None:
    login = await client.post("/review/login", data={"token": tokens["finance"]},
                              allow_redirects=False)
    assert login.status == 303
    cookie = {"Cookie": f"rg_review={login.cookies['rg_review'].value}"}
    assert (await client.get(path, headers=cookie, allow_redirects=False)).status == 200
    assert await _kill_app_connections(owner_conn) >= 1

    statuses = await _page_answers(client, path, cookie)
    # 503 when the dead idle connection is used, 200 when the pool saw it die first.
    assert 500 not in statuses
    assert statuses[-1] == 200  # the same session, without a restart


async def test_the_share_page_answers_503_while_the_database_is_lost_then_recover(
    client: Client, tokens: dict[str, str], owner_conn: asyncpg.Connection,
) -> None:
    from tests.app.test_share_page import path_of, referrer

    path = path_of((await referrer(client, tokens))["share_url"])
    assert (await client.get(path)).status == 200
    assert await _kill_app_connections(owner_conn) >= 1

    statuses = await _page_answers(client, path, {})
    assert 500 not in statuses
    assert statuses[-1] == 200
    pressed = await client.post(f"{path}/share", data={"channel": "email"},
                                allow_redirects=False)
    assert pressed.status == 303


async def test_every_kind_of_page_answers_503_when_the_pool_is_closed(
    client: Client, tokens: dict[str, str],
) -> None:
    """A closed pool fails every query: each kind of page handler (the guards `reading`,
    `viewing`, `deciding`, the login, the share page's GET and POST) answers the plain 503."""
    from tests.app.test_share_page import path_of, referrer
    from tracker.web import keys

    share = path_of((await referrer(client, tokens))["share_url"])
    login = await client.post("/review/login", data={"token": tokens["finance"]},
                              allow_redirects=False)
    cookie = {"Cookie": f"rg_review={login.cookies['rg_review'].value}"}
    await client.app[keys.POOL].close()
    answers = [
        await client.get("/review", headers=cookie, allow_redirects=False),
        await client.get("/review/programs", headers=cookie, allow_redirects=False),
        await client.post("/review/bulk-approve", headers=cookie, data={"csrf": "x"},
                          allow_redirects=False),
        await client.post("/review/login", data={"token": tokens["finance"]},
                          allow_redirects=False),
        await client.get(share, allow_redirects=False),
        await client.post(f"{share}/share", data={"channel": "email"}, allow_redirects=False),
    ]
    for resp in answers:
        assert resp.status == 503, (resp.url, resp.status)
        assert resp.headers["Retry-After"] == "1"
        assert resp.headers["Cache-Control"] == "no-store"
