"""Prometheus metrics (names: prefix `refguard_`, suffixes `_total` / `_seconds`).

With several worker processes prometheus-client runs in multiprocess mode
(PROMETHEUS_MULTIPROC_DIR, set by `refguard serve` before the workers start) and /metrics sums
the processes. Labels never carry a link code, IP or user id.

The redirect does not touch prometheus-client per request: in multiprocess mode every `inc`
takes a lock and writes an mmap, which costs the hot path more than everything else it does.
It counts into `RedirectStats` (plain integers) and a task folds those into the metrics every
second.
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import os

from aiohttp import web
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
)

REDIRECT_BUCKETS = (
    0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5,
)

HTTP_REQUESTS = Counter(
    "refguard_http_requests_total", "HTTP requests answered", ["route", "status"]
)
REDIRECT_SECONDS = Histogram(
    "refguard_redirect_seconds",
    "Time spent in the redirect handler (journal write included)",
    buckets=REDIRECT_BUCKETS,
)
API_SECONDS = Histogram("refguard_api_seconds", "API request handling time", ["route"])
CLICKS = Counter(
    "refguard_clicks_total",
    "Clicks stored in PostgreSQL by outcome (recorded = counted, bot, duplicate)",
    ["outcome"],
)
JOURNAL_WRITE_FAILURES = Counter(
    "refguard_journal_write_failures_total", "Redirects refused because the journal failed"
)
JOURNAL_BACKLOG_CLICKS = Gauge(
    "refguard_journal_backlog_clicks",
    "Clicks journaled but not yet in PostgreSQL",
    multiprocess_mode="livesum",
)
JOURNAL_BACKLOG_SEGMENTS = Gauge(
    "refguard_journal_backlog_segments",
    "Journal segments waiting for the flusher",
    multiprocess_mode="livesum",
)
JOURNAL_REPLAYED = Counter(
    "refguard_journal_replayed_segments_total",
    "Open segments of dead workers flushed (replayed after a crash)",
)
FLUSH_SECONDS = Histogram(
    "refguard_flush_seconds",
    "Time to copy one batch of clicks into PostgreSQL",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
FLUSH_CPU = Counter(
    "refguard_flush_cpu_seconds",
    "CPU seconds of the flusher by stage: read (and parse) the journal, enrich, store (sort, "
    "duplicate checks, COPY encoding); PostgreSQL's own CPU is not in it",
    ["stage"],
)
FLUSH_FAILURES = Counter("refguard_flush_failures_total", "Flush attempts that failed")
DATABASE_UP = Gauge(
    "refguard_database_up", "1 when the flusher reaches PostgreSQL", multiprocess_mode="livemax"
)
LINKS_CACHED = Gauge(
    "refguard_links_cached", "Links held in memory by a worker", multiprocess_mode="livemax"
)
GEOIP_AGE = Gauge(
    "refguard_geoip_database_age_seconds",
    "Age of each loaded GeoIP database (now minus its build time)",
    ["database"],
    multiprocess_mode="livemax",
)
FRAUD_FLAGS = Gauge(
    "refguard_fraud_flags", "Current fraud flags by kind, all programs", ["kind"],
    multiprocess_mode="livemax",
)
SCAN_SECONDS = Histogram(
    "refguard_fraud_scan_seconds", "Duration of fraud scans (full or incremental)", ["mode"],
    buckets=(0.1, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300),
)
RING_SIZE = Histogram(
    "refguard_fraud_ring_size", "Accounts per ring found", buckets=(3, 4, 5, 8, 13, 21, 50, 100),
)
REWARDS = Gauge(
    "refguard_rewards", "Rewards by status", ["status"], multiprocess_mode="mostrecent",
)
REVIEW_QUEUE = Gauge(
    "refguard_review_queue_size", "Flagged rewards waiting for finance",
    multiprocess_mode="mostrecent",
)
REVIEW_QUEUE_OLDEST = Gauge(
    "refguard_review_queue_oldest_seconds", "Age of the oldest flagged reward",
    multiprocess_mode="mostrecent",
)
DECISIONS = Counter(
    "refguard_reward_decisions_total", "Reward decisions by action and by whom (finance or "
    "clearance)", ["action", "by"],
)
OVERTURNS = Counter(
    "refguard_reward_overturns_total", "Finance approvals of rewards the fraud engine held "
    "(flagged or rejected automatically), once per reason code the reward carries (`none`: "
    "it carried none; `other`: a code that is not a plain lowercase word)", ["reason"],
)
PAID_OUT = Gauge(
    "refguard_paid_out", "Money paid out so far by currency, in minor units (from the ledger)",
    ["currency"], multiprocess_mode="mostrecent",
)
# Per program (issue 16), from the reports job's cached economics over the whole history:
# bounded labels (at most economics.MAX_PROGRAM_SERIES programs by slug, ISO 4217 currencies).
PROGRAM_REFERRED_REVENUE = Gauge(
    "refguard_program_referred_revenue",
    "Referred customers' revenue net of refunds and chargebacks, minor units",
    ["program", "currency"], multiprocess_mode="mostrecent",
)
PROGRAM_INCENTIVE_COST = Gauge(
    "refguard_program_incentive_cost",
    "Rewards approved or paid, clawbacks netted, minor units", ["program", "currency"],
    multiprocess_mode="mostrecent",
)
PROGRAM_ROI = Gauge(
    "refguard_program_roi", "(referred revenue - incentive cost) / incentive cost",
    ["program", "currency"], multiprocess_mode="mostrecent",
)
WEBHOOKS = Counter(
    "refguard_webhook_deliveries_total", "Webhook delivery attempts by result "
    "(delivered, retry, failed: gave up)", ["result"],
)
ASKS = Counter(
    "refguard_asks_total", "Asks by outcome (queued, sent, expired, suppressed) and reason "
    "(tracker.asks.asks.REASONS; empty for queued and sent)", ["outcome", "reason"],
)
REPLICA_UNAVAILABLE = Counter(
    "refguard_replica_unavailable_total",
    "Heavy reads the read replica (REFGUARD_READ_DATABASE_URL) could not take: read on the "
    "primary instead (outcome=primary: jobs, commands) or answered 503 (outcome=refused: API "
    "reports)",
    ["outcome"],
)
JOB_RUNS = Counter("refguard_job_runs_total", "Job runs by job and result", ["job", "result"])


class RedirectStats:
    """Per-request counts kept as plain integers, folded into Prometheus once a second."""

    __slots__ = ("_bounds", "buckets", "count_200", "count_302", "count_404", "count_503",
                 "total_seconds")

    def __init__(self) -> None:
        self._bounds = REDIRECT_BUCKETS
        self.buckets = [0] * (len(REDIRECT_BUCKETS) + 1)
        self.total_seconds = 0.0
        self.count_200 = 0  # the browser-fingerprint page
        self.count_302 = 0
        self.count_404 = 0
        self.count_503 = 0

    def observe(self, seconds: float) -> None:
        self.buckets[bisect.bisect_left(self._bounds, seconds)] += 1
        self.total_seconds += seconds

    def fold(self) -> None:
        """Move the counts into the Prometheus metrics and reset them."""
        for status, n in (("200", self.count_200), ("302", self.count_302),
                          ("404", self.count_404), ("503", self.count_503)):
            if n:
                HTTP_REQUESTS.labels(route="redirect", status=status).inc(n)
        self.count_200 = self.count_302 = self.count_404 = self.count_503 = 0
        counts, total = self.buckets, self.total_seconds
        self.buckets = [0] * len(counts)
        self.total_seconds = 0.0
        add_histogram_counts(REDIRECT_SECONDS, counts, total)


def add_histogram_counts(hist: Histogram, counts: list[int], total: float) -> None:
    """Add pre-bucketed observations to a histogram.

    prometheus-client has no public batch API; its Histogram keeps one value per bucket in
    `_buckets` (non-cumulative, exposition makes them cumulative) and the sum in `_sum`.
    tests/test_metrics.py checks this against `observe` so a library change fails loudly.
    """
    buckets = hist._buckets
    for i, n in enumerate(counts):
        if n:
            buckets[i].inc(n)
    if total:
        hist._sum.inc(total)


async def fold_forever(stats: RedirectStats, interval: float = 1.0) -> None:
    try:
        while True:
            await asyncio.sleep(interval)
            stats.fold()
    finally:
        stats.fold()


def render() -> tuple[bytes, str]:
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
        return generate_latest(registry), CONTENT_TYPE_LATEST
    from prometheus_client import REGISTRY

    return generate_latest(REGISTRY), CONTENT_TYPE_LATEST


async def handle_metrics(request: web.Request) -> web.Response:
    body, content_type = render()
    resp = web.Response(body=body)
    resp.headers["Content-Type"] = content_type
    return resp


def mark_process_dead(pid: int) -> None:
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        with contextlib.suppress(OSError):
            multiprocess.mark_process_dead(pid)  # type: ignore[no-untyped-call]
