"""The batched redirect metrics add up exactly like per-request observations."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Histogram

from tracker.metrics import REDIRECT_BUCKETS, RedirectStats, add_histogram_counts


def _samples(hist: Histogram) -> dict[str, float]:
    return {
        f"{s.name}{s.labels.get('le', '')}": s.value
        for metric in hist.collect() for s in metric.samples if not s.name.endswith("_created")
    }


def test_batched_counts_equal_observe() -> None:
    registry = CollectorRegistry()
    direct = Histogram("direct_seconds", "d", buckets=REDIRECT_BUCKETS, registry=registry)
    batched = Histogram("batched_seconds", "b", buckets=REDIRECT_BUCKETS, registry=registry)
    values = [0.00001, 0.00005, 0.0003, 0.0003, 0.002, 0.04, 0.7, 3.0, 0.00025]
    stats = RedirectStats()
    for v in values:
        direct.observe(v)
        stats.observe(v)
    add_histogram_counts(batched, stats.buckets, stats.total_seconds)
    got = {k.replace("batched", "direct"): v for k, v in _samples(batched).items()}
    assert got == _samples(direct)
    assert got["direct_seconds_count"] == len(values)
