"""Data retention and the right to erasure.

- `reduce_old`: clicks and conversions older than the retention age keep their IP only as its
  network (IPv4 /24, IPv6 /48) and their user agent only as the parsed family ("Chrome /
  Windows"); fingerprints (keyed hashes), geo, flags and everything fraud and attribution use
  stay. Fraud flags older than that name their IP members by network too. Runs as a job, in
  batches, so no long lock is held on the click partitions. Once reduced, an IP no longer
  binds people in fraud scans (a whole /24 would seem to be one address); devices still do.
- `erase_customer`: a customer's personal data goes (email hash, IPs, user agents, referers,
  languages, browser signals, the link between their visitors and their id); amounts,
  rewards and the ledger stay, because the books must still add up. The audit log records the
  erasure with counts.
"""

from __future__ import annotations

from dataclasses import dataclass

import asyncpg

from tracker import audit

BATCH = 10_000
# An address reduced to its network; the family of a user agent.
_NETWORK = ("network(set_masklen({ip}, CASE WHEN family({ip}) = 4 THEN 24 ELSE 48 END))"
            "::inet")
_FAMILY = ("nullif(concat_ws(' / ', {browser}, {os}), '')")


async def reduce_old(conn: asyncpg.Connection, days: int) -> int:
    """Reduce one batch of rows older than `days`; how many rows were reduced."""
    clicks = await conn.fetchval(
        f"""WITH batch AS (
                SELECT program_id, ts, click_id FROM clicks
                WHERE NOT reduced AND ts < now() - make_interval(days => $1)
                LIMIT $2),
            done AS (
                UPDATE clicks c SET reduced = true, ip = {_NETWORK.format(ip='c.ip')},
                       user_agent = {_FAMILY.format(browser='c.ua_browser', os='c.ua_os')},
                       referer = NULL
                FROM batch b
                WHERE c.program_id = b.program_id AND c.ts = b.ts AND c.click_id = b.click_id
                RETURNING 1)
            SELECT count(*) FROM done""", days, BATCH)
    conversions = await conn.fetchval(
        f"""WITH done AS (
                UPDATE conversions SET reduced = true, ip = {_NETWORK.format(ip='ip')},
                       user_agent = NULL
                WHERE (program_id, id) IN (
                    SELECT program_id, id FROM conversions
                    WHERE NOT reduced AND occurred_at < now() - make_interval(days => $1)
                    LIMIT $2)
                RETURNING 1)
            SELECT count(*) FROM done""", days, BATCH)
    flags = await conn.fetchval(
        f"""WITH done AS (
                UPDATE fraud_flags f SET reduced = true, members = (
                    SELECT coalesce(jsonb_agg(
                               CASE WHEN m->>'type' = 'ip' AND m->>'id' IS NOT NULL
                                         AND m->>'id' !~ '/'
                                    THEN jsonb_set(m, '{{id}}', to_jsonb(text(
                                        {_NETWORK.format(ip="(m->>'id')::inet")})))
                                    ELSE m END ORDER BY n), '[]'::jsonb)
                    FROM jsonb_array_elements(f.members) WITH ORDINALITY AS e(m, n))
                WHERE (f.program_id, f.id) IN (
                    SELECT program_id, id FROM fraud_flags
                    WHERE NOT reduced AND created_at < now() - make_interval(days => $1)
                    LIMIT $2)
                RETURNING 1)
            SELECT count(*) FROM done""", days, BATCH)
    return int(clicks) + int(conversions) + int(flags)


@dataclass(frozen=True, slots=True)
class Erased:
    conversions: int
    visitors: int
    clicks: int
    referrer: bool

    @property
    def found(self) -> bool:
        return bool(self.conversions or self.visitors or self.clicks or self.referrer)


async def erase_customer(conn: asyncpg.Connection, program_id: int, customer_id: str,
                         actor: str) -> Erased:
    async with conn.transaction():
        visitors = [r["visitor_id"] for r in await conn.fetch(
            """DELETE FROM customer_visitors WHERE program_id = $1 AND customer_id = $2
               RETURNING visitor_id""", program_id, customer_id)]
        conv_visitors = [r["visitor_id"] for r in await conn.fetch(
            """SELECT DISTINCT visitor_id FROM conversions
               WHERE program_id = $1 AND customer_id = $2 AND visitor_id IS NOT NULL""",
            program_id, customer_id)]
        everyone = sorted(set(visitors) | set(conv_visitors))
        clicks = await conn.fetchval(
            """WITH done AS (
                   UPDATE clicks SET ip = NULL, user_agent = NULL, referer = NULL,
                          accept_language = NULL, client_hints = NULL,
                          browser_signals = NULL, visitor_id = NULL, query = NULL
                   WHERE program_id = $1 AND visitor_id = ANY($2::text[]) RETURNING 1)
               SELECT count(*) FROM done""", program_id, everyone)
        conversions = await conn.fetchval(
            """WITH done AS (
                   UPDATE conversions SET email_hash = NULL, ip = NULL, user_agent = NULL,
                          visitor_id = NULL
                   WHERE program_id = $1 AND customer_id = $2 RETURNING 1)
               SELECT count(*) FROM done""", program_id, customer_id)
        referrer = await conn.fetchval(
            """UPDATE referrers SET email_hash = NULL
               WHERE program_id = $1 AND external_id = $2 RETURNING true""",
            program_id, customer_id) or False
        erased = Erased(int(conversions), len(everyone), int(clicks), bool(referrer))
        if erased.found:
            await audit.record(conn, actor=actor, action="customer.erase", object_type="customer",
                        object_id=customer_id, program_id=program_id,
                        details={"conversions": erased.conversions, "visitors": erased.visitors,
                                 "clicks": erased.clicks, "referrer": erased.referrer})
    return erased
