"""Attribution in batches: the same touches and credits however the backlog is cut, one fit of
a data-driven model per program and run on exactly the journeys stored at its end (so its
credits do not depend on the batch size either), and re-runs that change nothing.

Clicks and conversions go straight into the database (no redirect), one program per model and
window over the same story: bot and duplicate clicks, a click outside some windows, named clicks
with a UUIDv7 id (found by its millisecond) and with another kind of id (found by the fallback),
a customer who comes back in a later batch, a visitor id, a typed code, an organic conversion, a
refund and a visitor who never converts.
"""

from __future__ import annotations

import asyncio
import math
import uuid
from collections import Counter
from collections.abc import Hashable
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import pytest

from attribution.models import Journey, Touch, heuristic_credits
from tests.helpers import insert_link
from tracker.scoring import credits as attributing
from tracker.scoring.credits import attribute_pending, load_journeys

T0 = datetime(2026, 3, 10, 12, 0, tzinfo=UTC)
PROGRAMS = {  # slug: (model, window in days)
    "lt": ("last_touch", 7), "ft": ("first_touch", 30), "lin": ("linear", 14),
    "td": ("time_decay", 30), "pb": ("position_based", 30), "mk": ("markov", 30),
    "sh": ("shapley", 30),
}
# Each event's touches by referrer, in order, with a 30-day window and a shorter one.
TOUCHES = {"e1": ["a", "b"], "e2": ["c", "a"], "e3": ["a", "b"], "e4": [], "e5": ["a"],
           "e6": ["c"], "e7": []}
SHORT = {"e2": ["a"]}  # c's click, 20 days before, is outside 7 and 14 days


def uuid7(at: datetime, n: int) -> str:
    ms = int(at.timestamp() * 1000)
    return f"{ms >> 16:08x}-{ms & 0xFFFF:04x}-7abc-8def-{n:012x}"


async def story(conn: asyncpg.Connection, slug: str, model: str, window: int) -> int:
    ids: dict[str, tuple[int, int]] = {}
    pid = 0
    for ref in "abc":
        pid, link, rid = await insert_link(conn, program=slug, referrer=ref, code=f"{slug}{ref}")
        ids[ref] = (link, rid)
    await conn.execute(
        "UPDATE programs SET settings = $2::jsonb WHERE id = $1", pid,
        f'{{"attribution_model": "{model}", "attribution_window_days": {window}}}')
    named: dict[str, str] = {}
    clicks: list[tuple[str, str, int, bool, bool, str | None, str]] = [
        ("v1", "a", -5, False, False, None, "v7"),
        ("v1", "a", -4, False, True, None, "v7"),  # a duplicate: not a touch
        ("v1", "b", -2, False, False, "e1", "v7"),
        ("v1", "c", -1, True, False, None, "v7"),  # a bot: not a touch
        ("v2", "c", -20, False, False, None, "v7"),
        ("v2", "a", -3, False, False, "e2", "v4"),  # not a UUIDv7: found by the fallback
        ("v3", "b", -1, False, False, None, "v7"),  # never converts: a lost journey
        ("v4", "a", -1, False, False, None, "v7"),
    ]
    for n, (visitor, ref, days, bot, dup, name, kind) in enumerate(clicks, 1):
        at = T0 + timedelta(days=days, microseconds=n * 1000 + 7)
        cid = uuid7(at, n) if kind == "v7" else str(uuid.uuid4())
        link, rid = ids[ref]
        await conn.execute(
            """INSERT INTO clicks (program_id, click_id, ts, link_id, referrer_id, code,
                   visitor_id, is_bot, is_duplicate)
               VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)""",
            pid, cid, at, link, rid, f"{slug}{ref}", visitor, bot, dup)
        if name:
            named[name] = cid
    conversions: list[tuple[str, str, str, float, str | None, str | None, str | None]] = [
        ("e1", "cust1", "purchase", 0, None, None, None),
        ("e2", "cust2", "purchase", 0, None, None, None),
        ("e3", "cust1", "renewal", 1, None, None, None),  # a later batch reaches v1
        ("e4", "cust3", "purchase", 0, None, None, None),  # organic: no touches
        ("e5", "cust4", "signup", -0.5, "v4", None, None),
        ("e6", "cust5", "purchase", 0, None, f"{slug}c", None),
        ("e7", "cust1", "refund", 2, None, None, "e1"),
    ]
    for event, customer, type_, offset, reached, code, original in conversions:
        await conn.execute(
            """INSERT INTO conversions (program_id, event_id, type, customer_id, amount,
                   currency, occurred_at, click_id, visitor_id, referral_code,
                   original_event_id, body_hash)
               VALUES ($1, $2, $3, $4, 1000, 'USD', $5, $6, $7, $8, $9, '\\x00')""",
            pid, event, type_, customer, T0 + timedelta(days=offset), named.get(event), reached,
            code, original)
    return pid


async def stored(conn: asyncpg.Connection, pid: int
                 ) -> dict[str, tuple[list[tuple[str, datetime, str]], dict[str, float]]]:
    """Per event: its touchpoints (referrer, time, via) in order and its credits."""
    touches = await conn.fetch(
        """SELECT c.event_id, r.external_id, t.ts, t.via FROM touchpoints t
           JOIN conversions c ON c.program_id = t.program_id AND c.id = t.conversion_id
           JOIN referrers r ON r.program_id = t.program_id AND r.id = t.referrer_id
           WHERE t.program_id = $1 ORDER BY c.event_id, t.position""", pid)
    shares = await conn.fetch(
        """SELECT c.event_id, r.external_id, cr.credit FROM credits cr
           JOIN conversions c ON c.program_id = cr.program_id AND c.id = cr.conversion_id
           JOIN referrers r ON r.program_id = cr.program_id AND r.id = cr.referrer_id
           WHERE cr.program_id = $1""", pid)
    out: dict[str, tuple[list[tuple[str, datetime, str]], dict[str, float]]] = {
        e: ([], {}) for e in TOUCHES}
    for t in touches:
        out[t["event_id"]][0].append((t["external_id"], t["ts"], t["via"]))
    for s in shares:
        out[s["event_id"]][1][s["external_id"]] = s["credit"]
    return out


async def everything(conn: asyncpg.Connection, pids: dict[str, int]) -> dict[str, Any]:
    return {slug: await stored(conn, pid) for slug, pid in pids.items()}


def spy_fits(monkeypatch: pytest.MonkeyPatch
             ) -> dict[int, list[Counter[tuple[tuple[Hashable, ...], int, int]]]]:
    """The journeys of every fit of a data-driven model, by program."""
    fitted: dict[int, list[Counter[tuple[tuple[Hashable, ...], int, int]]]] = {}
    real = attributing._fitted_credit_rows

    def spy(pm: attributing.ProgramModel, journeys: list[Journey],
            paths: dict[int, tuple[int, ...]]) -> list[tuple[object, ...]]:
        fitted.setdefault(pm.program_id, []).append(
            Counter((j.referrers, j.conversions, j.lost) for j in journeys))
        return real(pm, journeys, paths)

    monkeypatch.setattr(attributing, "_fitted_credit_rows", spy)
    return fitted


async def check_one_fit_each(conn: asyncpg.Connection, pids: dict[str, int],
                             fitted: dict[int, list[Counter[Any]]]) -> None:
    """Each data-driven program was fitted once in the run, on exactly the journeys a fresh
    read of the database gives after it: those attributed before, the run's own, the lost."""
    driven = {pid for slug, pid in pids.items() if PROGRAMS[slug][0] in ("markov", "shapley")}
    assert set(fitted) == driven
    for pid in driven:
        expected = Counter((j.referrers, j.conversions, j.lost)
                           for j in await load_journeys(conn, pid))
        assert fitted[pid] == [expected]


async def test_batches_give_the_same_touches_and_credits_and_reruns_change_nothing(
    conn: asyncpg.Connection, monkeypatch: pytest.MonkeyPatch,
) -> None:
    await conn.execute("SELECT refguard_ensure_click_partition($1)", T0 - timedelta(days=25))
    await conn.execute("SELECT refguard_ensure_click_partition($1)", T0)
    pids = {slug: await story(conn, slug, model, window)
            for slug, (model, window) in PROGRAMS.items()}

    fitted = spy_fits(monkeypatch)
    monkeypatch.setattr(attributing, "BATCH", 2)  # 4 batches per program
    assert await attribute_pending(conn) == 7 * len(PROGRAMS)
    await check_one_fit_each(conn, pids, fitted)
    fitted.clear()
    assert await attribute_pending(conn) == 0  # nothing left: a re-run changes nothing
    assert fitted == {}
    small = await everything(conn, pids)

    for slug, (model, window) in PROGRAMS.items():
        for event, (touches, shares) in small[slug].items():
            refs = SHORT.get(event, TOUCHES[event]) if window < 20 else TOUCHES[event]
            assert [t[0] for t in touches] == refs, (slug, event)
            if not refs:
                assert shares == {}, (slug, event)
                continue
            assert math.isclose(sum(shares.values()), 1.0, abs_tol=1e-12), (slug, event)
            assert set(shares) <= set(refs), (slug, event)
            if model not in ("markov", "shapley"):
                at = await conn.fetchval(
                    "SELECT occurred_at FROM conversions WHERE program_id = $1 AND "
                    "event_id = $2", pids[slug], event)
                expected = heuristic_credits(
                    model, [Touch(r, ts.timestamp()) for r, ts, _ in touches], at.timestamp())
                assert shares == pytest.approx(expected, abs=1e-12), (slug, event)
    assert {e: s for e, (_, s) in small["lt"].items() if s} == {
        "e1": {"b": 1.0}, "e2": {"a": 1.0}, "e3": {"b": 1.0}, "e5": {"a": 1.0},
        "e6": {"c": 1.0}}
    assert [t[2] for t in small["lt"]["e1"][0]] == ["visitor", "click"]
    assert [t[2] for t in small["lt"]["e6"][0]] == ["code"]
    # v3 never converted and no customer reaches it: the one lost journey left.
    for slug in ("mk", "sh"):
        lost = [j.referrers for j in await load_journeys(conn, pids[slug]) if j.lost]
        b = await conn.fetchval("SELECT id FROM referrers WHERE program_id = $1 AND "
                                "external_id = 'b'", pids[slug])
        assert lost == [(b,)]

    # Everything again, in one batch: every program's touches and credits are the same, the
    # data-driven ones' too (one fit per run, on the same journeys), and nothing is stored
    # twice.
    await conn.execute("UPDATE conversions SET attributed_at = NULL")
    monkeypatch.setattr(attributing, "BATCH", 1000)
    assert await attribute_pending(conn) == 7 * len(PROGRAMS)
    await check_one_fit_each(conn, pids, fitted)
    again = await everything(conn, pids)
    for slug in PROGRAMS:
        assert {e: t for e, (t, _) in again[slug].items()} == {
            e: t for e, (t, _) in small[slug].items()}, slug
        for event, (_, shares) in again[slug].items():
            assert shares == pytest.approx(small[slug][event][1], abs=1e-12), (slug, event)
    assert await conn.fetchval("SELECT count(*) FROM customer_visitors") == 3 * len(PROGRAMS)


async def test_a_run_started_meanwhile_waits_for_the_data_driven_run_and_adds_nothing(
    conn: asyncpg.Connection, dsn: str, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A data-driven program's run holds the attribution lock from its first batch to its
    credits, so another run (the job, clearance, the CLI) cannot attribute its conversions
    with a fit of its own in between: it waits, then finds nothing left."""
    await conn.execute("SELECT refguard_ensure_click_partition($1)", T0 - timedelta(days=25))
    await conn.execute("SELECT refguard_ensure_click_partition($1)", T0)
    pid = await story(conn, "mk", "markov", 30)
    fitted = spy_fits(monkeypatch)
    other = await asyncpg.connect(dsn)
    meanwhile: list[asyncio.Task[int]] = []
    real_gather = attributing._gather_batch

    async def gather_then_start_another(conn: asyncpg.Connection, pm: Any, after: Any) -> Any:
        if not meanwhile:  # between this run's first and second batch
            meanwhile.append(asyncio.create_task(attribute_pending(other)))
            await asyncio.sleep(0.5)
            assert not meanwhile[0].done()  # waiting for the lock
        return await real_gather(conn, pm, after)

    monkeypatch.setattr(attributing, "_gather_batch", gather_then_start_another)
    monkeypatch.setattr(attributing, "BATCH", 2)
    try:
        assert await attribute_pending(conn) == 7
        assert await asyncio.wait_for(meanwhile[0], 30) == 0
    finally:
        await other.close()
    await check_one_fit_each(conn, {"mk": pid}, fitted)
    # Stored once: every credited conversion's credits sum to 1.
    assert await conn.fetchval(
        "SELECT count(*) FROM (SELECT conversion_id FROM credits GROUP BY conversion_id "
        "HAVING abs(sum(credit) - 1) > 1e-9) AS c") == 0
    assert await conn.fetchval("SELECT count(DISTINCT conversion_id) FROM credits") == 5
