"""The redirect's fast path (tracker.web.protocol): a worker answers GET /r/{code} of a known link
ahead of aiohttp. It must answer byte for byte as aiohttp's handler does, only once the click is
journaled, one click per answer, and leave every other request to aiohttp as before.

The `client` fixture serves through it (tests.helpers.WorkerServer), so every redirect test
runs on it; these tests pin what is particular to it."""

from __future__ import annotations

import asyncio
import re
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from aiohttp import DummyCookieJar, web
from aiohttp.test_utils import TestClient

from tests.helpers import ClientFactory, click_id, make_link, make_settings, wait_for_clicks
from tracker.clicks import journal as journal_module
from tracker.web import keys
from tracker.web.app import create_app
from tracker.web.protocol import RedirectServer

Client = TestClient[web.Request, web.Application]
UA = "Mozilla/5.0 (X11; Linux x86_64) Firefox/133.0"


def fast_answers(client: Client) -> int:
    server = client.server.runner.server
    assert isinstance(server, RedirectServer)
    return server.fast_answers


async def exchange(client: Client, request: bytes, answers: int = 1) -> list[bytes]:
    """Send raw bytes on a new connection; read `answers` answers, each its head and the body
    its Content-Length announces (none of these requests is a HEAD of a page)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", client.port)
    out = []
    try:
        writer.write(request)
        await writer.drain()
        for _ in range(answers):
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
            length = re.search(rb"\r\nContent-Length: (\d+)", head)
            body = b""
            if length:
                body = await asyncio.wait_for(reader.readexactly(int(length[1])), 5)
            out.append(head + body)
        return out
    finally:
        writer.close()


def get(path: str, *extra: str, method: str = "GET", version: str = "1.1") -> bytes:
    lines = [f"{method} {path} HTTP/{version}", "Host: test", f"User-Agent: {UA}", *extra]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def normalized(answer: bytes) -> str:
    """An answer with what differs by design between two clicks blanked out."""
    text = answer.decode()
    text = re.sub(r"rg_cid=[0-9a-f-]{36}", "rg_cid=C", text)
    text = re.sub(r"rg_vid=[0-9a-f]{24}\.[0-9a-f]{24}", "rg_vid=V", text)
    return re.sub(r"Date: [^\r]+", "Date: D", text)


def cid_in(answer: bytes) -> str:
    location = re.search(rb"\r\nLocation: (\S+)", answer)
    assert location is not None
    return click_id(location[1].decode())


async def stored(conn: asyncpg.Connection, cid: str) -> dict[str, Any]:
    """A stored click without what differs between two clicks of one visitor by design: its
    id, times, visitor id (a new visitor each) and whether it repeats an earlier click."""
    row = await conn.fetchrow("SELECT * FROM clicks WHERE click_id = $1", cid)
    assert row is not None
    return {k: v for k, v in dict(row).items()
            if k not in ("click_id", "ts", "received_at", "visitor_id") and "dup" not in k}


@pytest.fixture
async def plain(tmp_path: Path, dsn: str, aiohttp_client: ClientFactory) -> Client:
    """The same application served by aiohttp alone (its own data folder, the same database)."""
    return await aiohttp_client(create_app(make_settings(tmp_path / "plain", dsn)),
                                cookie_jar=DummyCookieJar())


async def test_fast_answers_are_aiohttps_answers(
    client: Client, plain: Client, tokens: dict[str, str], conn: asyncpg.Connection
) -> None:
    await make_link(client, tokens)
    first = (await exchange(client, get("/r/alice1")))[0]
    cookie = re.search(rb"rg_vid=([^;]+);", first)
    assert cookie is not None
    returning = f"Cookie: rg_vid={cookie[1].decode()}"
    cases = [
        get("/r/alice1"),
        get("/r/alice1", returning),
        get("/r/alice1?utm_source=mail&x=%C3%A9&rg_cid=forged", returning),
        get("/r/alice1?a=1", "Connection: close"),
    ]
    pairs = []
    for request in cases:
        fast = (await exchange(client, request))[0]
        slow = (await exchange(plain, request))[0]
        assert normalized(fast) == normalized(slow)
        assert fast.startswith(b"HTTP/1.1 302 Found\r\n")
        pairs.append((cid_in(fast), cid_in(slow)))
    assert fast_answers(client) == 1 + len(cases)
    assert await wait_for_clicks(conn, 1 + 2 * len(cases)) == 1 + 2 * len(cases)
    # And the same click is stored: every column but what differs between two clicks anyway.
    for fast_cid, slow_cid in pairs:
        fast_row, slow_row = [await stored(conn, cid) for cid in (fast_cid, slow_cid)]
        assert fast_row == slow_row


async def test_the_answer_waits_for_the_journal(
    client: Client, tokens: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    await make_link(client, tokens)
    journal = client.app[keys.JOURNAL]
    write_group = journal._write_group
    monkeypatch.setattr(journal, "_write_group", lambda: None)  # the group stays queued
    reader, writer = await asyncio.open_connection("127.0.0.1", client.port)
    try:
        writer.write(get("/r/alice1"))
        await writer.drain()
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(reader.read(1), 0.3)
        segments = list(journal.directory.iterdir())
        assert not any(b"alice1" in p.read_bytes() for p in segments)
        monkeypatch.undo()
        write_group()
        answer = (await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)).decode()
    finally:
        writer.close()
    cid = click_id(re.search(r"Location: (\S+)", answer)[1])  # type: ignore[index]
    lines = b"".join(p.read_bytes() for p in journal.directory.iterdir())
    assert lines.count(cid.encode()) == 1
    assert fast_answers(client) == 1


async def test_what_the_fast_path_declines_is_aiohttps(
    client: Client, tokens: dict[str, str], conn: asyncpg.Connection
) -> None:
    await make_link(client, tokens)
    unknown, head, post, old, slash = [
        (await exchange(client, request))[0].decode()
        for request in (get("/r/nobody9"), get("/r/alice1", method="HEAD"),
                        get("/r/alice1", "Content-Length: 0", method="POST"),
                        get("/r/alice1", version="1.0"), get("/r/alice1/"))
    ]
    assert unknown.startswith("HTTP/1.1 404 ")
    assert head.startswith("HTTP/1.1 302 ") and "rg_cid" not in head
    assert post.startswith("HTTP/1.1 405 ")
    assert old.startswith("HTTP/1.0 302 ") and "rg_cid=" in old  # aiohttp's handler: a click
    assert slash.startswith("HTTP/1.1 404 ")
    assert fast_answers(client) == 0
    assert await wait_for_clicks(conn, 1) == 1
    await asyncio.sleep(0.2)
    assert await conn.fetchval("SELECT count(*) FROM clicks") == 1


async def test_pipelined_requests_are_answered_in_order(
    client: Client, tokens: dict[str, str], conn: asyncpg.Connection
) -> None:
    await make_link(client, tokens)
    requests = [get("/r/alice1?n=1"), get("/r/alice1", method="HEAD"), get("/r/alice1?n=3"),
                get("/r/nobody9"), get("/r/alice1?n=5")]
    answers = [a.decode() for a in await exchange(client, b"".join(requests), len(requests))]
    assert [a.split(" ", 2)[1] for a in answers] == ["302", "302", "302", "404", "302"]
    assert "n=1&rg_cid=" in answers[0] and "rg_cid" not in answers[1]
    assert "n=3&rg_cid=" in answers[2] and "n=5&rg_cid=" in answers[4]
    assert await wait_for_clicks(conn, 3) == 3
    await asyncio.sleep(0.2)
    assert await conn.fetchval("SELECT count(*) FROM clicks") == 3


async def test_a_failed_journal_write_is_a_503_from_aiohttp_and_no_click(
    client: Client, tokens: dict[str, str], conn: asyncpg.Connection,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    await make_link(client, tokens)
    journal = client.app[keys.JOURNAL]
    real_write = journal_module.os.write

    def full_disk(fd: int, data: Any) -> int:
        if fd == journal._fd:
            raise OSError(28, "No space left on device")
        return real_write(fd, data)

    monkeypatch.setattr(journal_module.os, "write", full_disk)
    refused = (await exchange(client, get("/r/alice1")))[0].decode()
    assert refused.startswith("HTTP/1.1 503 ")
    assert "Retry-After: 1\r\n" in refused
    monkeypatch.undo()
    answered = (await exchange(client, get("/r/alice1")))[0].decode()
    assert answered.startswith("HTTP/1.1 302 ")
    assert fast_answers(client) == 1
    assert await wait_for_clicks(conn, 1) == 1
    await asyncio.sleep(0.2)
    assert await conn.fetchval("SELECT count(*) FROM clicks") == 1


async def test_keep_alive_connections_stay_on_the_fast_path(
    client: Client, tokens: dict[str, str], conn: asyncpg.Connection
) -> None:
    await make_link(client, tokens)
    answered = set()
    for _ in range(50):  # the client's pooled keep-alive connection
        resp = await client.get("/r/alice1", allow_redirects=False)
        assert resp.status == 302
        answered.add(click_id(resp.headers["Location"]))
    assert len(answered) == 50
    assert fast_answers(client) == 50
    assert await wait_for_clicks(conn, 50) == 50
    stored = {str(r["click_id"]) for r in await conn.fetch("SELECT click_id FROM clicks")}
    assert stored == answered
