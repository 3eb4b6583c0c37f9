"""Attribution as a service: stitch identities, gather touchpoints, store credits.

Identity: a conversion reaches visitors through its `click_id` (that click's visitor), its
`visitor_id`, and every visitor an earlier conversion of the same customer reached
(`customer_visitors`). Touchpoints are those visitors' non-bot, non-duplicate clicks within the
program's window at or before `occurred_at`, plus a referral code typed by hand (a touch at the
conversion's own time). The credits of the program's model are stored (they sum to 1 per
conversion); refunds and chargebacks are marked seen and earn nothing.

A click id alone and the credit of later clicks (issue 12). A conversion's `click_id` names the
click the merchant saw land; it reaches that click's visitor, and the visitor's other clicks in
the window are touches too, later ones by other referrers included (a person who came through
alice and then bob's link before buying is bob's last touch). That is safe only because nobody
can add clicks to another person's visitor: the redirect's visitor cookie is signed, its id
random and never in a URL, and a forged cookie is a new visitor (tracker/clicks/redirect.py),
so a later click under a signed-era visitor id was made by the browser holding that cookie.
Visitor ids of the unsigned era (the first click's id, a UUID, believed from any cookie) were
shown in the landing URL, so anyone who saw it could have joined that visitor: there a later
click by another referrer than the named click's is not a touch of a conversion that names a
click (`_not_joinable_later`). An imported visitor id is judged by its shape alike.

The models come from attribution/ (pure functions and fitted models), the SQL from
tracker/scoring/queries.py; this module only moves data between them. The reports over the
stored credits are in tracker/scoring/reports.py.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections import defaultdict
from collections.abc import Hashable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg

from attribution.models import (
    DATA_DRIVEN_MODELS,
    DEFAULT_HALF_LIFE_DAYS,
    HEURISTIC_MODELS,
    Journey,
    MarkovModel,
    ShapleyModel,
    Touch,
    heuristic_credits,
)
from tracker.db import job_lock
from tracker.formats import CREDITED_TYPES
from tracker.scoring import queries
from tracker.scoring.queries import CustomerVisitor, PendingConversion, TypedCode, VisitorClick

log = logging.getLogger(__name__)

BATCH = 5000

# The redirect's cookie value, "<visitor id>.<signature>" (tracker/clicks/redirect.py): a merchant
# that read the cookie may report it whole as a conversion's visitor_id; its id is the visitor.
_COOKIE_VALUE = re.compile(r"^([0-9a-f]{24})\.[0-9a-f]{24}$")
# A visitor id of the unsigned era: the id of the visitor's first click (a UUID), which that
# click's landing URL showed and any cookie could claim.
_JOINABLE = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")


@dataclass(frozen=True, slots=True)
class ProgramModel:
    program_id: int
    model: str
    window: timedelta
    half_life_days: float

    @classmethod
    def from_settings(cls, program_id: int, settings: dict[str, Any]) -> ProgramModel:
        return cls(
            program_id=program_id,
            model=str(settings.get("attribution_model", "last_touch")),
            window=timedelta(days=int(settings.get("attribution_window_days", 30))),
            half_life_days=float(settings.get("time_decay_half_life_days",
                                              DEFAULT_HALF_LIFE_DAYS)),
        )


@dataclass(frozen=True, slots=True)
class TouchRow:
    referrer_id: int
    ts: datetime
    click_id: str | None
    via: str


@dataclass(frozen=True, slots=True)
class Identity:
    """Per conversion id, every visitor it reaches; and the customer-visitor links to store."""

    visitors_of: dict[int, set[str]]
    new_links: set[CustomerVisitor]


def credits_for(model: str, touches: list[TouchRow], occurred_at: datetime,
                half_life_days: float, fitted: MarkovModel | ShapleyModel | None
                ) -> dict[Hashable, float]:
    if not touches:
        return {}
    if model in HEURISTIC_MODELS:
        points = [Touch(t.referrer_id, t.ts.timestamp()) for t in touches]
        return heuristic_credits(model, points, occurred_at.timestamp(), half_life_days)
    assert fitted is not None  # noqa: S101 (data-driven models are fitted before use)
    return fitted.credits([t.referrer_id for t in touches])


@dataclass(slots=True)
class Journeys:
    """A program's journeys as the data-driven models are fitted on them: converting ones (the
    stored touchpoints) and lost ones (the clicks of visitors no customer is known by, by
    visitor), read once per run and kept up to date in memory batch by batch."""

    converted: list[Journey]
    lost: dict[str, Journey]

    def all(self) -> list[Journey]:
        return [*self.converted, *self.lost.values()]

    def add_batch(self, paths: list[tuple[int, ...]], visitors: set[str]) -> None:
        """A batch's converting paths, and the visitors its customers reach (no longer lost)."""
        self.converted += [Journey(path, conversions=1) for path in paths]
        for v in visitors:
            self.lost.pop(v, None)


async def read_journeys(conn: asyncpg.Connection, program_id: int) -> Journeys:
    converted = await queries.converted_paths(conn, program_id)
    lost = await queries.lost_paths(conn, program_id)
    return Journeys([Journey(path, conversions=1) for path in converted],
                    {v: Journey(path, lost=1) for v, path in lost.items()})


async def load_journeys(conn: asyncpg.Connection, program_id: int) -> list[Journey]:
    """Converting journeys (stored touchpoints) and lost ones (visitors who never converted)."""
    return (await read_journeys(conn, program_id)).all()


def fit(model: str, journeys: list[Journey]) -> MarkovModel | ShapleyModel:
    return MarkovModel().fit(journeys) if model == "markov" else ShapleyModel().fit(journeys)


async def _program_models(conn: asyncpg.Connection, program_id: int | None
                          ) -> list[ProgramModel]:
    return [ProgramModel.from_settings(p.id, p.settings)
            for p in await queries.attribution_programs(conn, program_id)]


ANALYZE_AFTER = 5_000


async def attribute_pending(conn: asyncpg.Connection, program_id: int | None = None) -> int:
    """Attribute every conversion not yet attributed; returns how many were processed.

    The attribution job's lock is held throughout, so the job, `refguard attribution run` and
    clearance never attribute the same conversions at once: for each batch under a heuristic
    model, for the whole run of a program under a data-driven one. Every query of a batch is
    set-based over the batch (no per-conversion query).

    A data-driven model (markov, shapley) is fitted once per program and run, after the run has
    gathered (and stored) the touchpoints of all its conversions: on every journey known then,
    the conversions attributed before, the run's own, and the visitors no customer is known by.
    Every conversion of the run is credited with that one fit, so its credits do not depend on
    how the backlog is cut into batches; a later run fits again with what it brings and leaves
    the credits stored before unchanged. The program's journeys are read once per run and kept
    current in memory (`Journeys`), so a backlog costs one read, not one per batch."""
    done = 0
    for pm in await _program_models(conn, program_id):
        if pm.model in DATA_DRIVEN_MODELS:
            async with conn.transaction():
                await job_lock(conn, "attribution")
                done += await _attribute_fitted(conn, pm)
            continue
        after: tuple[datetime, int] | None = None
        while True:
            async with conn.transaction():
                await job_lock(conn, "attribution")
                batch = await _gather_batch(conn, pm, after)
                if batch.touches_of is not None:
                    await _store(conn, pm.program_id, batch.ids,
                                 _touch_rows(pm.program_id, batch.touches_of),
                                 _heuristic_credit_rows(pm, batch.pending, batch.touches_of))
                    await queries.mark_attributed(conn, pm.program_id, batch.ids)
            done += len(batch.ids)
            after = batch.after
            if batch.fetched < BATCH:
                break
    if done >= ANALYZE_AFTER:
        # Many new rows at once (an import, a backlog): fresh planner statistics for the
        # fraud scan's and clearance's joins.
        await queries.analyze_attribution_tables(conn)
    return done


async def _attribute_fitted(conn: asyncpg.Connection, pm: ProgramModel) -> int:
    """A data-driven program's run, in the caller's transaction: every batch's touchpoints
    stored, then one fit on all journeys, then every conversion's credits."""
    journeys: Journeys | None = None
    paths: dict[int, tuple[int, ...]] = {}  # the run's credited conversions with touches
    ids: list[int] = []
    after: tuple[datetime, int] | None = None
    while True:
        batch = await _gather_batch(conn, pm, after)
        if batch.touches_of is not None:
            if journeys is None:  # read once, before the run stores touchpoints
                journeys = await read_journeys(conn, pm.program_id)
            await _store(conn, pm.program_id, batch.ids,
                         _touch_rows(pm.program_id, batch.touches_of), [])
            batch_paths = {cid: tuple(t.referrer_id for t in ts)
                           for cid, ts in batch.touches_of.items() if ts}
            # Its converting journeys; its customers' visitors are no longer lost.
            journeys.add_batch(list(batch_paths.values()), batch.reached)
            paths.update(batch_paths)
            ids += batch.ids
        after = batch.after
        if batch.fetched < BATCH:
            break
    if journeys is None:
        return 0
    credit_rows = await asyncio.get_running_loop().run_in_executor(
        None, _fitted_credit_rows, pm, journeys.all(), paths)
    await queries.copy_credits(conn, credit_rows)
    for i in range(0, len(ids), BATCH):
        await queries.mark_attributed(conn, pm.program_id, ids[i:i + BATCH])
    return len(ids)


def _fitted_credit_rows(pm: ProgramModel, journeys: list[Journey],
                        paths: dict[int, tuple[int, ...]]) -> list[tuple[object, ...]]:
    """The model fitted once on `journeys`, then the credit rows of every path (conversion id
    -> its referrers), in the table's COPY column order."""
    if not paths:  # only refunds, or conversions without a touch: nothing to fit for
        return []
    fitted = fit(pm.model, journeys)
    return [(pm.program_id, cid, referrer, pm.model, credit)
            for cid, path in paths.items() for referrer, credit in fitted.credits(path).items()]


@dataclass(frozen=True, slots=True)
class Batch:
    """One batch of pending conversions with their touchpoints (None: none to attribute)."""

    fetched: int  # how many pending ones were read (those left waiting included)
    after: tuple[datetime, int] | None  # the last one's position, for the next batch
    pending: list[PendingConversion]  # those attributed now
    touches_of: dict[int, list[TouchRow]] | None  # per credited conversion
    reached: set[str]  # visitors newly linked to the batch's customers

    @property
    def ids(self) -> list[int]:
        return [r.id for r in self.pending]


async def _gather_batch(conn: asyncpg.Connection, pm: ProgramModel,
                        after: tuple[datetime, int] | None) -> Batch:
    """The next batch after `after`: its conversions' touchpoints, the customers' new visitor
    links stored."""
    fetched = await queries.pending_conversions(conn, pm.program_id, BATCH, after)
    if not fetched:
        return Batch(0, after, [], None, set())
    last = (fetched[-1].occurred_at, fetched[-1].id)
    named = sorted({(r.click_id, _uuid7_time(r.click_id)) for r in fetched if r.click_id},
                   key=lambda n: n[0])
    named_clicks = await queries.click_visitors(conn, pm.program_id, named)
    # A recent conversion whose click is not stored yet waits for it (queries.CLICK_WAIT):
    # the click may still be in a tracker's journal (an outage, a failover).
    pending = [r for r in fetched
               if not (r.click_id and r.recent and r.click_id not in named_clicks)]
    if not pending:
        return Batch(len(fetched), last, [], None, set())
    identity = await _identity(conn, pm.program_id, pending, named_clicks)
    touches_of = await _touchpoints(conn, pm, pending, identity.visitors_of)
    if identity.new_links:
        await queries.add_customer_visitors(conn, pm.program_id, sorted(identity.new_links))
    return Batch(len(fetched), last, pending, touches_of,
                 {link.visitor_id for link in identity.new_links})


# -- identity: the clicks named by click id, the visitors named, the customers' known visitors --


async def _identity(conn: asyncpg.Connection, program_id: int,
                    pending: list[PendingConversion], named_clicks: dict[str, str | None]
                    ) -> Identity:
    customers = sorted({r.customer_id for r in pending})
    known: defaultdict[str, set[str]] = defaultdict(set)
    for link in await queries.known_visitors(conn, program_id, customers):
        known[link.customer_id].add(link.visitor_id)
    return _stitch(pending, named_clicks, known)


def _stitch(pending: list[PendingConversion], named_clicks: dict[str, str | None],
            known: defaultdict[str, set[str]]) -> Identity:
    """Each conversion reaches its customer's visitors known so far, its own included."""
    new_links: set[CustomerVisitor] = set()
    visitors_of: dict[int, set[str]] = {}
    for r in pending:
        own: set[str] = set()
        named = named_clicks.get(r.click_id) if r.click_id else None
        if named:
            own.add(named)
        if r.visitor_id:
            cookie = _COOKIE_VALUE.match(r.visitor_id)
            own.add(cookie.group(1) if cookie else r.visitor_id)
        for v in own - known[r.customer_id]:
            new_links.add(CustomerVisitor(r.customer_id, v))
        known[r.customer_id] |= own
        visitors_of[r.id] = set(known[r.customer_id])
    return Identity(visitors_of, new_links)


# -- touchpoints: the visitors' clicks and the codes typed, within each window ------------------


async def _touchpoints(conn: asyncpg.Connection, pm: ProgramModel,
                       pending: list[PendingConversion], visitors_of: dict[int, set[str]]
                       ) -> dict[int, list[TouchRow]]:
    pid = pm.program_id
    all_visitors = sorted({v for vs in visitors_of.values() for v in vs})
    earliest = min(r.occurred_at for r in pending) - pm.window
    latest = max(r.occurred_at for r in pending)
    clicks_of: dict[str, list[VisitorClick]] = defaultdict(list)
    for c in await queries.visitor_clicks(conn, pid, all_visitors, earliest, latest):
        clicks_of[c.visitor_id].append(c)
    # Referral codes typed at checkout, by these customers, in this batch or before it: a code
    # is a touch for the conversion that carries it and for the customer's later ones.
    customers = sorted({r.customer_id for r in pending})
    typed: dict[str, list[TypedCode]] = defaultdict(list)
    for t in await queries.typed_codes(conn, pid, customers, earliest, latest):
        typed[t.customer_id].append(t)
    codes = sorted({t.referral_code for entries in typed.values() for t in entries})
    code_referrer = await queries.code_referrers(conn, pid, codes)
    return {r.id: _touches(pm, r, visitors=visitors_of[r.id], clicks_of=clicks_of, typed=typed,
                           code_referrer=code_referrer)
            for r in pending if r.type in CREDITED_TYPES}


def _touches(pm: ProgramModel, r: PendingConversion, *, visitors: set[str],
             clicks_of: dict[str, list[VisitorClick]], typed: dict[str, list[TypedCode]],
             code_referrer: dict[str, int]) -> list[TouchRow]:
    """One conversion's touchpoints in its window, by time (clicks in click order)."""
    start = r.occurred_at - pm.window
    found = [c for v in visitors for c in clicks_of.get(v, ())
             if start <= c.ts <= r.occurred_at]
    found.sort(key=lambda c: (c.ts, c.click_id))
    if r.click_id and any(_JOINABLE.match(v) for v in visitors):
        found = _not_joinable_later(found, r.click_id)
    touches = [TouchRow(c.referrer_id, c.ts, c.click_id,
                        "click" if c.click_id == r.click_id else "visitor")
               for c in found]
    touches += [TouchRow(code_referrer[t.referral_code], t.occurred_at, None, "code")
                for t in typed.get(r.customer_id, ())
                if start <= t.occurred_at <= r.occurred_at and t.referral_code in code_referrer]
    touches.sort(key=lambda t: t.ts)
    return touches


def _not_joinable_later(found: list[VisitorClick], click_id: str) -> list[VisitorClick]:
    """The clicks without those a forged cookie could have added after the named click: under
    an unsigned-era visitor id, later than the named click and by another referrer (see the
    module's docstring). Where the named click is not among the touches (a bot's, or out of
    the window) its time is the one in its UUIDv7 id, and every referrer is another."""
    named = next((c for c in found if c.click_id == click_id), None)
    after = named.ts if named is not None else _uuid7_time(click_id)
    referrer = named.referrer_id if named is not None else None
    return [c for c in found
            if not (_JOINABLE.match(c.visitor_id) and c.referrer_id != referrer
                    and (after is None or c.ts > after))]


def _uuid7_time(click_id: str) -> datetime | None:
    """The millisecond a UUIDv7 click id was made at, or None for another kind of UUID."""
    if len(click_id) != 36 or click_id[14] != "7":
        return None
    try:
        ms = int(click_id[:8] + click_id[9:13], 16)
    except ValueError:
        return None
    return datetime.fromtimestamp(ms / 1000, UTC)


# -- credits: share each conversion out --------------------------------------------------------


def _touch_rows(program_id: int, touches_of: dict[int, list[TouchRow]]
                ) -> list[tuple[object, ...]]:
    """The touchpoint rows of a batch, in the table's COPY column order."""
    return [(program_id, cid, pos, t.referrer_id, t.click_id, t.ts, t.via)
            for cid, touches in touches_of.items() for pos, t in enumerate(touches)]


def _heuristic_credit_rows(pm: ProgramModel, pending: list[PendingConversion],
                           touches_of: dict[int, list[TouchRow]]) -> list[tuple[object, ...]]:
    """The credit rows of a batch under a heuristic model, in the table's COPY column order."""
    return [(pm.program_id, r.id, referrer, pm.model, credit)
            for r in pending
            for referrer, credit in credits_for(pm.model, touches_of.get(r.id, []),
                                                r.occurred_at, pm.half_life_days, None).items()]


# -- store ------------------------------------------------------------------------------------


async def _store(conn: asyncpg.Connection, program_id: int, ids: list[int],
                 touch_rows: list[tuple[object, ...]], credit_rows: list[tuple[object, ...]]
                 ) -> None:
    """Touchpoints and credits of these conversions (a data-driven run stores its credits
    later, after the fit), replacing any a re-run after a crash would add twice."""
    await queries.delete_attribution(conn, program_id, ids)
    await queries.copy_touchpoints(conn, touch_rows)
    await queries.copy_credits(conn, credit_rows)
