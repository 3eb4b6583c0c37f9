"""Baseline servers for bench/redirect.py, run as `python -m bench.apps KIND --port P --workers N`.

bare:  an aiohttp app (uvloop) that only answers the same 302 as refguard's redirect: Location with
       an rg_cid-like query parameter, Set-Cookie rg_vid=..., Cache-Control: private, no-store.
       This is the ceiling that DESIGN.md section 8 measures refguard against.
naive: the tracker people write first: INSERT each click into PostgreSQL (asyncpg pool), then 302.

Both run N worker processes on one port with SO_REUSEPORT, as `refguard serve --workers N` does,
so the comparison is fair. The parent waits for SIGTERM/SIGINT and then stops its workers.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing as mp
import os
import signal
import sys
import time
import uuid
from collections.abc import AsyncIterator
from multiprocessing.process import BaseProcess
from types import FrameType

import asyncpg
import uvloop
from aiohttp import web

COOKIE_TAIL = f"; Max-Age={365 * 24 * 3600}; Path=/; HttpOnly; SameSite=Lax"

NAIVE_TABLE_SQL = """
CREATE TABLE IF NOT EXISTS naive_clicks (
    click_id        uuid PRIMARY KEY,
    ts              timestamptz NOT NULL DEFAULT now(),
    code            text NOT NULL,
    visitor_id      text,
    ip              inet,
    user_agent      text,
    accept_language text,
    referer         text,
    query           text
)
"""
NAIVE_INSERT_SQL = """
INSERT INTO naive_clicks (click_id, code, visitor_id, ip, user_agent, accept_language, referer,
                          query)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
"""


def _id_factory() -> object:
    """UUIDv7-shaped ids as cheap as refguard's ClickIds (the header bytes stay the same)."""
    rnd = int.from_bytes(os.urandom(8), "big")
    mid = f"7{rnd >> 52 & 0xFFF:03x}-{0x8000 | (rnd >> 38 & 0x3FFF):04x}-"
    state = {"n": rnd & 0xFFFF_FFFF_FFFF}
    now_ns = time.time_ns

    def new() -> str:
        ms = now_ns() // 1_000_000
        state["n"] = n = state["n"] + 1
        return f"{ms >> 16:08x}-{ms & 0xFFFF:04x}-{mid}{n & 0xFFFF_FFFF_FFFF:012x}"

    return new


def make_app(kind: str, dest: str, dsn: str, pool_size: int) -> web.Application:
    app = web.Application()
    sep = "&" if "?" in dest else "?"
    pid = os.getpid()

    async def healthz(request: web.Request) -> web.Response:
        return web.json_response({"app": kind, "pid": pid})

    if kind == "bare":
        new_id = _id_factory()

        async def bare(request: web.Request) -> web.StreamResponse:
            cid = new_id()  # type: ignore[operator]
            return web.Response(
                status=302,
                headers={
                    "Location": f"{dest}{sep}rg_cid={cid}",
                    "Cache-Control": "private, no-store",
                    "Set-Cookie": f"rg_vid={cid}{COOKIE_TAIL}",
                },
            )

        app.router.add_get("/r/{code}", bare)
    else:
        pool_key = web.AppKey("pool", asyncpg.Pool)

        async def pool_ctx(app: web.Application) -> AsyncIterator[None]:
            app[pool_key] = await asyncpg.create_pool(dsn, min_size=pool_size, max_size=pool_size)
            yield
            await app[pool_key].close()

        app.cleanup_ctx.append(pool_ctx)

        async def naive(request: web.Request) -> web.StreamResponse:
            headers = request.headers
            vid = request.cookies.get("rg_vid")
            cid = uuid.uuid4()
            new_visitor = not vid
            if new_visitor:
                vid = str(cid)
            await request.app[pool_key].execute(
                NAIVE_INSERT_SQL, cid, request.match_info["code"], vid, request.remote,
                headers.get("User-Agent"), headers.get("Accept-Language"),
                headers.get("Referer"), request.query_string,
            )
            out = {"Location": f"{dest}{sep}rg_cid={cid}", "Cache-Control": "private, no-store"}
            if new_visitor:
                out["Set-Cookie"] = f"rg_vid={vid}{COOKIE_TAIL}"
            return web.Response(status=302, headers=out)

        app.router.add_get("/r/{code}", naive)
    app.router.add_get("/healthz", healthz)
    return app


def worker_main(kind: str, port: int, dest: str, dsn: str, pool_size: int, *,
                host: str = "127.0.0.1") -> None:
    app = make_app(kind, dest, dsn, pool_size)
    web.run_app(
        app,
        host=host,
        port=port,
        reuse_port=True,
        access_log=None,
        print=None,
        shutdown_timeout=5,
        loop=uvloop.new_event_loop(),
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.apps")
    parser.add_argument("kind", choices=["bare", "naive"])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--dest", default="https://shop.example.com/landing?ref=bench")
    parser.add_argument("--dsn", default="", help="PostgreSQL DSN (naive)")
    parser.add_argument("--pool-size", type=int, default=16, help="asyncpg pool per worker (naive)")
    args = parser.parse_args(argv)
    if args.kind == "naive":
        if not args.dsn:
            parser.error("naive needs --dsn")

        async def create_table() -> None:
            conn = await asyncpg.connect(args.dsn)
            try:
                await conn.execute(NAIVE_TABLE_SQL)
            finally:
                await conn.close()

        asyncio.run(create_table())

    ctx = mp.get_context("spawn")
    stopping = False

    def on_signal(signum: int, frame: FrameType | None) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    procs: list[BaseProcess] = []
    for i in range(args.workers):
        proc = ctx.Process(
            target=worker_main,
            args=(args.kind, args.port, args.dest, args.dsn, args.pool_size),
            kwargs={"host": args.host},
            name=f"bench-{args.kind}-{i}",
        )
        proc.start()
        procs.append(proc)
    status = 0
    while not stopping:
        time.sleep(0.2)
        if any(not p.is_alive() for p in procs):
            print(f"bench.apps {args.kind}: a worker exited; stopping", file=sys.stderr)
            status = 1
            break
    for p in procs:
        if p.is_alive() and p.pid:
            os.kill(p.pid, signal.SIGTERM)
    for p in procs:
        p.join(10)
        if p.is_alive():
            p.kill()
            p.join(2)
    return status


if __name__ == "__main__":
    sys.exit(main())
