"""A batch's rows are ordered by (time, click id) as one sort by the pair orders them: sorted by
time, then each run of equal times by click id, rows equal in both in their order."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from tracker.clicks.enrich import COLUMNS
from tracker.clicks.flusher import time_ordered

TS, CLICK_ID = COLUMNS.index("ts"), COLUMNS.index("click_id")


def row(ts: int, click_id: str, n: int) -> list[object]:
    out: list[object] = [n] * len(COLUMNS)
    out[TS], out[CLICK_ID] = ts, click_id
    return out


@given(st.lists(st.tuples(st.integers(0, 5), st.sampled_from("abc")), max_size=40))
def test_rows_come_in_the_order_of_one_sort_by_time_and_click_id(
        keys: list[tuple[int, str]]) -> None:
    rows = [row(ts, cid, n) for n, (ts, cid) in enumerate(keys)]
    expected = sorted(rows, key=lambda r: (r[TS], r[CLICK_ID]))
    got = time_ordered(rows)
    assert [id(r) for r in got] == [id(r) for r in expected]
