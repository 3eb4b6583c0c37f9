"""SQL of programs, referrers and links: async functions taking `conn` first, returning frozen
dataclasses. (Clicks have theirs in tracker.clicks.queries, conversions in tracker.intake.queries.)
"""

from __future__ import annotations

import json
import secrets
import string
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

import asyncpg

from tracker.errors import Conflict, NotFound
from tracker.programs.validation import default_destination
from tracker.programs.variants import Variant, assign, variants_of


@dataclass(frozen=True, slots=True)
class Program:
    id: int
    slug: str
    name: str
    destination_domains: list[str]
    settings: dict[str, Any]
    created_at: datetime
    # The signing secret is HMAC(server key, seed): tracker.programs.signing_secrets.
    signing_seed: str
    previous_signing_seed: str | None  # still accepted until previous_signing_until
    previous_signing_until: datetime | None


@dataclass(frozen=True, slots=True)
class Referrer:
    id: int
    program_id: int
    program: str
    external_id: str
    has_email: bool
    created_at: datetime
    name: str | None = None  # display name, at most NAME_MAX printable characters
    variant: str | None = None  # reward variant (tracker.programs.variants), once assigned
    kind: str = "non_buyer"  # referrer_kind(): customer or non_buyer
    kind_set: bool = False  # the merchant set `kind` (else derived from the data)


@dataclass(frozen=True, slots=True)
class Names:
    """Display names by external id (one id space: a referrer's external_id is its customer
    id). Each side prefers its own source and falls back to the other: a referrer's own name,
    else the latest name its conversions carried; a customer's latest conversion name, else
    its name as a referrer. Ids without a name are absent."""

    referrers: dict[str, str]
    customers: dict[str, str]


NAME_MAX = 200


@dataclass(frozen=True, slots=True)
class Link:
    id: int
    program_id: int
    program: str
    referrer_id: int
    referrer: str
    code: str
    destination: str
    enabled: bool
    created_at: datetime
    channel: str | None = None  # the channel it is shared on (formats.CHANNEL_RE)
    campaign: str | None = None


def _program(row: asyncpg.Record) -> Program:
    settings = row["settings"]
    return Program(
        id=row["id"],
        slug=row["slug"],
        name=row["name"],
        destination_domains=list(row["destination_domains"]),
        settings=json.loads(settings) if isinstance(settings, str) else dict(settings),
        created_at=row["created_at"],
        signing_seed=row["signing_seed"],
        previous_signing_seed=row["previous_signing_seed"],
        previous_signing_until=row["previous_signing_until"],
    )


# -- programs ----------------------------------------------------------------------------------

_PROGRAM_COLS = """id, slug, name, destination_domains, settings::text AS settings, created_at,
                   signing_seed, previous_signing_seed, previous_signing_until"""


async def create_program(
    conn: asyncpg.Connection, slug: str, name: str, domains: list[str], settings: dict[str, Any],
    *, signing_seed: str,
) -> Program:
    try:
        row = await conn.fetchrow(
            f"""INSERT INTO programs (slug, name, destination_domains, settings, signing_seed)
                VALUES ($1, $2, $3, $4::jsonb, $5) RETURNING {_PROGRAM_COLS}""",
            slug, name, domains, json.dumps(settings), signing_seed,
        )
    except asyncpg.UniqueViolationError:
        raise Conflict(f"a program with slug {slug!r} exists") from None
    assert row is not None  # noqa: S101 (INSERT ... RETURNING returns the row)
    return _program(row)


async def update_program(
    conn: asyncpg.Connection, program_id: int, name: str, domains: list[str],
    settings: dict[str, Any],
) -> Program:
    row = await conn.fetchrow(
        f"""UPDATE programs SET name = $2, destination_domains = $3, settings = $4::jsonb,
                   updated_at = now()
            WHERE id = $1 RETURNING {_PROGRAM_COLS}""",
        program_id, name, domains, json.dumps(settings),
    )
    if row is None:
        raise NotFound("program")
    return _program(row)


async def get_program(conn: asyncpg.Connection, slug: str, *,
                      lock: Literal["update", "key share"] | None = None) -> Program:
    """The program; `lock` takes that row lock until the transaction ends: a change of its
    domains ("update") and the links checked against them ("key share", as their foreign key
    takes anyway) serialise on it."""
    clause = {None: "", "update": " FOR UPDATE", "key share": " FOR KEY SHARE"}[lock]
    row = await conn.fetchrow(
        f"SELECT {_PROGRAM_COLS} FROM programs WHERE slug = $1{clause}", slug)
    if row is None:
        raise NotFound("program")
    return _program(row)


async def rotate_signing_seed(conn: asyncpg.Connection, program_id: int, seed: str,
                              overlap_s: float) -> Program:
    """Make `seed` the program's signing seed; the one it replaces stays accepted for
    `overlap_s` seconds (one that an earlier rotation kept is dropped at once)."""
    row = await conn.fetchrow(
        f"""UPDATE programs
               SET previous_signing_seed = CASE WHEN $3::float8 > 0 THEN signing_seed END,
                   previous_signing_until = CASE WHEN $3::float8 > 0
                                                 THEN now() + make_interval(secs => $3) END,
                   signing_seed = $2, updated_at = now()
             WHERE id = $1 RETURNING {_PROGRAM_COLS}""",
        program_id, seed, overlap_s,
    )
    if row is None:
        raise NotFound("program")
    return _program(row)


async def current_signing_seeds(conn: asyncpg.Connection,
                                program_ids: list[int]) -> dict[int, str]:
    """Each program's current signing seed (what outgoing webhooks are signed with)."""
    rows = await conn.fetch("SELECT id, signing_seed FROM programs WHERE id = ANY($1::bigint[])",
                            program_ids)
    return {r["id"]: r["signing_seed"] for r in rows}


async def list_programs(conn: asyncpg.Connection, after_id: int, limit: int) -> list[Program]:
    rows = await conn.fetch(
        f"SELECT {_PROGRAM_COLS} FROM programs WHERE id > $1 ORDER BY id LIMIT $2",
        after_id, limit,
    )
    return [_program(r) for r in rows]


# -- referrers ---------------------------------------------------------------------------------

REFERRER_KINDS = ("customer", "non_buyer")


def referrer_kind(alias: str = "r") -> str:
    """SQL of the advocate kind of the referrer row `alias`: the one the merchant set, else
    `customer` when it has a purchase or renewal of its own (its external id is a customer id
    of the program: DESIGN section 5), else `non_buyer`. One definition for every report."""
    return f"""coalesce({alias}.kind, CASE WHEN EXISTS (
        SELECT 1 FROM conversions own WHERE own.program_id = {alias}.program_id
          AND own.customer_id = {alias}.external_id AND own.type IN ('purchase', 'renewal'))
        THEN 'customer' ELSE 'non_buyer' END)"""


_REFERRER_SELECT = f"""
SELECT r.id, r.program_id, p.slug AS program, r.external_id, r.email_hash IS NOT NULL AS has_email,
       r.created_at, r.name, r.variant, {referrer_kind()} AS kind, r.kind IS NOT NULL AS kind_set
FROM referrers r JOIN programs p ON p.id = r.program_id
"""


def _referrer(row: asyncpg.Record) -> Referrer:
    return Referrer(
        id=row["id"], program_id=row["program_id"], program=row["program"],
        external_id=row["external_id"], has_email=row["has_email"], created_at=row["created_at"],
        name=row["name"], variant=row["variant"], kind=row["kind"], kind_set=row["kind_set"],
    )


async def upsert_referrer(
    conn: asyncpg.Connection, program: Program, external_id: str, email_hash: bytes | None,
    name: str | None = None, *, kind: str | None = None,
) -> tuple[Referrer, bool]:
    """The referrer and whether it was created now. An email, a name or a kind given later is
    added (one given later replaces the earlier one; one left out keeps it). Under a program
    with reward variants a new referrer is assigned its variant now (and one that has none
    yet, made before the experiment began, too); an assigned variant never changes."""
    variant = assign(program.id, external_id, variants_of(program.settings))
    row = await conn.fetchrow(
        """INSERT INTO referrers (program_id, external_id, email_hash, name, kind, variant)
           VALUES ($1, $2, $3, $4, $5, $6)
           ON CONFLICT (program_id, external_id) DO NOTHING RETURNING id""",
        program.id, external_id, email_hash, name, kind, variant,
    )
    if row is None and variant is not None:
        await conn.execute(
            """UPDATE referrers SET variant = $3
               WHERE program_id = $1 AND external_id = $2 AND variant IS NULL""",
            program.id, external_id, variant)
    created = row is not None
    if not created and (email_hash is not None or name is not None or kind is not None):
        await conn.execute(
            """UPDATE referrers SET email_hash = coalesce($3, email_hash),
                                    name = coalesce($4, name), kind = coalesce($5, kind)
               WHERE program_id = $1 AND external_id = $2
                 AND (email_hash IS DISTINCT FROM coalesce($3, email_hash)
                      OR name IS DISTINCT FROM coalesce($4, name)
                      OR kind IS DISTINCT FROM coalesce($5, kind))""",
            program.id, external_id, email_hash, name, kind,
        )
    return await get_referrer(conn, program.id, external_id), created


async def assign_variants(conn: asyncpg.Connection, program_id: int,
                          variants: list[Variant]) -> int:
    """Record a variant on every referrer of the program that has none yet (made before the
    experiment began, or by a path that did not assign one); the number assigned."""
    if not variants:
        return 0
    rows = await conn.fetch(
        "SELECT id, external_id FROM referrers WHERE program_id = $1 AND variant IS NULL",
        program_id)
    if not rows:
        return 0
    ids = [r["id"] for r in rows]
    names = [assign(program_id, r["external_id"], variants) for r in rows]
    done = await conn.execute(
        """UPDATE referrers r SET variant = n.variant
           FROM unnest($2::bigint[], $3::text[]) AS n(id, variant)
           WHERE r.program_id = $1 AND r.id = n.id AND r.variant IS NULL""",
        program_id, ids, names)
    return int(done.split()[-1])


async def get_referrer(conn: asyncpg.Connection, program_id: int, external_id: str) -> Referrer:
    row = await conn.fetchrow(
        _REFERRER_SELECT + " WHERE r.program_id = $1 AND r.external_id = $2",
        program_id, external_id,
    )
    if row is None:
        raise NotFound("referrer")
    return _referrer(row)


async def list_referrers(
    conn: asyncpg.Connection, program_id: int, after_id: int, limit: int
) -> list[Referrer]:
    rows = await conn.fetch(
        _REFERRER_SELECT + " WHERE r.program_id = $1 AND r.id > $2 ORDER BY r.id LIMIT $3",
        program_id, after_id, limit,
    )
    return [_referrer(r) for r in rows]


async def names(conn: asyncpg.Connection | asyncpg.Pool, program_id: int,
                referrer_ids: Iterable[str], customer_ids: Iterable[str]) -> Names:
    """The display names of these referrers and customers of a program, by external id (see
    `Names`): for answers that list people, such as rewards."""
    referrers = sorted(set(referrer_ids))
    customers = sorted(set(customer_ids))
    rows = await conn.fetch(
        """WITH ids AS (SELECT unnest($2::text[] || $3::text[]) AS id)
           SELECT DISTINCT i.id, f.name AS referrer_name, n.name AS customer_name
           FROM ids i
           LEFT JOIN referrers f ON f.program_id = $1 AND f.external_id = i.id
           LEFT JOIN customer_names n ON n.program_id = $1 AND n.customer_id = i.id
           WHERE f.name IS NOT NULL OR n.name IS NOT NULL""",
        program_id, referrers, customers,
    )
    own = {r["id"]: (r["referrer_name"], r["customer_name"]) for r in rows}
    wanted_r, wanted_c = set(referrers), set(customers)
    return Names(
        referrers={i: as_ref or as_cust for i, (as_ref, as_cust) in own.items()
                   if i in wanted_r},
        customers={i: as_cust or as_ref for i, (as_ref, as_cust) in own.items()
                   if i in wanted_c},
    )


async def reward_names(conn: asyncpg.Connection | asyncpg.Pool, reward_ids: list[int]
                       ) -> dict[int, tuple[str | None, str | None]]:
    """Each reward's (referrer_name, customer_name): its referrer's display name and its
    conversion's customer's, by the rules of `names` (None where there is none). For the
    rewards list (GET /api/v1/rewards), which may span programs."""
    rows = await conn.fetch(
        """SELECT w.id,
                  coalesce(f.name, fn.name) AS referrer_name,
                  coalesce(cn.name, cf.name) AS customer_name
           FROM rewards w
           JOIN referrers f ON f.program_id = w.program_id AND f.id = w.referrer_id
           JOIN conversions c ON c.program_id = w.program_id AND c.id = w.conversion_id
           LEFT JOIN customer_names fn
             ON fn.program_id = w.program_id AND fn.customer_id = f.external_id
           LEFT JOIN customer_names cn
             ON cn.program_id = w.program_id AND cn.customer_id = c.customer_id
           LEFT JOIN referrers cf
             ON cf.program_id = w.program_id AND cf.external_id = c.customer_id
           WHERE w.id = ANY($1::bigint[])""",
        reward_ids,
    )
    return {r["id"]: (r["referrer_name"], r["customer_name"]) for r in rows}


# -- links -------------------------------------------------------------------------------------

_LINK_SELECT = """
SELECT l.id, l.program_id, p.slug AS program, l.referrer_id, r.external_id AS referrer, l.code,
       l.destination, l.enabled, l.created_at, l.channel, l.campaign
FROM links l
JOIN programs p ON p.id = l.program_id
JOIN referrers r ON r.program_id = l.program_id AND r.id = l.referrer_id
"""


def _link(row: asyncpg.Record) -> Link:
    return Link(
        id=row["id"], program_id=row["program_id"], program=row["program"],
        referrer_id=row["referrer_id"], referrer=row["referrer"], code=row["code"],
        destination=row["destination"], enabled=row["enabled"], created_at=row["created_at"],
        channel=row["channel"], campaign=row["campaign"],
    )


_CODE_ALPHABET = string.ascii_letters + string.digits


def new_code() -> str:
    """A random link code (8 letters and digits: 47 bits) for a link made without one."""
    return "".join(secrets.choice(_CODE_ALPHABET) for _ in range(8))


async def create_link(
    conn: asyncpg.Connection, program_id: int, referrer_id: int, code: str, destination: str,
    *, channel: str | None = None, campaign: str | None = None,
) -> Link:
    try:
        await conn.execute(
            """INSERT INTO links (program_id, referrer_id, code, destination, channel, campaign)
               VALUES ($1, $2, $3, $4, $5, $6)""",
            program_id, referrer_id, code, destination, channel, campaign,
        )
    except asyncpg.UniqueViolationError:
        raise Conflict(f"the code {code!r} is taken") from None
    return await get_link(conn, code)


async def get_link(conn: asyncpg.Connection, code: str) -> Link:
    row = await conn.fetchrow(_LINK_SELECT + " WHERE l.code = $1", code)
    if row is None:
        raise NotFound("link")
    return _link(row)


async def update_link(
    conn: asyncpg.Connection, code: str, *, enabled: bool | None, destination: str | None
) -> Link:
    status = await conn.execute(
        """UPDATE links SET enabled = coalesce($2, enabled),
                            destination = coalesce($3, destination), updated_at = now()
           WHERE code = $1""",
        code, enabled, destination,
    )
    if status == "UPDATE 0":
        raise NotFound("link")
    return await get_link(conn, code)


async def enabled_link_destinations(conn: asyncpg.Connection,
                                    program_id: int) -> list[tuple[str, int]]:
    """(destination, how many enabled links go there) for a program."""
    rows = await conn.fetch(
        """SELECT destination, count(*) AS n FROM links WHERE program_id = $1 AND enabled
           GROUP BY destination""", program_id)
    return [(r["destination"], int(r["n"])) for r in rows]


async def list_links(
    conn: asyncpg.Connection, program_id: int, referrer_id: int | None, after_id: int, limit: int
) -> list[Link]:
    rows = await conn.fetch(
        _LINK_SELECT
        + """ WHERE l.program_id = $1 AND ($2::bigint IS NULL OR l.referrer_id = $2)
              AND l.id > $3 ORDER BY l.id LIMIT $4""",
        program_id, referrer_id, after_id, limit,
    )
    return [_link(r) for r in rows]


async def referrer_link(conn: asyncpg.Connection, program_id: int, referrer_id: int,
                        channel: str | None, *, enabled_only: bool = False) -> Link | None:
    """The referrer's earliest link on `channel` (None: its untagged link), or its earliest
    enabled one with `enabled_only`; None when it has none."""
    row = await conn.fetchrow(
        _LINK_SELECT
        + """ WHERE l.program_id = $1 AND l.referrer_id = $2
                AND l.channel IS NOT DISTINCT FROM $3 AND (l.enabled OR NOT $4)
              ORDER BY l.id LIMIT 1""",
        program_id, referrer_id, channel, enabled_only,
    )
    return None if row is None else _link(row)


async def add_link(conn: asyncpg.Connection, program_id: int, referrer_id: int,
                   destination: str, *, channel: str | None = None) -> Link:
    """A new link under a freshly drawn code (drawn again while taken; no savepoint needed, so
    it runs inside the caller's transaction)."""
    for _ in range(8):
        code = new_code()
        made = await conn.fetchval(
            """INSERT INTO links (program_id, referrer_id, code, destination, channel)
               VALUES ($1, $2, $3, $4, $5) ON CONFLICT (code) DO NOTHING RETURNING id""",
            program_id, referrer_id, code, destination, channel)
        if made is not None:
            return await get_link(conn, code)
    raise Conflict("no free link code after 8 draws")


async def ensure_plain_link(conn: asyncpg.Connection, program: Program,
                            referrer_id: int) -> Link:
    """The referrer's earliest enabled untagged link, made now to the program's default
    destination when it has none."""
    link = await referrer_link(conn, program.id, referrer_id, None, enabled_only=True)
    if link is not None:
        return link
    destination = default_destination(program.destination_domains, program.settings)
    return await add_link(conn, program.id, referrer_id, destination)

