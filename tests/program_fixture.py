"""A program with data for every chart of the program page (tracker.web.review.program): two
reward variants, referred purchases and rewards over four months in USD (one month costing more
than it brought: a negative ROI) and one EUR purchase, asks, shares and clicks at known
weekdays and hours. Written straight into the database, as the report tests do."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime, timedelta

import asyncpg

EVIL = '<script>alert("x")</script> a very long variant name indeed'
PLAIN = [{"beneficiary": "referrer", "on": "purchase", "flat": 2000}]
SETTINGS = {"reward": {"currency": "USD", "rules": PLAIN,
                       "variants": [{"name": "control", "weight": 1, "rules": PLAIN},
                                    {"name": EVIL, "weight": 1, "rules": PLAIN}]}}
# (month, referred purchases of 10000 USD, approved referrer rewards of 2000 USD)
MONTHS = (("2026-01", 3, 1), ("2026-02", 0, 0), ("2026-03", 1, 6), ("2026-04", 2, 2))
# Clicks: (ISO weekday 1..7, hour UTC, how many); 2026-01-05 is a Monday.
CLICKS = ((1, 9, 5), (1, 10, 2), (3, 20, 7), (6, 14, 1))


async def build(conn: asyncpg.Connection, slug: str = "acme") -> int:
    """The program `slug` with its data; its id."""
    pid: int = await conn.fetchval(
        """INSERT INTO programs (slug, name, destination_domains, settings)
           VALUES ($1, 'Acme <Shop>', ARRAY['acme.test'], $2::jsonb) RETURNING id""",
        slug, json.dumps(SETTINGS))
    refs = {}
    for i in range(12):
        variant = "control" if i % 2 else EVIL
        refs[f"r{i}"] = await conn.fetchval(
            "INSERT INTO referrers (program_id, external_id, variant) VALUES ($1, $2, $3) "
            "RETURNING id", pid, f"r{i}", variant)
    n = 0
    for month, purchases, rewards in MONTHS:
        day = datetime.fromisoformat(f"{month}-10T12:00").replace(tzinfo=UTC)
        for k in range(max(purchases, rewards)):
            n += 1
            referrer = f"r{(n * 2) % 12}" if n % 3 else f"r{(n * 2 + 1) % 12}"
            cid = await conn.fetchval(
                """INSERT INTO conversions (program_id, event_id, type, customer_id, amount,
                       currency, occurred_at, body_hash, attributed_at)
                   VALUES ($1, $2, 'purchase', $3, $4, 'USD', $5, '\\x00', now())
                   RETURNING id""",
                pid, f"o{n}", f"c{n}", 10000 if k < purchases else None,
                day + timedelta(hours=k))
            await conn.execute(
                "INSERT INTO credits (program_id, conversion_id, referrer_id, model, credit) "
                "VALUES ($1, $2, $3, 'last_touch', 1)", pid, cid, refs[referrer])
            if k < rewards:
                await conn.execute(
                    """INSERT INTO rewards (program_id, conversion_id, rule_index, referrer_id,
                           beneficiary, payee, amount, currency, credit, status, hold_until,
                           variant)
                       SELECT $1, $2, 0, $3, 'referrer', $4, 2000, 'USD', 1, 'approved', now(),
                              variant FROM referrers WHERE id = $3""",
                    pid, cid, refs[referrer], referrer)
    cid = await conn.fetchval(
        """INSERT INTO conversions (program_id, event_id, type, customer_id, amount, currency,
               occurred_at, body_hash, attributed_at)
           VALUES ($1, 'e1', 'purchase', 'ce', 5000, 'EUR', '2026-04-12T10:00Z', '\\x00', now())
           RETURNING id""", pid)
    await conn.execute(
        "INSERT INTO credits (program_id, conversion_id, referrer_id, model, credit) "
        "VALUES ($1, $2, $3, 'last_touch', 1)", pid, cid, refs["r1"])
    for i in range(4):
        ask_id = await conn.fetchval(
            """INSERT INTO asks (program_id, customer_id, referrer_id, trigger_source,
                   trigger_id, trigger_type, occurred_at, deadline, status, sent_at)
               VALUES ($1, $2, $3, 'event', $4, 'purchase', '2026-01-02T10:00Z',
                       '2026-01-03T10:00Z', 'sent', '2026-01-02T10:00Z') RETURNING id""",
            pid, f"r{i}", refs[f"r{i}"], i + 1)
        if i < 3:
            await conn.execute(
                """INSERT INTO shares (program_id, referrer_id, channel, ask_id, occurred_at,
                       source) VALUES ($1, $2, 'email', $3, '2026-01-03T10:00Z', 'page')""",
                pid, refs[f"r{i}"], ask_id)
    link = await conn.fetchval(
        """INSERT INTO links (program_id, referrer_id, code, destination, channel)
           VALUES ($1, $2, $3, 'https://acme.test/', 'email') RETURNING id""",
        pid, refs["r0"], f"{slug}-r0")
    await conn.execute("SELECT refguard_ensure_click_partition('2026-01-05T00:00:00Z')")
    monday = datetime(2026, 1, 5, tzinfo=UTC)
    v = 0
    for weekday, hour, count in CLICKS:
        for _ in range(count):
            v += 1
            await conn.execute(
                """INSERT INTO clicks (program_id, click_id, ts, link_id, referrer_id, code,
                       visitor_id, is_bot, is_duplicate)
                   VALUES ($1, $2, $3, $4, $5, $6, $7, false, false)""",
                pid, uuid.uuid4(), monday + timedelta(days=weekday - 1, hours=hour, minutes=v),
                link, refs["r0"], f"{slug}-r0", f"v{v}")
    return pid
