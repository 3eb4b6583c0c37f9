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
  erasure with counts. Erasure never lowers a stored risk, nor lets a reward it touches be
  approved without finance (issue 12): while a fraud decision resting on the person is open,
  the keyed e-mail hash and the visitor links stay (fraud prevention), and `finish_erasures`
  (run by clearance) removes them once every such reward is decided. The risk of each
  conversion touching the person is kept as a floor (`risk_floors`, enforced by a trigger on
  conversion_risk, migrations/0014_erasure_evidence.sql).
  The growth side's data about the person goes at once too (`_erase_growth`): their events
  (customer_events) and their referral-candidate score (candidate_scores) are deleted; their
  asks keep what the funnel counts (trigger type, times, status) but not the score they gave,
  a queued ask is suppressed (an erased person is not messaged), and a `referral.ask` webhook
  about them loses their name, message and score and, if not yet delivered, is never sent.
  Their shares hold nothing personal (a referrer id, a channel, a time) and stay, as their
  conversions do.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
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


# -- erasure -----------------------------------------------------------------------------------

ERASED_BEFORE_CLEARANCE = "erased_before_clearance"
# Kept while a fraud decision on the person is open: keyed or random, never plain identifiers.
KEPT_FOR_OPEN_DECISIONS = ("email_hash", "visitor_links")
COMPLETER = "system:privacy"

# The conversions a person's fraud decisions rest on: their own, and those credited to them as
# a referrer. $1 program id, $2 customer id (the referrer's external id: one id space).
_TOUCHING = """touching AS (
        SELECT id FROM conversions WHERE program_id = $1 AND customer_id = $2
        UNION
        SELECT cr.conversion_id FROM credits cr
        JOIN referrers f ON f.program_id = cr.program_id AND f.id = cr.referrer_id
        WHERE cr.program_id = $1 AND f.external_id = $2)"""


def erased_reason(roles: Sequence[str]) -> dict[str, object]:
    """The reason a reward touching an erased person waits for finance (`roles`: `referee`,
    `referrer`), in the shape of the fraud engine's reasons."""
    who = " and ".join(f"the {role}'s" for role in roles) or "a person's"
    return {"code": ERASED_BEFORE_CLEARANCE,
            "message": f"{who} personal data was erased before this reward cleared: the risk "
                       "it had then is kept as a floor, but the evidence is incomplete, so "
                       "finance decides instead of an automatic approval",
            "value": list(roles), "threshold": "no erasure before clearance", "weight": 0.0}


@dataclass(frozen=True, slots=True)
class Erased:
    conversions: int
    visitors: int
    clicks: int
    referrer: bool
    # Rewards still undecided (pending, flagged) and conversions not yet through reward
    # creation that rest on this person: while any is open, KEPT_FOR_OPEN_DECISIONS stay.
    open_decisions: int = 0
    events: int = 0  # customer_events deleted
    candidate_scores: int = 0  # 0 or 1: the score deleted
    asks: int = 0  # asks about the person, reduced

    @property
    def found(self) -> bool:
        return bool(self.conversions or self.visitors or self.clicks or self.referrer
                    or self.events or self.candidate_scores or self.asks)

    @property
    def kept(self) -> tuple[str, ...]:
        return KEPT_FOR_OPEN_DECISIONS if self.open_decisions else ()


async def erase_customer(conn: asyncpg.Connection, program_id: int, customer_id: str,
                         actor: str) -> Erased:
    """Erase a person's personal data in one transaction.

    Plain identifiers (IPs, user agents, referers, languages, client hints, browser signals,
    landing queries) go at once. The keyed e-mail hash and the visitor links (random cookie ids
    tying the person's clicks, and their keyed device fingerprints, to them) go at once too,
    unless a fraud decision resting on the person is still open: then they stay, for fraud
    prevention, until it is decided (`finish_erasures`). Either way the risk of every
    conversion touching the person is recorded as a floor no later scan goes under, and their
    undecided rewards name the erasure among their reasons (clearance never approves them by
    itself)."""
    async with conn.transaction():
        visitors = await _visitors(conn, program_id, customer_id)
        clicks = await _wipe_clicks(conn, program_id, visitors, unlink=False)
        conversions = await conn.fetchval(
            """WITH done AS (
                   UPDATE conversions SET ip = NULL, user_agent = NULL
                   WHERE program_id = $1 AND customer_id = $2 RETURNING 1)
               SELECT count(*) FROM done""", program_id, customer_id)
        # Display names are no fraud evidence: they go at once (as a customer, as a referrer).
        await conn.execute(
            """WITH gone AS (DELETE FROM customer_names WHERE program_id = $1
                             AND customer_id = $2)
               UPDATE referrers SET name = NULL WHERE program_id = $1 AND external_id = $2""",
            program_id, customer_id)
        referrer = await conn.fetchval(
            "SELECT true FROM referrers WHERE program_id = $1 AND external_id = $2",
            program_id, customer_id) or False
        growth = await _erase_growth(conn, program_id, customer_id)
        erased = Erased(int(conversions), len(visitors), int(clicks), bool(referrer),
                        await _open_decisions(conn, program_id, customer_id), *growth)
        if not erased.found:
            return erased
        await conn.execute(
            """INSERT INTO erasures (program_id, customer_id, actor) VALUES ($1, $2, $3)
               ON CONFLICT (program_id, customer_id) DO UPDATE SET erased_at = now(),
                   actor = excluded.actor, completed_at = NULL""",
            program_id, customer_id, actor)
        await _record_floors(conn, program_id, customer_id)
        await _name_erasure_in_rewards(conn, program_id, customer_id)
        if not erased.open_decisions:
            await _complete(conn, program_id, customer_id)
        await audit.record(conn, actor=actor, action="customer.erase", object_type="customer",
                           object_id=customer_id, program_id=program_id,
                           details={"conversions": erased.conversions,
                                    "visitors": erased.visitors, "clicks": erased.clicks,
                                    "referrer": erased.referrer, "events": erased.events,
                                    "candidate_scores": erased.candidate_scores,
                                    "asks": erased.asks,
                                    "open_decisions": erased.open_decisions,
                                    "kept": list(erased.kept)})
    return erased


ERASED_ASK = "customer_erased"


async def _erase_growth(conn: asyncpg.Connection, program_id: int,
                        customer_id: str) -> tuple[int, int, int]:
    """The person's events and candidate score go; their asks keep no score, a queued one is
    suppressed, and their `referral.ask` webhooks lose name, message and score (an undelivered
    one is never sent). (events, candidate scores, asks) counted."""
    row = await conn.fetchrow(
        """WITH events AS (
               DELETE FROM customer_events WHERE program_id = $1 AND customer_id = $2
               RETURNING 1),
           scores AS (
               DELETE FROM candidate_scores WHERE program_id = $1 AND customer_id = $2
               RETURNING 1),
           asks AS (
               UPDATE asks SET trigger_score = NULL,
                      status = CASE WHEN status = 'queued' THEN 'suppressed' ELSE status END,
                      reason = CASE WHEN status = 'queued' THEN $3 ELSE reason END
               WHERE program_id = $1 AND customer_id = $2 RETURNING 1),
           hooks AS (
               UPDATE webhook_outbox
               SET payload = payload #- '{ask,name}' #- '{ask,message}'
                                     #- '{ask,trigger,score}',
                   failed_at = CASE WHEN delivered_at IS NULL THEN coalesce(failed_at, now())
                                    ELSE failed_at END,
                   last_error = CASE WHEN delivered_at IS NULL AND failed_at IS NULL THEN $3
                                     ELSE last_error END
               WHERE program_id = $1 AND event = 'referral.ask'
                 AND payload->'ask'->>'customer_id' = $2
               RETURNING 1)
           SELECT (SELECT count(*) FROM events) AS events,
                  (SELECT count(*) FROM scores) AS scores,
                  (SELECT count(*) FROM asks) AS asks,
                  (SELECT count(*) FROM hooks) AS hooks""",
        program_id, customer_id, ERASED_ASK)
    assert row is not None  # noqa: S101 (SELECT of counts)
    return int(row["events"]), int(row["scores"]), int(row["asks"])


async def finish_erasures(conn: asyncpg.Connection, program_id: int) -> int:
    """Complete the program's erasures whose fraud decisions are all decided now: what was kept
    for them goes (the risk floors stay). How many were completed."""
    done = 0
    for row in await conn.fetch(
            """SELECT customer_id FROM erasures WHERE program_id = $1 AND completed_at IS NULL
               ORDER BY erased_at FOR UPDATE SKIP LOCKED""", program_id):
        customer_id = row["customer_id"]
        if await _open_decisions(conn, program_id, customer_id):
            continue
        # Scans since the erasure may have found more; the floor keeps the highest.
        await _record_floors(conn, program_id, customer_id)
        await _complete(conn, program_id, customer_id)
        await audit.record(conn, actor=COMPLETER, action="customer.erase.complete",
                           object_type="customer", object_id=customer_id,
                           program_id=program_id,
                           reason="every fraud decision resting on the customer is decided",
                           details={"removed": list(KEPT_FOR_OPEN_DECISIONS)})
        done += 1
    return done


async def _visitors(conn: asyncpg.Connection, program_id: int, customer_id: str) -> list[str]:
    """The visitors (rg_vid cookies) linked to the customer: by attribution or their
    conversions."""
    rows = await conn.fetch(
        """SELECT visitor_id FROM customer_visitors WHERE program_id = $1 AND customer_id = $2
           UNION
           SELECT visitor_id FROM conversions
           WHERE program_id = $1 AND customer_id = $2 AND visitor_id IS NOT NULL""",
        program_id, customer_id)
    return sorted(r["visitor_id"] for r in rows)


async def _wipe_clicks(conn: asyncpg.Connection, program_id: int, visitors: list[str], *,
                       unlink: bool) -> int:
    """The plain identifiers of these visitors' clicks go (and, `unlink`, their visitor ids);
    fingerprints (keyed hashes), geo and flags stay. How many clicks."""
    if not visitors:
        return 0
    n: int = await conn.fetchval(
        """WITH done AS (
               UPDATE clicks SET ip = NULL, user_agent = NULL, referer = NULL,
                      accept_language = NULL, client_hints = NULL, browser_signals = NULL,
                      query = NULL, visitor_id = CASE WHEN $3 THEN NULL ELSE visitor_id END
               WHERE program_id = $1 AND visitor_id = ANY($2::text[]) RETURNING 1)
           SELECT count(*) FROM done""", program_id, visitors, unlink)
    return n


async def _open_decisions(conn: asyncpg.Connection, program_id: int, customer_id: str) -> int:
    """Undecided rewards (pending, flagged) on conversions touching the person, plus those
    conversions that have not been through reward creation yet."""
    n: int = await conn.fetchval(
        f"""WITH {_TOUCHING}
            SELECT (SELECT count(*) FROM rewards
                    WHERE program_id = $1 AND conversion_id IN (SELECT id FROM touching)
                      AND status IN ('pending', 'flagged'))
                 + (SELECT count(*) FROM conversions
                    WHERE program_id = $1 AND id IN (SELECT id FROM touching)
                      AND rewarded_at IS NULL)""", program_id, customer_id)
    return n


async def _record_floors(conn: asyncpg.Connection, program_id: int, customer_id: str) -> None:
    """The current risk of each conversion touching the person becomes its floor (or raises
    it): a trigger on conversion_risk keeps every later score at or above it."""
    await conn.execute(
        f"""WITH {_TOUCHING}
            INSERT INTO risk_floors (program_id, conversion_id, score, reasons)
            SELECT program_id, conversion_id, score, reasons FROM conversion_risk
            WHERE program_id = $1 AND conversion_id IN (SELECT id FROM touching) AND score > 0
            ON CONFLICT (program_id, conversion_id) DO UPDATE
                SET score = excluded.score, reasons = excluded.reasons, recorded_at = now()
                WHERE excluded.score > risk_floors.score""", program_id, customer_id)


async def _name_erasure_in_rewards(conn: asyncpg.Connection, program_id: int,
                                   customer_id: str) -> None:
    """Undecided rewards touching the person carry the erasure among their reasons."""
    rows = await conn.fetch(
        f"""WITH {_TOUCHING}
            SELECT id FROM rewards
            WHERE program_id = $1 AND conversion_id IN (SELECT id FROM touching)
              AND status IN ('pending', 'flagged')""", program_id, customer_id)
    await name_erasures(conn, program_id, [r["id"] for r in rows])


async def name_erasures(conn: asyncpg.Connection, program_id: int, reward_ids: list[int]
                        ) -> list[int]:
    """These rewards, where an erased person touches them, carry an `erased_before_clearance`
    reason naming the roles erased (in place of an earlier one); the ids that do."""
    rows = await conn.fetch(
        """SELECT id, roles FROM (
               SELECT id, refguard_erased_roles(program_id, conversion_id) AS roles
               FROM rewards WHERE program_id = $1 AND id = ANY($2::bigint[])) r
           WHERE cardinality(roles) > 0 ORDER BY id""", program_id, reward_ids)
    await conn.executemany(
        """UPDATE rewards SET reasons = coalesce((
                   SELECT jsonb_agg(r ORDER BY n) FROM jsonb_array_elements(reasons)
                       WITH ORDINALITY AS e(r, n)
                   WHERE r->>'code' IS DISTINCT FROM $3), '[]'::jsonb) || $4::jsonb
           WHERE program_id = $1 AND id = $2""",
        [(program_id, r["id"], ERASED_BEFORE_CLEARANCE,
          json.dumps([erased_reason(r["roles"])])) for r in rows])
    return [r["id"] for r in rows]


async def _complete(conn: asyncpg.Connection, program_id: int, customer_id: str) -> None:
    """What was kept for open decisions goes: the e-mail hashes and the visitor links."""
    visitors = await _visitors(conn, program_id, customer_id)
    await _wipe_clicks(conn, program_id, visitors, unlink=True)
    await conn.execute(
        "DELETE FROM customer_visitors WHERE program_id = $1 AND customer_id = $2",
        program_id, customer_id)
    await conn.execute(
        """UPDATE conversions SET email_hash = NULL, visitor_id = NULL, ip = NULL,
                  user_agent = NULL WHERE program_id = $1 AND customer_id = $2""",
        program_id, customer_id)
    await conn.execute(
        "UPDATE referrers SET email_hash = NULL WHERE program_id = $1 AND external_id = $2",
        program_id, customer_id)
    await conn.execute(
        """UPDATE erasures SET completed_at = now()
           WHERE program_id = $1 AND customer_id = $2""", program_id, customer_id)
