"""PostgreSQL fails over under load: a primary and a synchronous streaming standby (real
processes, tests/pgcluster.py), `refguard serve` on a multi-host DSN taking redirects and a
stream of conversions (signed and token), the primary's postmaster killed with -9 and the
standby promoted.

Every answered redirect has exactly one click row on the new primary (the journal held them
while no primary was reachable), every conversion the API acknowledged is there exactly once,
the API answered writes during the outage with 503 and Retry-After (never a 500), the server's
jobs resumed on the new primary, and no reward is made or earned twice.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import asyncpg
import pytest

from tests.app.test_conversions import signed
from tests.e2e.test_reliability import Load, Serve, assert_exactly_once
from tests.helpers import auth
from tests.pgcluster import Cluster, pg_cluster
from tracker import db
from tracker.auth import create_token
from tracker.finance.clearance import release

pytestmark = pytest.mark.reliability

PROGRAM = {"slug": "fo", "name": "Failover", "destination_domains": ["shop.test"],
           "settings": {"hold_days": 0, "reward": {"currency": "EUR", "rules": [
               {"beneficiary": "referrer", "on": "purchase", "flat": 500}]}}}
CLICKS_EACH_SIDE = 1500  # redirects answered before the kill, and again after the promotion
CONVERSIONS_EACH_SIDE = 25  # conversions acknowledged before the kill, and again after
OUTAGE_S = 1.5  # the primary is dead and the standby not yet promoted (failure detection)
TIMEOUT_S = 120  # a bound for the whole run: 15 to 55 s on a loaded 2-core machine


def refguard(env: dict[str, str], *args: str) -> str:
    """A `refguard` command (as a subprocess, like an operator's) on the cluster's DSNs."""
    done = subprocess.run([sys.executable, "-m", "tracker", *args], env=env, timeout=60,
                          capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr
    return done.stdout


@dataclass
class Conversions:
    """Purchases posted one after another, each retried until acknowledged (as an
    integration would on a 503 or a lost connection), naming a click answered earlier."""

    base: str
    name: str
    headers: Callable[[bytes], dict[str, str]]  # a body's authentication headers
    clicks: list[str]
    acked: dict[str, tuple[int, float]] = field(default_factory=dict)  # event -> status, when
    posted: set[str] = field(default_factory=set)
    statuses: Counter[int] = field(default_factory=Counter)
    unavailable: list[float] = field(default_factory=list)  # when each 503 came
    no_retry_after: int = 0
    lost_connections: int = 0
    stop: asyncio.Event = field(default_factory=asyncio.Event)

    async def run(self) -> None:
        timeout = aiohttp.ClientTimeout(total=10)
        async with aiohttp.ClientSession(timeout=timeout) as session:
            n = 0
            while not self.stop.is_set():
                n += 1
                event = f"{self.name}-{n}"
                click = self.clicks[-100] if len(self.clicks) > 100 else None
                body = json.dumps({"program": PROGRAM["slug"], "event_id": event,
                                   "type": "purchase", "customer_id": f"c-{event}",
                                   "amount": 2000, "currency": "EUR",
                                   **({"click_id": click} if click else {})}).encode()
                while not self.stop.is_set() and event not in self.acked:
                    await self._post(session, event, body)

    async def _post(self, session: aiohttp.ClientSession, event: str, body: bytes) -> None:
        self.posted.add(event)
        try:
            async with session.post(f"{self.base}/api/v1/conversions", data=body,
                                    headers=self.headers(body)) as resp:
                self.statuses[resp.status] += 1
                if resp.status in (200, 201):
                    self.acked[event] = (resp.status, time.monotonic())
                    return
                if resp.status == 503:
                    self.unavailable.append(time.monotonic())
                    if resp.headers.get("Retry-After") != "1":
                        self.no_retry_after += 1
                    await asyncio.sleep(0.1)  # sooner than Retry-After: to count the answers
                    return
                # Anything else is a failure of the test's expectations; do not retry it.
                self.acked[event] = (resp.status, time.monotonic())
        except (aiohttp.ClientError, OSError, TimeoutError):
            self.lost_connections += 1
            await asyncio.sleep(0.1)


@dataclass(frozen=True)
class Setup:
    code: str  # the link's
    secret: str  # the program's signing secret
    admin: str
    integration: str
    integration_id: int


async def setup_program(base: str, app_dsn: str) -> Setup:
    """A program with a flat referrer reward and no hold, a referrer and a link, through the
    API."""
    conn = await asyncpg.connect(app_dsn)
    try:
        admin, _ = await create_token(conn, "admin", "failover admin")
        integration, integration_id = await create_token(conn, "integration", "failover shop")
    finally:
        await conn.close()
    async with aiohttp.ClientSession(base) as http:
        for path, body, token in [
            ("/api/v1/programs", PROGRAM, admin),
            ("/api/v1/referrers", {"program": "fo", "external_id": "r1"}, integration),
            ("/api/v1/links", {"program": "fo", "referrer": "r1", "code": "fo1",
                               "destination": "https://shop.test/"}, integration),
        ]:
            async with http.post(path, json=body, headers=auth(token)) as resp:
                assert resp.status == 201, await resp.text()
        async with http.get("/api/v1/programs/fo", headers=auth(admin)) as resp:
            secret = (await resp.json())["signing_secret"]
    return Setup("fo1", secret, admin, integration, integration_id)


async def check_changes_reach_every_worker(base: str, setup: Setup) -> None:
    """After the failover, a link made and a token revoked on the new primary take effect on
    every worker at once (their caches follow the new primary, or look up when they cannot)."""
    async with aiohttp.ClientSession(base) as http:
        async with http.post("/api/v1/links", headers=auth(setup.integration), json={
                "program": "fo", "referrer": "r1", "code": "after1",
                "destination": "https://shop.test/after"}) as resp:
            assert resp.status == 201, await resp.text()
        async with http.post(f"/api/v1/tokens/{setup.integration_id}/revoke",
                             headers=auth(setup.admin)) as resp:
            assert resp.status == 200, await resp.text()
    body = json.dumps({"program": "fo", "event_id": "after-revoke", "type": "purchase",
                       "customer_id": "c-x", "amount": 1, "currency": "EUR"})
    # One connection per request, so that every worker answers some.
    async with aiohttp.ClientSession(base, connector=aiohttp.TCPConnector(
            force_close=True)) as http:
        for _ in range(20):
            async with http.get("/r/after1", allow_redirects=False) as resp:
                assert resp.status == 302
                assert resp.headers["Location"].startswith("https://shop.test/after?")
            async with http.post("/api/v1/conversions", data=body, headers={
                    **auth(setup.integration), "Content-Type": "application/json"}) as resp:
                assert resp.status == 401


JOB_RUNS = re.compile(r'^refguard_job_runs_total\{job="([a-z_]+)",result="([a-z]+)"\} (\S+)$', re.M)


async def job_runs(base: str) -> Counter[tuple[str, str]]:
    """The server's job runs so far, by (job, result), from /metrics."""
    async with aiohttp.ClientSession() as http, http.get(base + "/metrics") as resp:
        text = await resp.text()
    return Counter({(job, result): int(float(n)) for job, result, n in JOB_RUNS.findall(text)})


async def check_jobs_resumed(base: str, before_kill: Counter[tuple[str, str]]) -> list[str]:
    """Every job that failed while no primary was up ran again (on the new primary, after
    taking its advisory lock there when it has one); returns their names."""
    deadline = time.monotonic() + 30
    while True:
        now = await job_runs(base)
        failed = sorted(job for job, result in now if result == "failed"
                        and now[job, "failed"] > before_kill[job, "failed"])
        waiting = [job for job in failed if now[job, "ran"] <= before_kill[job, "ran"]]
        if not waiting:
            return failed
        assert time.monotonic() < deadline, f"jobs that did not resume: {waiting}"
        await asyncio.sleep(0.5)


async def until(done: Callable[[], bool], what: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not done():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.1)


@dataclass
class Run:
    """What the load saw, for the checks."""

    setup: Setup
    load: Load
    streams: list[Conversions]
    jobs_before_kill: Counter[tuple[str, str]] = field(default_factory=Counter)
    killed_at: float = 0.0
    promoted_at: float = 0.0

    @property
    def acked(self) -> set[str]:
        return {e for s in self.streams for e in s.acked}

    def writes_back(self) -> float:
        """Seconds from the kill to the first write acknowledged after the first 503 (one in
        flight at the kill may be acknowledged by the dying primary)."""
        return min(t for s in self.streams for _status, t in s.acked.values()
                   if t > self.unavailable[0]) - self.killed_at

    @property
    def unavailable(self) -> list[float]:
        return sorted(t for s in self.streams for t in s.unavailable)


async def fail_over_under_load(cluster: Cluster, serve: Serve, app_dsn: str) -> Run:
    """Redirects and conversions on both sides of a kill -9 of the primary and a promotion."""
    primary, standby = cluster.nodes
    setup = await setup_program(serve.base, app_dsn)
    load = Load(serve.base, setup.code)
    run = Run(setup, load, [
        Conversions(serve.base, "signed", lambda b: signed(b, setup.secret), load.answered),
        Conversions(serve.base, "token", lambda _b: {
            **auth(setup.integration), "Content-Type": "application/json"}, load.answered)])
    tasks = [asyncio.create_task(load.run(concurrency=6)),
             *(asyncio.create_task(s.run()) for s in run.streams)]
    try:
        await until(lambda: len(load.answered) >= CLICKS_EACH_SIDE
                    and len(run.acked) >= CONVERSIONS_EACH_SIDE, "load before the kill")
        clicks, acked = len(load.answered), len(run.acked)
        run.jobs_before_kill = await job_runs(serve.base)
        run.killed_at = time.monotonic()
        cluster.kill(primary)
        load.in_outage = True
        await asyncio.sleep(OUTAGE_S)
        # The standby is promoted once a job has met the dead primary (the browser signals
        # job runs every 2 s; on a loaded machine the outage could otherwise pass between
        # two of its runs, and there would be no outage for the jobs to resume from).
        failures = Counter[str]()
        while not +failures:
            failures = Counter({job: n for (job, result), n in (await job_runs(serve.base)).items()
                                if result == "failed"})
            failures.subtract({job: n for (job, result), n in run.jobs_before_kill.items()
                               if result == "failed"})
            assert time.monotonic() - run.killed_at < 30, "no job met the dead primary"
            await asyncio.sleep(0.2)
        await asyncio.to_thread(cluster.promote, standby)
        run.promoted_at = time.monotonic()
        load.in_outage = False
        await until(lambda: len(load.answered) >= clicks + CLICKS_EACH_SIDE
                    and len(run.acked) >= acked + CONVERSIONS_EACH_SIDE,
                    "load after the promotion")
    finally:
        load.stop.set()
        for stream in run.streams:
            stream.stop.set()
        await asyncio.gather(*tasks, return_exceptions=True)
    return run


async def check_conversions_and_rewards(conn: asyncpg.Connection, run: Run) -> int:
    """Every acknowledged conversion stored once, attributed by the server's job on the new
    primary, and rewarded at most once; returns the number of rewards."""
    stored = Counter(r["event_id"] for r in await conn.fetch("SELECT event_id FROM conversions"))
    assert max(stored.values()) == 1, "a conversion stored twice"
    assert run.acked <= set(stored), "an acknowledged conversion lost"
    assert set(stored) <= {e for s in run.streams for e in s.posted}

    # The server's jobs resumed on the new primary: the attribution job (under its advisory
    # lock) attributes what was acknowledged after the promotion. Nothing else attributes.
    async def unattributed() -> int:
        return int(await conn.fetchval(
            "SELECT count(*) FROM conversions WHERE attributed_at IS NULL"))

    deadline = time.monotonic() + 30
    while await unattributed() and time.monotonic() < deadline:
        await asyncio.sleep(0.2)
    assert await unattributed() == 0, "the attribution job did not resume"

    # Clearance on the new primary, twice (as a retried operator would): the second run
    # finds nothing left to make or decide.
    await release(conn)
    again = await release(conn)
    assert again.created == 0 and not any(again.decided.values())
    rewards = await conn.fetch(
        """SELECT r.conversion_id, count(l.reward_id) AS earned
           FROM rewards r
           LEFT JOIN ledger_entries l ON l.reward_id = r.id AND l.kind = 'earned'
           GROUP BY r.program_id, r.id""")
    credited = await conn.fetchval(
        "SELECT count(*) FROM conversions c JOIN clicks k ON k.click_id = c.click_id")
    # Each conversion naming a click gets its reward (attribution waited for clicks still in
    # the journal); none has two, and none was earned twice.
    assert len(rewards) == credited > 0, "a conversion lost its referrer's reward"
    assert len({r["conversion_id"] for r in rewards}) == len(rewards), "a reward made twice"
    # (Approved ones are earned; a few may be flagged: one shop, one IP, many customers.)
    assert all(r["earned"] <= 1 for r in rewards), "a reward earned twice"
    return len(rewards)


async def test_kill_9_of_the_primary_and_promotion_lose_and_double_nothing(
    tmp_path: Path,
) -> None:
    started = time.monotonic()
    data = tmp_path / "data"
    with pg_cluster(tmp_path / "pg") as cluster:
        primary = await asyncio.to_thread(cluster.start_primary)
        standby = await asyncio.to_thread(cluster.add_standby, synchronous=True)
        cluster.sql(primary, "CREATE DATABASE refguard")
        app_dsn = cluster.dsn("refguard", user=db.APP_ROLE)
        # Migrated through the multi-host DSNs, as the owner.
        await asyncio.to_thread(refguard, {
            **os.environ, "REFGUARD_DATABASE_URL": app_dsn,
            "REFGUARD_MIGRATE_DATABASE_URL": cluster.dsn("refguard"),
            "REFGUARD_DATA_DIR": str(data), "REFGUARD_SECRET_KEY": "x" * 32}, "migrate")
        serve = Serve(app_dsn, data, workers=2)
        try:
            async with asyncio.timeout(TIMEOUT_S):
                await serve.start()
                run = await fail_over_under_load(cluster, serve, app_dsn)
                load = run.load
                # Redirects answered throughout; each is one row on the new primary.
                assert load.non_302 == 0 and load.failures == 0
                assert load.outage_answered > 0, "redirects stopped while no primary was up"
                await assert_exactly_once(app_dsn, load.answered)
                # The API answered writes 503 + Retry-After while no primary was up, never
                # a 500, and never dropped a connection.
                statuses = sum((s.statuses for s in run.streams), Counter())
                assert set(statuses) <= {200, 201, 503}, statuses
                assert sum(s.no_retry_after for s in run.streams) == 0
                assert sum(s.lost_connections for s in run.streams) == 0
                assert run.unavailable and run.unavailable[0] >= run.killed_at
                await check_changes_reach_every_worker(serve.base, run.setup)
                resumed = await check_jobs_resumed(serve.base, run.jobs_before_kill)
                assert resumed, "no job noticed the outage"
                conn = await asyncpg.connect(app_dsn)
                try:
                    assert int(await conn.fetchval("SHOW port")) == standby.port
                    rewards = await check_conversions_and_rewards(conn, run)
                finally:
                    await conn.close()
        except BaseException:
            if serve.log.exists():
                print("\n".join(serve.log.read_text(errors="replace").splitlines()[-40:]))
            raise
        finally:
            serve.stop()
            shutil.rmtree(data, ignore_errors=True)
    # Nothing the cluster ran is left (the killed postmaster's backends included).
    assert cluster.leftovers() == []
    print(f"\nfailover: {len(load.answered)} clicks answered ({load.outage_answered} while "
          f"no primary was up), {len(run.acked)} conversions acknowledged, "
          f"{len(run.unavailable)} writes answered 503 + Retry-After; the standby was promoted "
          f"{run.promoted_at - run.killed_at:.1f} s after the kill ({OUTAGE_S:.1f} s "
          f"of detection), writes acknowledged again {run.writes_back():.1f} s after "
          f"it; {rewards} rewards, none made or earned twice; 0 lost, 0 doubled; "
          f"{time.monotonic() - started:.0f} s in all")
