"""Duplicate clicks (tracker.clicks.flusher.mark_duplicates): a repeat of one browser, not two
people with the same phone behind one address."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from hypothesis import given
from hypothesis import strategies as st

from tracker.clicks.enrich import COLUMNS
from tracker.clicks.flusher import mark_duplicates

T0 = int(datetime(2026, 11, 1, tzinfo=UTC).timestamp()) * 1_000_000


def row(minute: float, visitor: str | None, fingerprint: bytes, *, new: bool = False
        ) -> list[object]:
    """A click row as Enricher.row makes it: its time in Unix microseconds."""
    out: list[object] = [None] * len(COLUMNS)
    out[COLUMNS.index("ts")] = T0 + round(timedelta(minutes=minute) / timedelta(microseconds=1))
    out[COLUMNS.index("link_id")] = 1
    out[COLUMNS.index("visitor_id")] = visitor
    out[COLUMNS.index("fingerprint")] = fingerprint
    out[COLUMNS.index("new_visitor")] = new
    out[COLUMNS.index("is_duplicate")] = False
    return out


def test_two_visitors_with_one_phone_model_behind_a_nat_are_not_duplicates() -> None:
    rows = [row(0, "va", b"iphone@nat", new=True),  # two people, each on a first visit
            row(10, "vb", b"iphone@nat", new=True),
            row(20, "va", b"iphone@nat"),  # the first again: a duplicate
            row(25, "vc", b"iphone@nat", new=True),  # a newcomer: another person
            row(30, None, b"iphone@nat")]  # no visitor id at all: may be any of them
    mark_duplicates(rows)
    dup = COLUMNS.index("is_duplicate")
    assert [r[dup] for r in rows] == [False, False, True, False, True]
    later = [row(0, "va", b"iphone@nat"), row(90, "vb", b"iphone@nat", new=True)]
    mark_duplicates(later)  # outside the hour: never a duplicate
    assert [r[dup] for r in later] == [False, False]


def test_the_hour_is_exact_to_the_microsecond() -> None:
    """Times are Unix microseconds (Enricher.row): a repeat one hour later to the microsecond
    is still a duplicate, one microsecond more is not."""
    dup = COLUMNS.index("is_duplicate")
    hour = 60.0
    rows = [row(0, "va", b"fp"), row(hour, "va", b"fp")]
    mark_duplicates(rows)
    assert [r[dup] for r in rows] == [False, True]
    rows = [row(0, "va", b"fp"), row(hour + 1 / 60_000_000, "va", b"fp")]
    assert rows[1][COLUMNS.index("ts")] - rows[0][COLUMNS.index("ts")] == 3_600_000_001
    mark_duplicates(rows)
    assert [r[dup] for r in rows] == [False, False]


@given(st.lists(st.tuples(st.integers(0, 150), st.sampled_from(["va", "vb", "vc"]),
                          st.sampled_from([b"f1", b"f2"]), st.integers(1, 2)), max_size=40))
def test_a_batch_of_visitors_only_is_flagged_as_the_general_rule_flags_it(
    clicks: list[tuple[int, str, bytes, int]],
) -> None:
    """Where every click has a visitor id the fingerprints are not looked at: the flags are
    those of the general rule (forced here by one click without a visitor id, on another link
    ten hours later, that can flag nothing before it)."""
    dup = COLUMNS.index("is_duplicate")
    fast = [row(minute, visitor, fp) for minute, visitor, fp, _ in sorted(clicks)]
    for r, (*_, link) in zip(fast, sorted(clicks), strict=True):
        r[COLUMNS.index("link_id")] = link
    general = [r.copy() for r in fast]
    mark_duplicates(fast)
    mark_duplicates([*general, row(600, None, b"f1")])
    assert [r[dup] for r in fast] == [r[dup] for r in general]
