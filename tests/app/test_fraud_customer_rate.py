"""The program's converting customers per click, which the referrer-level conversion-rate
and burst tests count people in (a customer who signs up and buys is one): a full scan stores
it, an incremental scan reads it back with each referrer's converting customers."""

from __future__ import annotations

from pathlib import Path

import asyncpg

from tests.helpers import ClientFactory
from tests.shop import Shop
from tracker.scoring.credits import attribute_pending
from tracker.scoring.facts import Scope, load_program_facts
from tracker.scoring.risk import scan


async def test_full_scans_store_customers_per_click_and_incremental_scans_reuse_them(
    aiohttp_client: ClientFactory, tmp_path: Path, dsn: str, tokens: dict[str, str],
    conn: asyncpg.Connection,
) -> None:
    shop = await Shop.open(aiohttp_client, tmp_path, dsn, tokens, conn, {"hold_days": 0})
    await shop.referrer("alice")
    for event, customer in (("p0", "c0"), ("p1", "c0"), ("p2", "c1"), ("p3", "c1")):
        await shop.buy("alice", event, customer)
    await attribute_pending(conn)
    program_id = await conn.fetchval("SELECT id FROM programs WHERE slug = 'acme'")
    incremental = Scope(set(), [], ["alice"])
    # Before any full scan: nothing stored, both rates counted in conversion events.
    assert (await load_program_facts(conn, program_id, incremental)).context.customer_rate \
        is None
    (summary,) = await scan(conn, "acme")
    assert (summary.program_rate, summary.customer_rate) == (1.0, 0.5)
    context = (await load_program_facts(conn, program_id, incremental)).context
    assert (context.program_rate, context.customer_rate) == (1.0, 0.5)
    assert context.referrer_customers == {"alice": 2}
