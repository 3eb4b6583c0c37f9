"""Jobs: one leader per job across processes, failures do not end a job, and jobs that run
outside a transaction commit as they go and always give the leadership back."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import asyncpg
import pytest
from prometheus_client import REGISTRY

from tracker.jobs import Job, JobRunner, run_if_leader


@pytest.fixture
async def pool(dsn: str) -> AsyncIterator[asyncpg.Pool]:
    async with asyncpg.create_pool(dsn, min_size=1, max_size=4) as the_pool:
        yield the_pool


class Blocking:
    """A job body that records its runs and waits until released."""

    def __init__(self) -> None:
        self.started = asyncio.Event()
        self.release = asyncio.Event()
        self.runs = 0

    async def __call__(self, conn: asyncpg.Connection) -> None:
        self.runs += 1
        self.started.set()
        await self.release.wait()


@pytest.mark.parametrize("transaction", [True, False])
async def test_one_leader_at_a_time_and_leadership_is_given_back(
    pool: asyncpg.Pool, transaction: bool
) -> None:
    body = Blocking()
    job = Job("exclusive", 1.0, body, transaction=transaction)
    first = asyncio.create_task(run_if_leader(pool, job))
    await body.started.wait()
    assert await run_if_leader(pool, job) is False  # another node meanwhile: skipped
    body.release.set()
    assert await first is True
    assert await run_if_leader(pool, job) is True  # the lock was released after the run
    assert body.runs == 2


@pytest.mark.parametrize("transaction", [True, False])
async def test_a_failing_run_gives_the_leadership_back(
    pool: asyncpg.Pool, transaction: bool
) -> None:
    async def boom(conn: asyncpg.Connection) -> None:
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError):
        await run_if_leader(pool, Job("flaky", 1.0, boom, transaction=transaction))
    body = Blocking()
    body.release.set()
    assert await run_if_leader(pool, Job("flaky", 1.0, body, transaction=transaction)) is True


@pytest.mark.parametrize("transaction", [True, False])
async def test_a_job_outside_a_transaction_keeps_the_batches_it_committed(
    pool: asyncpg.Pool, conn: asyncpg.Connection, owner_conn: asyncpg.Connection,
    transaction: bool
) -> None:
    """A run is all or nothing by default; a job that commits as it goes keeps its batches."""
    await owner_conn.execute("CREATE TABLE batches (n int)")  # the app's role creates none
    in_transaction: list[bool] = []

    async def batches(c: asyncpg.Connection) -> None:
        in_transaction.append(c.is_in_transaction())
        async with c.transaction():
            await c.execute("INSERT INTO batches VALUES (1)")
        raise RuntimeError("the second batch failed")

    with pytest.raises(RuntimeError):
        await run_if_leader(pool, Job("batches", 1.0, batches, transaction=transaction))
    assert in_transaction == [transaction]
    assert await conn.fetchval("SELECT count(*) FROM batches") == (0 if transaction else 1)


async def test_a_failed_run_is_counted_and_the_job_goes_on(pool: asyncpg.Pool) -> None:
    runs = 0
    again = asyncio.Event()

    async def fails_once(conn: asyncpg.Connection) -> None:
        nonlocal runs
        runs += 1
        if runs == 1:
            raise RuntimeError("first run fails")
        again.set()

    def failed() -> float:
        value = REGISTRY.get_sample_value("refguard_job_runs_total",
                                          {"job": "fails_once", "result": "failed"})
        return value or 0.0

    before = failed()
    runner = JobRunner(pool, (Job("fails_once", 0.01, fails_once),))
    runner.start()
    try:
        await asyncio.wait_for(again.wait(), 60)
    finally:
        await runner.close()
    assert failed() == before + 1


async def test_a_job_whose_database_went_away_runs_again_without_waiting_its_interval(
    pool: asyncpg.Pool,
) -> None:
    """A failover or a restart: the run's connection dies under it. The job runs again as
    soon as the database answers, not an hour later."""
    runs = 0
    again = asyncio.Event()

    async def loses_its_connection(conn: asyncpg.Connection) -> None:
        nonlocal runs
        runs += 1
        if runs <= 2:
            await conn.execute("SELECT pg_terminate_backend(pg_backend_pid())")
        again.set()

    runner = JobRunner(pool, (Job("hourly", 3600.0, loses_its_connection),))
    runner.start()
    try:
        await asyncio.wait_for(again.wait(), 60)
    finally:
        await runner.close()
    assert runs == 3
