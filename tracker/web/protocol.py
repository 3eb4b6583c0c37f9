"""The worker's HTTP connection protocol: aiohttp's, with the click redirect answered ahead of it.

For a plain `GET /r/{code}` of a link in memory, aiohttp's per-request machinery (a request
object, a task, the router, a Response, its header serialization) cost more CPU than the redirect
itself: the bare aiohttp app bench/redirect compares against spends most of its time there too.
`RedirectProtocol` lets aiohttp's C parser read the request as always, then, while aiohttp's
request loop is idle, offers it to the redirect's fast path (`tracker.clicks.redirect`), which
journals the click and hands back the head of its 302; the protocol writes that head, with the
headers aiohttp would add, only once the journal group holding the click is written. Everything
else is aiohttp's, unchanged: any request the fast path declines (unknown code, HEAD, another
path or method, a body, HTTP/1.0, Expect, an upgrade) and any request while aiohttp is busy with
one on this connection is queued for aiohttp's loop, in order.

Order on a connection: while a fast answer waits for the journal, bytes that arrive (a pipelined
request) are held and parsed after the answer is written, so answers leave in request order.

This relies on internals of aiohttp's RequestHandler as of 3.14 (its message queue, the idle
waiter of its request loop, `_request_in_progress`, the parser's `message_consumed`): the tests
(tests/app/test_redirect_fast.py) compare the fast path's answers and stored clicks with
aiohttp's own and count the requests it took, so an aiohttp upgrade that moves them fails there.
"""

from __future__ import annotations

import asyncio
import signal
from typing import Any

from aiohttp import hdrs, web
from aiohttp.helpers import rfc822_formatted_time
from aiohttp.http import SERVER_SOFTWARE, HttpVersion11, RawRequestMessage
from aiohttp.streams import EMPTY_PAYLOAD
from aiohttp.web_protocol import RequestHandler
from aiohttp.web_server import Server

from tracker.clicks.redirect import FastRedirect
from tracker.web import keys


class RedirectProtocol(RequestHandler):
    """aiohttp's connection protocol, offering each request to the redirect's fast path first."""

    __slots__ = ("_fast", "_fast_message", "_held", "_loop_started", "_peer", "_server")

    def __init__(self, manager: RedirectServer, **kwargs: Any) -> None:
        super().__init__(manager, **kwargs)
        self._server = manager
        self._fast = manager.fast
        self._fast_message: RawRequestMessage | None = None  # a click waiting for the journal
        self._held = b""  # what arrived meanwhile
        self._peer: str | None = None
        # aiohttp's request loop is a task that (on Python 3.11) starts an event-loop iteration
        # after the connection: a request that comes before it finds it idle all the same.
        self._loop_started = False

    async def start(self) -> None:
        self._loop_started = True
        await super().start()

    def data_received(self, data: bytes) -> None:
        if self._fast_message is not None:
            # Parsed once the click before it is answered, so that answers keep their order.
            self._held += data
            self._pause_reading_for_buffer()
            return
        waiter = self._waiter
        if self._messages or (waiter is None and self._loop_started):
            # aiohttp's loop is handling a request of this connection: it keeps the order.
            super().data_received(data)
            return
        # aiohttp's loop waits for a request: parse without waking it, then see whether the fast
        # path takes what came.
        self._waiter = None
        try:
            super().data_received(data)
        finally:
            self._waiter = waiter
        messages = self._messages
        if len(messages) == 1 and self._take(*messages[0]):
            messages.popleft()
            return
        if messages and waiter is not None and not waiter.done():
            waiter.set_result(None)

    def _take(self, message: object, payload: object) -> bool:
        """Whether the fast path answers this request (then it was journaled)."""
        if type(message) is not RawRequestMessage:  # aiohttp's parse error: its 400
            return False
        if (
            payload is not EMPTY_PAYLOAD
            or message.version != HttpVersion11
            or message.upgrade
            or hdrs.EXPECT in message.headers
            # A client that does not read its answers: aiohttp's writer waits for it to drain
            # (and so stops reading), the fast path would not.
            or self._paused
        ):
            return False
        try:
            taken = self._fast(message, self._peer or self._peername(), self._fast_answered)
        except Exception:  # noqa: BLE001 (aiohttp's handler meets it again and answers 500)
            return False
        if taken:
            self._fast_message = message
            # As while aiohttp's handler runs: a graceful shutdown waits for the answer.
            self._request_in_progress = True
        return taken

    def _peername(self) -> str:
        """The peer's address as aiohttp's `request.remote` gives it (read once)."""
        peer = self.peername
        self._peer = (
            "" if peer is None else str(peer[0]) if isinstance(peer, (list, tuple)) else str(peer)
        )
        return self._peer

    def _fast_answered(self, head: bytes | None) -> None:
        message, self._fast_message = self._fast_message, None
        if message is None:  # pragma: no cover (one answer per request, by construction)
            return
        self._request_in_progress = False
        if self._handler_waiter is not None:
            self._handler_waiter.set_result(None)
        if head is None:
            # The click was not journaled: aiohttp's loop takes the request from the start.
            self._messages.appendleft((message, EMPTY_PAYLOAD))
            if self._waiter is not None and not self._waiter.done():
                self._waiter.set_result(None)
        else:
            if self._parser is not None:
                self._parser.message_consumed()
            self._server.requests_count += 1
            self._server.fast_answers += 1
            transport = self.transport
            if transport is not None and not transport.is_closing():
                transport.write(head + self._server.tail(message.should_close))
                if message.should_close or self._close:
                    transport.close()
                elif self._keepalive_timeout:
                    # What aiohttp's loop does after each answer: the idle timer starts now.
                    self._next_keepalive_close_time = self._loop.time() + self._keepalive_timeout
        held = self._held
        if held:
            self._held = b""
            self._resume_reading_for_buffer()
            self.data_received(held)


class RedirectServer(Server):
    """aiohttp's connection factory, making RedirectProtocols."""

    def __init__(self, base: Server, fast: FastRedirect) -> None:
        super().__init__(base.request_handler, request_factory=base.request_factory,
                         handler_cancellation=base.handler_cancellation, loop=base._loop,
                         **base._kwargs)
        self.fast = fast
        self.fast_answers = 0  # requests the fast path answered (tests read it)
        self._date = ""
        self._tails = (b"", b"")

    def __call__(self) -> RequestHandler:
        return RedirectProtocol(self, loop=self._loop, **self._kwargs)

    def tail(self, close: bool) -> bytes:
        """The headers aiohttp adds to a bodiless answer, and the blank line that ends them."""
        date = rfc822_formatted_time()  # aiohttp's, formatted once a second
        if date is not self._date:
            common = f"Content-Length: 0\r\nDate: {date}\r\nServer: {SERVER_SOFTWARE}\r\n"
            self._date = date
            self._tails = ((common + "\r\n").encode(),
                           (common + "Connection: close\r\n\r\n").encode())
        return self._tails[close]


class WorkerRunner(web.AppRunner):
    """An AppRunner whose connections are RedirectProtocols when the app has a redirect."""

    async def _make_server(self) -> Server:
        server = await super()._make_server()
        redirect = self.app.get(keys.REDIRECT)
        return server if redirect is None else RedirectServer(server, redirect.fast)


async def serve(app: web.Application, host: str, port: int, *, shutdown_timeout: float) -> None:
    """Serve `app` on host:port (SO_REUSEPORT, shared with the other workers) until SIGTERM or
    SIGINT, then close gracefully: connections within `shutdown_timeout`, then the app's
    cleanups (the journal seals its segment)."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    runner = WorkerRunner(app, access_log=None, shutdown_timeout=shutdown_timeout)
    await runner.setup()
    try:
        await web.TCPSite(runner, host, port, reuse_port=True).start()
        await stop.wait()
    finally:
        await runner.cleanup()
