"""SQL of the asks domain: returns frozen dataclasses.

The share page (tracker.asks.sharing) and the funnel report (tracker.asks.funnel).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import asyncpg

# -- share page ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ShareReferrer:
    program_id: int
    program: str  # slug
    program_name: str
    destination_domains: list[str]
    settings: dict[str, Any]
    referrer_id: int
    external_id: str
    name: str | None


@dataclass(frozen=True, slots=True)
class ChannelLink:
    id: int
    code: str
    destination: str
    enabled: bool
    channel: str | None


async def share_referrer(conn: asyncpg.Connection, program_id: int, referrer_id: int
                         ) -> ShareReferrer | None:
    row = await conn.fetchrow(
        """SELECT p.id AS program_id, p.slug, p.name AS program_name, p.destination_domains,
                  p.settings::text AS settings, r.id AS referrer_id, r.external_id, r.name
           FROM referrers r JOIN programs p ON p.id = r.program_id
           WHERE r.program_id = $1 AND r.id = $2""", program_id, referrer_id)
    if row is None:
        return None
    return ShareReferrer(row["program_id"], row["slug"], row["program_name"],
                         list(row["destination_domains"]), json.loads(row["settings"]),
                         row["referrer_id"], row["external_id"], row["name"])


async def lock_referrer(conn: asyncpg.Connection, program_id: int, referrer_id: int) -> None:
    """Serialises the share page's writes for one referrer (its channel links, its shares'
    rate limit) until the transaction ends; foreign-key checks (KEY SHARE) are not blocked."""
    await conn.execute("SELECT 1 FROM referrers WHERE program_id = $1 AND id = $2 "
                       "FOR NO KEY UPDATE", program_id, referrer_id)


async def first_link(conn: asyncpg.Connection, program_id: int, referrer_id: int,
                     channel: str | None) -> ChannelLink | None:
    """The referrer's earliest link on `channel` (None: its untagged link)."""
    row = await conn.fetchrow(
        """SELECT id, code, destination, enabled, channel FROM links
           WHERE program_id = $1 AND referrer_id = $2 AND channel IS NOT DISTINCT FROM $3
           ORDER BY id LIMIT 1""", program_id, referrer_id, channel)
    return None if row is None else ChannelLink(row["id"], row["code"], row["destination"],
                                                row["enabled"], row["channel"])


async def insert_link(conn: asyncpg.Connection, program_id: int, referrer_id: int, code: str,
                      *, destination: str, channel: str | None) -> ChannelLink | None:
    """A new link, or None when the code is taken (the caller draws another)."""
    row = await conn.fetchrow(
        """INSERT INTO links (program_id, referrer_id, code, destination, channel)
           VALUES ($1, $2, $3, $4, $5) ON CONFLICT (code) DO NOTHING
           RETURNING id, code, destination, enabled, channel""",
        program_id, referrer_id, code, destination, channel)
    return None if row is None else ChannelLink(row["id"], row["code"], row["destination"],
                                                row["enabled"], row["channel"])


async def ask_of_referrer(conn: asyncpg.Connection, program_id: int, ask_id: int,
                          referrer_id: int) -> bool:
    found: bool = await conn.fetchval(
        "SELECT EXISTS (SELECT 1 FROM asks WHERE program_id = $1 AND id = $2 "
        "AND referrer_id = $3)", program_id, ask_id, referrer_id)
    return found


async def page_shared_within(conn: asyncpg.Connection, program_id: int, referrer_id: int,
                             channel: str, seconds: float) -> bool:
    """Whether the share page recorded a share of the referrer on the channel in the last
    `seconds` (by the database's clock)."""
    found: bool = await conn.fetchval(
        """SELECT EXISTS (SELECT 1 FROM shares WHERE program_id = $1 AND referrer_id = $2
                            AND channel = $3 AND source = 'page'
                            AND created_at > now() - make_interval(secs => $4))""",
        program_id, referrer_id, channel, seconds)
    return found


# seam: gev's tracker.asks.shares.record_share is the one function that records a share; until
# it is merged this stand-in inserts the same row (the lead deletes it and points
# tracker.asks.sharing at gev's).
async def record_share(  # noqa: PLR0917 (gev's signature, which this stands in for)
        conn: asyncpg.Connection, program_id: int, referrer_id: int,
                       channel: str, occurred_at: datetime, source: str,
                       ask_id: int | None) -> int:
    share_id: int = await conn.fetchval(
        """INSERT INTO shares (program_id, referrer_id, channel, ask_id, occurred_at, source)
           VALUES ($1, $2, $3, $4, $5, $6) RETURNING id""",
        program_id, referrer_id, channel, ask_id, occurred_at, source)
    return share_id


# -- funnel ----------------------------------------------------------------------------------
# Each stage's rows carry the referrer (external id; an ask names its customer, the same id),
# the channel and the trigger they fall under, a weight (1, or a conversion's credit) and the
# visitor; the report groups them by one of those (or none: the total) in SQL, so that unique
# visitors are counted distinct within each group. $1 program, $2 since, $3 until (either may be
# NULL: open).

FUNNEL_GROUPS = {"referrer": "x.referrer", "channel": "x.channel", "trigger": "x.trigger",
                 "total": "NULL::text"}


def _in_range(column: str) -> str:
    return (f"($2::timestamptz IS NULL OR {column} >= $2) "
            f"AND ($3::timestamptz IS NULL OR {column} < $3)")


def _trigger(referrer_id: str, at: str) -> str:
    """The trigger type of the referrer's latest ask sent at or before `at`."""
    return f"""(SELECT a.trigger_type FROM asks a
               WHERE a.program_id = $1 AND a.referrer_id = {referrer_id} AND a.sent_at <= {at}
               ORDER BY a.sent_at DESC, a.id DESC LIMIT 1)"""


def _conversion_channel(conversion_id: str, referrer_id: str) -> str:
    """The channel of the link of the referrer's last click among a conversion's
    touchpoints."""
    return f"""(SELECT l.channel FROM touchpoints t
               JOIN clicks k ON k.program_id = t.program_id AND k.ts = t.ts
                            AND k.click_id = t.click_id
               JOIN links l ON l.program_id = k.program_id AND l.id = k.link_id
               WHERE t.program_id = $1 AND t.conversion_id = {conversion_id}
                 AND t.referrer_id = {referrer_id}
               ORDER BY t.position DESC LIMIT 1)"""


_CREDITED = f"""
SELECT r.external_id AS referrer, {_conversion_channel("v.id", "cr.referrer_id")} AS channel,
       {_trigger("cr.referrer_id", "v.occurred_at")} AS trigger,
       cr.credit::float8 AS weight, NULL::text AS visitor
FROM credits cr
JOIN conversions v ON v.program_id = cr.program_id AND v.id = cr.conversion_id
JOIN referrers r ON r.program_id = cr.program_id AND r.id = cr.referrer_id
WHERE cr.program_id = $1 AND v.type = $4 AND {_in_range("v.occurred_at")}"""

FUNNEL_STAGES = {
    # Asks handed to the merchant's messaging (sent), by the time they were sent.
    "asked": f"""
SELECT a.customer_id AS referrer, NULL::text AS channel, a.trigger_type AS trigger,
       1::float8 AS weight, NULL::text AS visitor
FROM asks a
WHERE a.program_id = $1 AND a.sent_at IS NOT NULL AND {_in_range("a.sent_at")}""",
    # Shares, by when they were made; the trigger is the share's ask, else the referrer's
    # latest ask before it.
    "shared": f"""
SELECT r.external_id AS referrer, s.channel,
       coalesce((SELECT a.trigger_type FROM asks a
                 WHERE a.program_id = s.program_id AND a.id = s.ask_id),
                {_trigger("s.referrer_id", "s.occurred_at")}) AS trigger,
       1::float8 AS weight, NULL::text AS visitor
FROM shares s JOIN referrers r ON r.program_id = s.program_id AND r.id = s.referrer_id
WHERE s.program_id = $1 AND {_in_range("s.occurred_at")}""",
    # Clicks that count (not bots, not duplicates), under their link's channel.
    "clicks": f"""
SELECT r.external_id AS referrer, l.channel,
       {_trigger("c.referrer_id", "c.ts")} AS trigger, 1::float8 AS weight,
       c.visitor_id AS visitor
FROM clicks c
JOIN links l ON l.program_id = c.program_id AND l.id = c.link_id
JOIN referrers r ON r.program_id = c.program_id AND r.id = c.referrer_id
WHERE c.program_id = $1 AND NOT c.is_bot AND NOT c.is_duplicate AND {_in_range("c.ts")}""",
    "signups": _CREDITED,
    "trials": _CREDITED,
    "purchases": _CREDITED,
    "renewals": _CREDITED,
    # A referred customer's first purchase (by its credit), when the customer bought or renewed
    # again 90 days or more after it; by the first purchase's time.
    "retained_90d": f"""
SELECT r.external_id AS referrer, {_conversion_channel("v.id", "cr.referrer_id")} AS channel,
       {_trigger("cr.referrer_id", "v.occurred_at")} AS trigger,
       cr.credit::float8 AS weight, NULL::text AS visitor
FROM credits cr
JOIN conversions v ON v.program_id = cr.program_id AND v.id = cr.conversion_id
JOIN referrers r ON r.program_id = cr.program_id AND r.id = cr.referrer_id
WHERE cr.program_id = $1 AND v.type = 'purchase' AND {_in_range("v.occurred_at")}
  AND NOT EXISTS (SELECT 1 FROM conversions e
                  WHERE e.program_id = v.program_id AND e.customer_id = v.customer_id
                    AND e.type = 'purchase'
                    AND (e.occurred_at, e.id) < (v.occurred_at, v.id))
  AND EXISTS (SELECT 1 FROM conversions later
              WHERE later.program_id = v.program_id AND later.customer_id = v.customer_id
                AND later.type IN ('purchase', 'renewal')
                AND later.occurred_at >= v.occurred_at + interval '90 days')""",
    # Refunds and chargebacks of credited conversions, counted once per referrer credited, by
    # the refund's time, under the original's channel and trigger.
    "refunds": f"""
SELECT r.external_id AS referrer, {_conversion_channel("o.id", "cr.referrer_id")} AS channel,
       {_trigger("cr.referrer_id", "o.occurred_at")} AS trigger,
       1::float8 AS weight, NULL::text AS visitor
FROM conversions x
JOIN conversions o ON o.program_id = x.program_id AND o.event_id = x.original_event_id
JOIN credits cr ON cr.program_id = o.program_id AND cr.conversion_id = o.id
JOIN referrers r ON r.program_id = cr.program_id AND r.id = cr.referrer_id
WHERE x.program_id = $1 AND x.type IN ('refund', 'chargeback') AND {_in_range("x.occurred_at")}
""",
}
_CONVERSION_TYPE = {"signups": "signup", "trials": "trial", "purchases": "purchase",
                    "renewals": "renewal"}


@dataclass(frozen=True, slots=True)
class FunnelCount:
    key: str | None  # the group (None: no channel, no ask, or the total)
    n: float  # sum of weights
    visitors: int  # distinct visitors (clicks only)


async def funnel_stage(conn: asyncpg.Connection, stage: str, program_id: int, *,
                       since: datetime | None, until: datetime | None,
                       by: str) -> list[FunnelCount]:
    """One stage of the funnel, grouped by `by` (a key of FUNNEL_GROUPS)."""
    args: list[Any] = [program_id, since, until]
    if stage in _CONVERSION_TYPE:
        args.append(_CONVERSION_TYPE[stage])
    rows = await conn.fetch(
        f"""WITH x AS ({FUNNEL_STAGES[stage]})
            SELECT {FUNNEL_GROUPS[by]} AS key, sum(x.weight) AS n,
                   count(DISTINCT x.visitor) AS visitors
            FROM x GROUP BY 1""", *args)
    return [FunnelCount(r["key"], float(r["n"]), int(r["visitors"])) for r in rows]
