"""One LISTEN connection per worker for every channel its caches follow.

The link cache (tracker.clicks.links, `refguard_links`) and the token cache (tracker.auth,
`refguard_tokens`) each subscribe a callback per channel, a hook run on every (re)connect
(before the connection is published: the link cache reloads what it may have missed, the token
cache forgets what changed while nobody listened) and a hook run when the connection is lost.
The reconnect with backoff and the liveness check (a `SELECT 1` every 10 s, which notices a
silent dead peer) are written here once. The connection also serves its subscribers' own
queries, one at a time under `lock`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import asyncpg

from tracker import db

log = logging.getLogger(__name__)

Notify = Callable[[Any, int, str, str], None]  # asyncpg's listener: (conn, pid, channel, payload)
OnConnect = Callable[[asyncpg.Connection], Awaitable[None]]
OnLost = Callable[[], None]
PING_S = 10.0
BACKOFF_MIN_S, BACKOFF_MAX_S = 0.1, 5.0


@dataclass(frozen=True, slots=True)
class Subscription:
    channel: str
    notify: Notify
    on_connect: OnConnect | None
    on_lost: OnLost | None


class Listener:
    def __init__(self, dsn: str, *, name: str = "listener") -> None:
        self.dsn = dsn
        self.name = name
        self.conn: asyncpg.Connection | None = None  # set while connected and listening
        self.lock = asyncio.Lock()  # one query at a time on the connection
        self.connects = 0  # connections made (for tests and curiosity)
        self._subs: list[Subscription] = []
        self._connected = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._users = 0

    @property
    def connected(self) -> asyncio.Event:
        return self._connected

    def subscribe(self, channel: str, notify: Notify, *, on_connect: OnConnect | None = None,
                  on_lost: OnLost | None = None) -> None:
        """Follow `channel`; before `start` (a later subscription waits for the next
        reconnect)."""
        self._subs.append(Subscription(channel, notify, on_connect, on_lost))

    def start(self) -> None:
        """Start following (once for all its users: each `start` is matched by a `close`)."""
        self._users += 1
        if self._task is None:
            self._task = asyncio.create_task(self._listen_forever(), name=self.name)

    async def close(self) -> None:
        self._users = max(0, self._users - 1)
        if self._users or self._task is None:
            return
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
        self._task = None

    async def _listen_forever(self) -> None:
        backoff = BACKOFF_MIN_S
        while True:
            lost = asyncio.Event()
            conn: asyncpg.Connection | None = None
            try:
                conn = await db.connect(self.dsn, timeout=5)
                conn.add_termination_listener(lambda _c, lost=lost: lost.set())
                for sub in self._subs:
                    await conn.add_listener(sub.channel, sub.notify)
                self.connects += 1
                # After LISTEN, so that nothing falls in between.
                for sub in self._subs:
                    if sub.on_connect is not None:
                        await sub.on_connect(conn)
                self.conn = conn
                self._connected.set()
                backoff = BACKOFF_MIN_S
                while not lost.is_set():
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(lost.wait(), timeout=PING_S)
                    if not lost.is_set():
                        try:
                            async with asyncio.timeout(5), self.lock:
                                await conn.execute("SELECT 1")
                        except db.RETRYABLE:
                            lost.set()
            except db.RETRYABLE as exc:
                log.warning("%s: %s; retrying in %.1fs", self.name, exc, backoff)
            finally:
                self._connected.clear()
                self.conn = None
                for sub in self._subs:
                    if sub.on_lost is not None:
                        sub.on_lost()
                if conn is not None:
                    with contextlib.suppress(Exception):
                        conn.terminate()
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, BACKOFF_MAX_S)
