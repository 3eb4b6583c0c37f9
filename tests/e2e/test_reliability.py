"""No answered click is lost or duplicated: kill -9 of processes, PostgreSQL stopped mid-load.

These run the real `refguard serve` (supervisor, workers, background flusher) as subprocesses and
drive it with a load generator that records the rg_cid of every 302 it received.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import asyncpg
import psutil
import pytest

from tests.helpers import click_id, free_port, insert_link
from tracker import db

pytestmark = pytest.mark.reliability


class Serve:
    """`refguard serve` in its own process group."""

    def __init__(self, dsn: str, data_dir: Path, workers: int, host: str = "127.0.0.1",
                 port: int | None = None) -> None:
        self.dsn = dsn
        self.data_dir = data_dir
        self.workers = workers
        self.host = host
        self.port = port or free_port()
        self.base = f"http://{host}:{self.port}"
        self.proc: subprocess.Popen[bytes] | None = None
        self.log = data_dir / "serve.log"

    async def start(self) -> None:
        env = {**os.environ, "REFGUARD_DATABASE_URL": self.dsn,
               "REFGUARD_DATA_DIR": str(self.data_dir), "REFGUARD_SECRET_KEY": "x" * 32}
        self.data_dir.mkdir(parents=True, exist_ok=True)
        with self.log.open("ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "tracker", "serve", "--host", self.host,
                 "--port", str(self.port), "--workers", str(self.workers)],
                env=env, stdout=log, stderr=log, start_new_session=True,
            )
        await self.wait_healthy()

    async def wait_healthy(self, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        async with aiohttp.ClientSession() as session:
            while time.monotonic() < deadline:
                with contextlib.suppress(aiohttp.ClientError, OSError):
                    async with session.get(self.base + "/healthz") as resp:
                        if resp.status == 200:
                            return
                await asyncio.sleep(0.2)
        raise AssertionError("refguard serve did not become healthy:\n" + self.log.read_text())

    def children(self) -> list[psutil.Process]:
        assert self.proc is not None
        return psutil.Process(self.proc.pid).children()

    async def worker_pids(self) -> set[int]:
        """Pids that answer HTTP (the workers, not the background process)."""
        pids: set[int] = set()
        connector = aiohttp.TCPConnector(force_close=True)
        async with aiohttp.ClientSession(connector=connector) as session:
            for _ in range(50):
                with contextlib.suppress(aiohttp.ClientError, OSError):
                    async with session.get(self.base + "/healthz") as resp:
                        pids.add((await resp.json())["pid"])
                if len(pids) >= self.workers:
                    break
        return pids

    async def wait_workers(self, timeout: float = 30.0) -> set[int]:
        """The workers' pids once all of them answer again (a restarted one needs a moment to
        import and bind, longer on a busy machine)."""
        deadline = time.monotonic() + timeout
        while True:
            pids = await self.worker_pids()
            if len(pids) >= self.workers or time.monotonic() > deadline:
                return pids
            await asyncio.sleep(0.2)

    def kill_all(self) -> None:
        """kill -9 of the supervisor and every child at once."""
        assert self.proc is not None
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(10)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                self.kill_all()


@dataclass
class Load:
    base: str | list[str]  # one server, or several hosts taken in turn
    code: str
    answered: list[str] = field(default_factory=list)
    by_base: Counter[str] = field(default_factory=Counter)
    failures: int = 0
    non_302: int = 0
    outage_answered: int = 0
    in_outage: bool = False
    stop: asyncio.Event = field(default_factory=asyncio.Event)

    async def until(self, done: Callable[[], bool], timeout: float = 60.0) -> None:
        """Let the load run until `done()` (a count of answers, not a time: machines differ)."""
        deadline = time.monotonic() + timeout
        while not done() and time.monotonic() < deadline:
            await asyncio.sleep(0.1)

    async def run(self, concurrency: int = 8) -> None:
        # One connection per request, as most visitors arrive, so SO_REUSEPORT spreads them.
        connector = aiohttp.TCPConnector(force_close=True, limit=concurrency)
        timeout = aiohttp.ClientTimeout(total=5)
        async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
            await asyncio.gather(*(self._user(session, i) for i in range(concurrency)))

    async def _user(self, session: aiohttp.ClientSession, n: int) -> None:
        bases = [self.base] if isinstance(self.base, str) else self.base
        i = 0
        while not self.stop.is_set():
            i += 1
            base = bases[(n + i) % len(bases)]
            try:
                async with session.get(f"{base}/r/{self.code}", allow_redirects=False,
                                       headers={"User-Agent": f"Mozilla/5.0 load {n}-{i}"}
                                       ) as resp:
                    if resp.status != 302:
                        self.non_302 += 1
                        continue
                    cid = click_id(resp.headers["Location"])
                    self.answered.append(cid)
                    self.by_base[base] += 1
                    if self.in_outage:
                        self.outage_answered += 1
            except (aiohttp.ClientError, OSError, TimeoutError):
                # A connection to a process that just died: never answered, so not a click.
                self.failures += 1
                await asyncio.sleep(0.01)


async def setup_link(dsn: str) -> str:
    conn = await asyncpg.connect(dsn)
    try:
        await insert_link(conn, program="rel", referrer="r1", code="load1", domain="shop.test")
    finally:
        await conn.close()
    return "load1"


async def assert_exactly_once(
    dsn: str, answered: list[str], *, cut: int = 0, timeout: float = 60.0
) -> None:
    """Every answered click has exactly one row. `cut` requests lost their connection to a
    killed process: each may have been journaled (recorded) before its answer was lost."""
    conn = await asyncpg.connect(dsn)
    try:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            count = await conn.fetchval("SELECT count(*) FROM clicks")
            if count >= len(answered):
                break
            await asyncio.sleep(0.2)
        await asyncio.sleep(1.0)  # let anything extra arrive, so a duplicate would show
        rows = [str(r["click_id"]) for r in await conn.fetch("SELECT click_id FROM clicks")]
    finally:
        await conn.close()
    assert len(answered) == len(set(answered))
    missing = set(answered) - set(rows)
    assert not missing, f"{len(missing)} answered clicks lost"
    assert len(rows) == len(set(rows)), "duplicate click rows"
    extra = len(rows) - len(answered)
    assert 0 <= extra <= cut, f"{extra} rows never answered (only {cut} requests were cut)"


async def test_kill_9_workers_flusher_and_everything_loses_nothing(
    dsn: str, tmp_path: Path
) -> None:
    code = await setup_link(dsn)
    serve = Serve(dsn, tmp_path / "data", workers=2)
    await serve.start()
    try:
        load = Load(serve.base, code)
        runner = asyncio.create_task(load.run())
        await load.until(lambda: len(load.answered) > 300)
        workers = await serve.wait_workers()
        assert len(workers) == 2
        victim = sorted(workers)[0]
        os.kill(victim, signal.SIGKILL)  # one worker, mid-load
        await asyncio.sleep(1.5)
        background = [p for p in serve.children() if p.pid not in await serve.worker_pids()
                      and p.pid != victim]
        # The flusher and jobs' process (and maybe the victim's replacement, not yet answering).
        assert background
        for proc in background:
            with contextlib.suppress(psutil.NoSuchProcess):
                proc.send_signal(signal.SIGKILL)  # the flusher, mid-flush
        replaced = await serve.wait_workers()
        assert len(replaced) == 2 and victim not in replaced  # replaced by the supervisor
        serve.kill_all()  # and finally everything at once
        load.stop.set()
        await runner
        answered_before_restart = len(load.answered)
        assert answered_before_restart > 300
        backlog = len(os.listdir(serve.data_dir / "journal"))
        await serve.start()  # the restart replays what was not yet flushed
        await assert_exactly_once(dsn, load.answered, cut=load.failures)
        print(f"\nkill -9: {len(load.answered)} answered, {load.failures} refused connections, "
              f"{backlog} journal segments left at the final kill, all stored exactly once")
    finally:
        serve.stop()


async def test_postgres_outage_keeps_redirecting_and_loses_nothing(tmp_path: Path) -> None:
    from pgserver._commands import pg_ctl  # the embedded server's own pg_ctl

    server = db.embedded_server(tmp_path / "pg-outage")
    dsn = server.get_uri()
    conn = await asyncpg.connect(dsn)
    await db.migrate(conn)
    await conn.close()
    code = await setup_link(dsn)
    serve = Serve(dsn, tmp_path / "data", workers=1)
    await serve.start()
    try:
        load = Load(serve.base, code)
        runner = asyncio.create_task(load.run(concurrency=4))
        await asyncio.sleep(1.0)
        # In a thread: the load generator shares this event loop and must keep going.
        await asyncio.to_thread(pg_ctl, ["-w", "-m", "fast", "stop"], pgdata=server.pgdata,
                                user=server.system_user)
        load.in_outage = True
        started = time.monotonic()
        async with aiohttp.ClientSession() as session:
            await asyncio.sleep(2.0)
            async with session.get(serve.base + "/readyz") as resp:
                assert resp.status == 503
                assert (await resp.json())["status"] == "degraded"
            await asyncio.sleep(max(0.0, 10.0 - (time.monotonic() - started)))
        load.in_outage = False
        served_in_outage = load.outage_answered
        await asyncio.to_thread(server.ensure_postgres_running)
        await asyncio.sleep(1.0)
        load.stop.set()
        await runner
        assert served_in_outage > 200, "redirects stopped during the outage"
        assert load.non_302 == 0 and load.failures == 0
        await assert_exactly_once(dsn, load.answered)
        print(f"\noutage: {served_in_outage} redirects answered while PostgreSQL was down, "
              f"{len(load.answered)} in all, all stored exactly once")
        async with aiohttp.ClientSession() as session, session.get(serve.base + "/readyz") as resp:
            assert resp.status == 200
    finally:
        serve.stop()
        server.cleanup()


async def test_sigterm_drains_the_journal_and_metrics_sum_the_workers(
    dsn: str, tmp_path: Path
) -> None:
    code = await setup_link(dsn)
    serve = Serve(dsn, tmp_path / "data", workers=2)
    await serve.start()
    try:
        load = Load(serve.base, code)
        runner = asyncio.create_task(load.run(concurrency=4))
        await asyncio.sleep(2.0)
        load.stop.set()
        await runner
        assert load.failures == 0
        assert len(await serve.wait_workers()) == 2
        # Each worker folds its counters into the shared files now and then: wait for the sum.
        counted = -1.0
        deadline = time.monotonic() + 20
        while counted != len(load.answered) and time.monotonic() < deadline:
            await asyncio.sleep(0.5)
            async with aiohttp.ClientSession() as session, \
                    session.get(serve.base + "/metrics") as r:
                text = await r.text()
            line = next(x for x in text.splitlines() if x.startswith(
                'refguard_http_requests_total{route="redirect",status="302"}'))
            counted = float(line.rsplit(" ", 1)[1])
        assert counted == len(load.answered)
        assert serve.proc is not None
        serve.proc.send_signal(signal.SIGTERM)
        assert serve.proc.wait(60) == 0
        # Everything answered is in PostgreSQL before the processes exit: nothing left behind.
        assert [n for n in os.listdir(serve.data_dir / "journal")
                if n.endswith((".sealed", ".open"))] == []
        conn = await asyncpg.connect(dsn)
        try:
            assert await conn.fetchval("SELECT count(*) FROM clicks") == len(load.answered)
        finally:
            await conn.close()
        # The server logs one JSON object a line (the banner before it is plain text).
        logged = [json.loads(x) for x in serve.log.read_text().splitlines() if x.startswith("{")]
        assert any("stopping" in line["message"] for line in logged)
        assert all({"ts", "level", "logger", "pid", "message"} <= set(line) for line in logged)
    finally:
        serve.stop()


async def test_three_hosts_one_killed_and_restarted_lose_nothing(
    dsn: str, tmp_path: Path
) -> None:
    """Three tracker hosts (own address, own journal) share one PostgreSQL; one is killed
    with everything in it mid-load and comes back: every answered click is stored once."""
    code = await setup_link(dsn)
    port = free_port()
    hosts = [Serve(dsn, tmp_path / f"host{i}", workers=1, host=f"127.0.0.{i + 2}",
                   port=port) for i in range(3)]
    for host in hosts:
        await host.start()
    try:
        load = Load([h.base for h in hosts], code)
        runner = asyncio.create_task(load.run(concurrency=6))
        await load.until(lambda: all(load.by_base[h.base] > 50 for h in hosts))
        victim = hosts[1]
        victim.kill_all()
        killed_at = len(load.answered)
        victim_before = load.by_base[victim.base]
        await load.until(lambda: len(load.answered) > killed_at + 100)
        assert len(load.answered) > killed_at + 100  # the other hosts keep answering
        await victim.start()  # the same journal folder: what was not flushed replays
        await load.until(lambda: load.by_base[victim.base] > victim_before + 50
                         and all(load.by_base[h.base] > 50 for h in hosts))
        load.stop.set()
        await runner
        assert all(load.by_base[h.base] > 50 for h in hosts)
        assert load.by_base[victim.base] > victim_before  # it answers again
        await assert_exactly_once(dsn, load.answered, cut=load.failures)
        print(f"\nthree hosts: {len(load.answered)} answered "
              f"({', '.join(f'{h.host}: {load.by_base[h.base]}' for h in hosts)}), "
              f"{load.failures} refused while {victim.host} was down, all stored exactly once")
    finally:
        for host in hosts:
            host.stop()
