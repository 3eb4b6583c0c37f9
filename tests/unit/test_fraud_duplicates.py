"""Duplicate clicks (tracker.clicks.flusher.mark_duplicates): a repeat of one browser, not two
people with the same phone behind one address."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from tracker.clicks.enrich import COLUMNS
from tracker.clicks.flusher import mark_duplicates


def row(minute: int, visitor: str | None, fingerprint: bytes, *, new: bool = False
        ) -> list[object]:
    out: list[object] = [None] * len(COLUMNS)
    out[COLUMNS.index("ts")] = datetime(2026, 11, 1, tzinfo=UTC) + timedelta(minutes=minute)
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
