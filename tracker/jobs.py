"""Periodic jobs, one leader per job across every node (PostgreSQL advisory locks).

Each run takes `pg_try_advisory_xact_lock(job)`: whichever process gets it runs the job, the
others skip this round. CPU-heavy jobs (attribution, fraud scans) run their number crunching
in an executor so the event loop keeps serving. A job with `leader=False` runs on every node
(publishing program-wide gauges, so that no node shows stale ones).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import aiohttp
import asyncpg

from tracker import db, metrics
from tracker.asks.asks import asks_job
from tracker.asks.candidates import refresh_due
from tracker.asks.funnel import GROUPS as FUNNEL_GROUPS
from tracker.asks.funnel import funnel_report
from tracker.clicks.browser_signals import fold_browser_signals
from tracker.clicks.enrich import Enricher
from tracker.db import PRIMARY, Replica, lock_key
from tracker.finance.clearance import publish_metrics, release
from tracker.finance.experiments import experiments_report
from tracker.finance.webhooks import deliver_due
from tracker.privacy import BATCH, reduce_old
from tracker.scoring import queries as scoring_queries
from tracker.scoring.credits import attribute_pending
from tracker.scoring.economics import publish_economics_metrics, refresh_report_cache
from tracker.scoring.risk import scan
from tracker.settings import Settings

log = logging.getLogger(__name__)

JobFn = Callable[[asyncpg.Connection], Awaitable[None]]


@dataclass(frozen=True, slots=True)
class Job:
    name: str
    interval_s: float
    run: JobFn
    leader: bool = True  # False: every node runs it (e.g. to publish its own metrics)
    # False: the job commits as it goes (short transactions of its own), e.g. because it waits
    # on the network or works in many batches; the leader lock is then held by the session.
    transaction: bool = True

    @property
    def lock_key(self) -> int:
        return lock_key(self.name)


async def run_if_leader(pool: asyncpg.Pool, job: Job) -> bool:
    """Run the job once if no other process is running it; True when it ran."""
    async with pool.acquire() as conn:
        if job.transaction:
            async with conn.transaction():
                if job.leader and not await conn.fetchval(
                        "SELECT pg_try_advisory_xact_lock($1)", job.lock_key):
                    return False
                await job.run(conn)
                return True
        if not job.leader:
            await job.run(conn)
            return True
        if not await conn.fetchval("SELECT pg_try_advisory_lock($1)", job.lock_key):
            return False
        try:
            await job.run(conn)
        finally:
            # A broken connection has lost the lock anyway (and the pool discards it).
            with contextlib.suppress(*db.RETRYABLE):
                await conn.execute("SELECT pg_advisory_unlock($1)", job.lock_key)
        return True


async def ensure_click_partitions(conn: asyncpg.Connection) -> None:
    """Monthly click partitions for this month and the next three."""
    await conn.execute(
        """SELECT refguard_ensure_click_partition(now() + make_interval(months => m))
           FROM generate_series(0, 3) AS m"""
    )


async def attribute(conn: asyncpg.Connection) -> None:
    await attribute_pending(conn)


FULL_SCAN_EVERY = "1 hour"


def fraud_scan(replica: Replica = PRIMARY, side: asyncpg.Pool | None = None) -> JobFn:
    """New conversions every run; the whole program again once an hour (rings that grew
    slowly, FRAUDAR's dense blocks, referrer statistics that moved); facts read on `replica`.
    An incremental scan after no full one reads aside on one of `side`'s connections
    (risk.scan_program): after a full scan it reads in turn, since a side connection would not
    see that scan's findings, uncommitted in this job's transaction."""

    async def run(conn: asyncpg.Connection) -> None:
        stale = await conn.fetch(
            f"""SELECT p.slug FROM programs p WHERE NOT EXISTS (
                    SELECT 1 FROM fraud_scans s WHERE s.program_id = p.id AND s.mode = 'full'
                      AND s.finished_at > now() - interval '{FULL_SCAN_EVERY}')""")
        for row in stale:
            await scan(conn, row["slug"], replica=replica)
        await scan(conn, incremental=True, replica=replica, pool=None if stale else side)

    return run


def clearance(replica: Replica = PRIMARY) -> JobFn:
    """Release what is due; no side reads for its scan: the credits attribution has just made
    are uncommitted in this job's transaction."""
    async def run(conn: asyncpg.Connection) -> None:
        await release(conn, replica=replica)

    return run


def reduce_old_data(days: int) -> JobFn:
    """Reduce raw IPs and user agents older than `days` (tracker.privacy), a few batches a run,
    each committed on its own so no long lock is held."""

    async def run(conn: asyncpg.Connection) -> None:
        for _ in range(10):
            async with conn.transaction():
                reduced = await reduce_old(conn, days)
            if reduced < BATCH:
                break

    return run


def deliver_webhooks(secret_key: bytes, allow_private: bool = False) -> JobFn:
    """POST due webhook events (tracker.finance.webhooks), one HTTP session per run; no transaction
    stays open while a receiver answers."""

    async def run(conn: asyncpg.Connection) -> None:
        async with aiohttp.ClientSession() as session:
            await deliver_due(conn, secret_key, session, allow_private=allow_private)

    return run


def candidates(replica: Replica = PRIMARY) -> JobFn:
    """Refit the referral candidates of programs whose fit is missing, a day old, or an hour
    old with new conversions or events (tracker.asks.candidates); each fit reads on `replica`,
    stores in a short transaction of its own and crunches its numbers in an executor."""

    async def run(conn: asyncpg.Connection) -> None:
        await refresh_due(conn, replica=replica)

    return run


# Default views kept by the reports job beyond scoring's (economics, breakdowns, attribution):
# the funnel (asks) and the experiments (finance) sit above scoring, so they are computed
# here. The program page (tracker/web/review/program.py) reads them while fresh
# (CACHE_MAX_AGE_S).
FUNNEL = ("funnel", "")  # funnel_report's default view (by referrer, all time)
EXPERIMENTS = ("experiments", "")


def funnel_params(by: str) -> str:
    """The cache key of the funnel's view by `by` over all time (by referrer: FUNNEL's)."""
    return "" if by == "referrer" else f"by={by}"


async def report_cache(conn: asyncpg.Connection, replica: Replica = PRIMARY) -> None:
    """Every program's default views: scoring's (refresh_report_cache), then the funnel by
    each split and the experiments report, computed on `replica` (one snapshot per program)
    and each stored on the primary in its own transaction."""
    await refresh_report_cache(conn, replica)
    for program in await scoring_queries.programs_named(conn, None):
        async with replica.view(conn) as read:
            funnels = [(by, await funnel_report(read.conn, program.id, by=by))
                       for by in FUNNEL_GROUPS]
            experiments = await experiments_report(read.conn, program.id, program.settings)
        for by, body in funnels:
            await scoring_queries.store_report(conn, program.id, FUNNEL[0], funnel_params(by),
                                               body)
        await scoring_queries.store_report(conn, program.id, *EXPERIMENTS, experiments)


def default_jobs(enricher: Enricher, settings: Settings, replica: Replica = PRIMARY,
                 pool: asyncpg.Pool | None = None) -> tuple[Job, ...]:
    """The jobs; the heavy reads (scans, fits, reports) on `replica` (the primary without);
    `pool`, the primary's (the runner's), lends the fraud scan a side connection."""
    jobs = [
        Job("click_partitions", 3600.0, ensure_click_partitions),
        Job("browser_signals", 2.0, fold_browser_signals(enricher)),
        Job("attribution", 10.0, attribute),
        Job("fraud_scan", 30.0, fraud_scan(replica, pool)),
        Job("clearance", 30.0, clearance(replica)),
    ]
    jobs.append(Job("webhooks", 5.0,
                    deliver_webhooks(settings.secret_key, settings.webhook_allow_private),
                    transaction=False))
    # Asks at the moment of delight: each program's batch commits on its own.
    jobs.append(Job("asks", 10.0, asks_job(settings), transaction=False))
    jobs.append(Job("candidates", 300.0, candidates(replica), transaction=False))
    # Every node publishes the program-wide gauges from the database, so none shows stale ones.
    jobs.append(Job("publish_metrics", 30.0, publish_metrics, leader=False))
    # The reports' default views (issue 16), and the per-program gauges read from them.
    jobs.append(Job("report_cache", 600.0, functools.partial(report_cache, replica=replica),
                    transaction=False))
    jobs.append(Job("economics_metrics", 60.0, publish_economics_metrics, leader=False))
    if settings.retention_days:
        jobs.append(Job("retention", 600.0, reduce_old_data(settings.retention_days),
                        transaction=False))
    return tuple(jobs)


RETRY_MIN_S = 0.5  # the first retry of a job whose database was away


class JobRunner:
    def __init__(self, pool: asyncpg.Pool, jobs: tuple[Job, ...]) -> None:
        self.pool = pool
        self.jobs = jobs
        self._tasks: list[asyncio.Task[None]] = []

    async def _loop(self, job: Job) -> None:
        backoff = 0.0
        while True:
            try:
                ran = await run_if_leader(self.pool, job)
                metrics.JOB_RUNS.labels(job=job.name, result="ran" if ran else "skipped").inc()
            except Exception as exc:  # a failed run must not end the job for good
                metrics.JOB_RUNS.labels(job=job.name, result="failed").inc()
                if isinstance(exc, db.RETRYABLE):
                    log.warning("job %s failed: %s", job.name, exc)
                else:
                    log.exception("job %s failed", job.name)
                if isinstance(exc, db.UNAVAILABLE):
                    # The database is away (a restart, a failover): the job runs again as
                    # soon as it is back (a new primary), not a whole interval later.
                    backoff = min(max(backoff * 2, RETRY_MIN_S), job.interval_s, 30.0)
                else:
                    backoff = min(job.interval_s, 30.0)
                await asyncio.sleep(backoff)
                continue
            backoff = 0.0
            await asyncio.sleep(job.interval_s)

    def start(self) -> None:
        self._tasks = [asyncio.create_task(self._loop(j), name=f"job-{j.name}") for j in self.jobs]

    async def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks.clear()
