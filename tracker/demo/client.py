"""Talking to the server the demo builds on: its HTTP API, its redirect, and the wait for the
live clicks its flusher stores."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, TypeVar
from urllib.parse import parse_qs, urlsplit

import aiohttp
import asyncpg

from tracker.demo.scenario import Click, click_time

T = TypeVar("T")
CONCURRENCY = 16
FLUSH_WAIT_S = 30.0


class DemoError(Exception):
    """The demo cannot go on; the message is one line for the user (exit status 1)."""


def one_line(text: str, limit: int = 300) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= limit else flat[: limit - 3] + "..."


def open_session() -> aiohttp.ClientSession:
    """The demo's HTTP session: CONCURRENCY connections and no cookie jar (a live click
    sends its visitor's cookie itself)."""
    return aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=60),
                                 connector=aiohttp.TCPConnector(limit=CONCURRENCY),
                                 cookie_jar=aiohttp.DummyCookieJar())


class Api:
    """The server's JSON API with a bearer token; an unexpected answer is a DemoError."""

    def __init__(self, session: aiohttp.ClientSession, url: str, token: str = "") -> None:
        self.session = session
        self.url = url
        self.token = token

    async def call(self, method: str, path: str, body: Any = None, *,
                   expect: tuple[int, ...] = (200, 201), token: str | None = None,
                   headers: dict[str, str] | None = None, raw: bytes | None = None
                   ) -> tuple[int, Any]:
        sent = dict(headers or {})
        bearer = self.token if token is None else token
        if bearer:
            sent["Authorization"] = f"Bearer {bearer}"
        data = raw
        if body is not None:
            data = json.dumps(body).encode()
        if data is not None:
            sent.setdefault("Content-Type", "application/json")
        try:
            async with self.session.request(method, self.url + path, data=data,
                                            headers=sent) as resp:
                text = await resp.text()
                status = resp.status
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise DemoError(f"{method} {self.url}{path} failed: {one_line(str(exc))}") from None
        try:
            answer = json.loads(text) if text else None
        except ValueError:
            answer = text
        if status not in expect:
            error = answer.get("error") if isinstance(answer, dict) else None
            message = error.get("message") if isinstance(error, dict) else answer
            raise DemoError(f"{method} {path} answered {status}: {one_line(str(message))}")
        return status, answer


async def answers(url: str) -> bool:
    """Whether anything answers HTTP at `url` (a refguard server or not)."""
    try:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as s, \
                s.get(url + "/healthz"):
            return True
    except (aiohttp.ClientError, TimeoutError):
        return False


async def check_server(url: str) -> None:
    """A refguard server answers at `url`, or DemoError with one line for the user."""
    try:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as s, \
                s.get(url + "/healthz") as resp:
            body = await resp.json(content_type=None) if resp.status == 200 else None
    except (aiohttp.ClientError, TimeoutError, ValueError):
        raise DemoError(f"no refguard server answers at {url} (start one with `make run` or "
                        "`refguard serve`, or run `refguard demo` without --url)") from None
    if not isinstance(body, dict) or body.get("status") != "ok":
        raise DemoError(f"{url} does not answer like a refguard server (GET /healthz)")


async def live_click(session: aiohttp.ClientSession, url: str, click: Click) -> None:
    """One click through GET /r/{code}, as the visitor's browser would send it."""
    headers = {"User-Agent": click.person.user_agent, "X-Forwarded-For": click.person.ip,
               "Accept": "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"}
    if click.person.language:
        headers["Accept-Language"] = click.person.language
    if click.referer:
        headers["Referer"] = click.referer
    if click.person.visitor:
        headers["Cookie"] = f"rg_vid={click.person.visitor}"
    try:
        async with session.get(f"{url}/r/{click.account.code}", headers=headers,
                               allow_redirects=False) as resp:
            location = resp.headers.get("Location", "")
            cookie = resp.cookies.get("rg_vid")
            status = resp.status
    except (aiohttp.ClientError, TimeoutError) as exc:
        raise DemoError(f"GET {url}/r/{click.account.code} failed: {one_line(str(exc))}"
                        ) from None
    if status != 302 or "rg_cid=" not in location:
        raise DemoError(f"GET /r/{click.account.code} answered {status}, not a redirect")
    click.click_id = parse_qs(urlsplit(location).query)["rg_cid"][0]
    click.at = click_time(click.click_id)
    if cookie is not None and not click.person.visitor:
        click.person.visitor = cookie.value


async def wait_for_clicks(conn: asyncpg.Connection, program_id: int, click_ids: list[str]
                          ) -> None:
    """Until the server's flusher has stored these live clicks, or DemoError after
    FLUSH_WAIT_S."""
    deadline = time.monotonic() + FLUSH_WAIT_S
    while True:
        stored = await conn.fetchval(
            "SELECT count(*) FROM clicks WHERE program_id = $1 AND click_id = ANY($2::uuid[])",
            program_id, click_ids)
        if stored >= len(click_ids):
            return
        if time.monotonic() > deadline:
            raise DemoError(f"the server stored {stored} of {len(click_ids)} live clicks in "
                            f"{FLUSH_WAIT_S:.0f} s (is its flusher running?)")
        await asyncio.sleep(0.1)


async def together(*work: Awaitable[None]) -> None:
    """These at once; the first failure cancels the others and is raised as itself (a
    DemoError stays one line for the user)."""
    try:
        async with asyncio.TaskGroup() as group:
            for w in work:
                group.create_task(_awaited(w))
    except ExceptionGroup as failed:
        first: BaseException = failed
        while isinstance(first, BaseExceptionGroup):
            first = first.exceptions[0]
        raise first from None


async def _awaited(work: Awaitable[None]) -> None:
    await work


async def gather(items: Sequence[T], work: Callable[[T], Awaitable[None]]) -> None:
    """`work(item)` for every item, CONCURRENCY at a time; the first failure stops them all."""
    queue = list(reversed(items))

    async def worker() -> None:
        while queue:
            await work(queue.pop())

    tasks = [asyncio.create_task(worker()) for _ in range(min(CONCURRENCY, len(items)))]
    try:
        await asyncio.gather(*tasks)
    finally:
        for task in tasks:
            task.cancel()
