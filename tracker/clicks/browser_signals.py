"""The fold of browser signals into their clicks (the `browser_signals` job, tracker.jobs).

A program with `fingerprint = "browser"` answers a visit with a page whose script reports what
the browser says about itself; the flusher stores those reports in `click_signals`, the click
itself waits (`awaiting_signals`). Each run folds arrived signals into their clicks (a refined
fingerprint; a webdriver is a bot) and marks clicks whose page never reported back within
NO_SIGNALS_AFTER as bots: no JavaScript ran (a crawler, a script, a bot farm).
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable

import asyncpg

from tracker.clicks import queries
from tracker.clicks.enrich import Enricher

NO_SIGNALS_AFTER = "30 seconds"


def fold_browser_signals(
    enricher: Enricher,
) -> Callable[[asyncpg.Connection], Awaitable[None]]:
    """Fold the fingerprint page's signals into their clicks; no signals in time = no JS."""

    async def run(conn: asyncpg.Connection) -> None:
        rows = await queries.pending_signals(conn)
        await queries.fold_signals(
            conn,
            [(r.program_id, r.click_id, r.ts,
              enricher.fingerprint_with_signals(r.fingerprint or b"", json.loads(r.signals)),
              r.signals, r.webdriver) for r in rows],
        )
        await queries.delete_signals(conn, [r.program_id for r in rows],
                                     [r.click_id for r in rows])
        # The page never reported back: no JavaScript ran (a crawler, a script, a bot farm).
        await queries.mark_no_javascript(conn, NO_SIGNALS_AFTER)
        await queries.delete_stale_signals(conn)

    return run
