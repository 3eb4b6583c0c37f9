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
