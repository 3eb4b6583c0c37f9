"""tracker.scoring.facts: an incremental scan's Python work runs while PostgreSQL answers."""

from __future__ import annotations

import asyncio
import threading
from datetime import UTC, datetime

import pytest

from tracker.scoring.facts import _click_facts, _clicks, _meanwhile, _People
from tracker.scoring.queries import EarlierVisit, TouchRow


async def test_the_work_runs_while_the_query_waits() -> None:
    """The query can only finish once the work (in a thread) has run: run in turn, this
    would never end."""
    loop = asyncio.get_running_loop()
    worked = asyncio.Event()

    async def query() -> str:
        await asyncio.wait_for(worked.wait(), 5)
        return "rows"

    def work() -> int:
        assert threading.current_thread() is not threading.main_thread()
        loop.call_soon_threadsafe(worked.set)
        return 7

    assert await _meanwhile(query(), work) == ("rows", 7)


async def test_a_failed_query_waits_for_the_work_then_raises() -> None:
    done: list[int] = []

    async def query() -> str:
        raise ConnectionError("gone")

    def work() -> int:
        threading.Event().wait(0.05)
        done.append(1)
        return 1

    with pytest.raises(ConnectionError):
        await _meanwhile(query(), work)
    assert done == [1]


def test_clicks_made_beforehand_get_the_same_earlier_visits() -> None:
    people = _People()
    people.visitors["carol"].add("v-carol")
    ts = datetime(2026, 11, 1, 12, tzinfo=UTC)
    rows = [TouchRow(7, 1, f"k{i}", ts, "vb", "198.51.100.7", "d", False, None, False, False,
                     None, None, False, "en", "Chrome", None, "ua") for i in range(3)]
    before = {1: [EarlierVisit(1, 100.0, "v-owner", "ua-o"),
                  EarlierVisit(1, 200.0, "v-carol", "ua-c")]}
    made = _clicks(rows, {1: "alice"}, people)
    assert _click_facts(rows, before, {1: "alice"}, people, made) == _click_facts(
        rows, before, {1: "alice"}, people)
    (clicks,) = _click_facts(rows, before, {1: "alice"}, people, made).values()
    assert clicks[1].untied == ((100.0, "v-owner"),) and clicks[0].before == ()
