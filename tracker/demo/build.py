"""`refguard demo`: a realistic referral program with planted fraud, through a running server.

Run `make run` (or `refguard serve`) in one terminal and `make demo` (`refguard demo`) in
another; the demo ends by printing the review page's URL and a finance token to log in with.

What it builds: a program `demo` (or `demo-2`, ... when that slug is taken: every run is a fresh
program) selling plans on `shop.example`: 20.00 USD to the referrer on a referee's first
purchase, 5.00 USD to the referee on signup, 10 % of renewals to the referrer; `hold_days` 0
so the rewards are decided now rather than after a 30-day refund window. Its traffic, organic
and planted fraud, is `tracker.demo.scenario`'s (deterministic for a given `--seed`).

How it gets there, through the same code paths as production:

- Referrers, links and conversions go through the server's HTTP API (`POST /api/v1/...`);
  conversions are signed like a merchant's backend signs them (`X-Refguard-Signature`) and
  carry their real `occurred_at` in the past.
- Clicks: history cannot come through `GET /r/{code}`, which stamps every click with the time
  it is answered, so the 45 days of history are loaded the way a merchant migrating to refguard
  loads theirs: the NDJSON import (`tracker.intake.importer.import_clicks`, DESIGN section 6), which
  takes explicit times and client IPs and enriches them exactly as live clicks (the same
  `Enricher` with the server's secret, so fingerprints match). The last hour is live: visitors
  browsing right now, and (see below) the click injection, go through the real redirect,
  each with its own IP in `X-Forwarded-For`, and reach PostgreSQL through the server's journal
  and flusher. The server believes that header only from a trusted proxy
  (`REFGUARD_TRUSTED_PROXIES`), which `make run` does not configure; the demo cannot change the
  server's configuration, so its first live click is a probe. If the server recorded it under
  the forwarded IP, the click injection happens live as well (clicks through `/r/{code}`, then
  purchases seconds later); otherwise every live click is recorded from this machine's own
  address, so only visitors who never convert browse live (one IP shared by a few dozen
  converting customers would look like a ring, which is not what the demo means to plant) and
  the click injection is imported with the rest of the history.
- The demo writes to the server's database directly only where a user would run a `refguard`
  command: an admin token to drive the API (`refguard token create`), the click import
  (`refguard import`), clearance (`refguard rewards release`, which attributes, scans and
  decides) preceded by a full fraud scan (`refguard fraud scan`, as the server's fraud job does
  for a program it has not scanned in full within the hour), and the finance token it prints.
  While it loads, it holds the job locks (the advisory locks of the attribution, fraud-scan and
  clearance jobs), so the server's own jobs skip their rounds instead of clearing half a
  program: with `hold_days` 0 a reward is decided the moment a scan has seen it, and a ring
  seen before its last member arrives would go out approved. The server's jobs resume as soon
  as the demo is done. Before attributing and scanning it refreshes the planner's statistics of
  the tables it filled (ANALYZE, as after any bulk load): planned for a program with no rows,
  the scan's and clearance's joins turn quadratic (seconds instead of tenths here).
- Growth (issue 15; tracker.demo.moments, tracker.demo.growth): the customers' events and the
  referrers' shares go through POST /api/v1/events (signed) and /api/v1/shares alongside the
  conversions; after clearance, the candidates are fitted and the asks job run as their jobs
  do, the referral.ask webhooks delivered to the demo's own receiver, and some asked customers
  press a button of their share page (POST /s/{token}/share) before friends click its link.
  The candidates', asks' and webhooks jobs' locks are held with the others, so the server's
  own rounds neither take the triggers before the candidates exist nor deliver to the demo's
  receiver.

Exit status (as every `refguard` command): 0 success, 2 bad usage, 1 anything else (no server at
`--url`, a server on another database), with a one-line error.
"""

from __future__ import annotations

import asyncio
import json
import sys
import tempfile
import time
from collections import defaultdict
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TextIO

import asyncpg

from geo.reader import GeoReader
from tracker import db
from tracker.auth import create_token
from tracker.clicks.enrich import Enricher
from tracker.demo.client import (
    Api,
    DemoError,
    check_server,
    gather,
    live_click,
    open_session,
    together,
    wait_for_clicks,
)
from tracker.demo.geodb import demo_geo
from tracker.demo.growth import Receiver, deliver, set_webhook_url, share_after_asks
from tracker.demo.moments import CHANNELS, Share
from tracker.demo.report import DemoResult, summarise, summarise_growth
from tracker.demo.scenario import (
    DOMAIN,
    ORGANIC,
    Account,
    Click,
    Conversion,
    DemoSize,
    Scenario,
    display_name,
    probe_click,
)
from tracker.formats import rfc3339
from tracker.intake.importer import import_clicks
from tracker.settings import Settings
from tracker.signing import program_signing_secret, signature_header

DEFAULT_PROGRAM = "demo"
# The order the clearance job takes its three; then the growth jobs', which take only their own.
JOB_LOCKS = ("clearance", "attribution", "fraud_scan", "candidates", "asks", "webhooks")
LOCK_WAIT = "120s"

PROGRAM_SETTINGS: dict[str, Any] = {
    "attribution_model": "last_touch",
    "attribution_window_days": 60,
    "hold_days": 0,
    "review_at": 0.5,
    "reject_at": 0.9,
    "reward": {"currency": "USD", "rules": [
        {"beneficiary": "referrer", "on": "purchase", "flat": 2000, "first_only": True},
        {"beneficiary": "referee", "on": "signup", "flat": 500},
        {"beneficiary": "referrer", "on": "renewal", "percent": 10, "months": 12}]},
    # Asks at the moment of delight (DESIGN section 5; tracker.asks.asks) and the share page's
    # message, with X's own (tracker.asks.messages).
    "asks": {"rules": [{"on": "nps", "min_score": 9}, {"on": "review", "min_score": 5},
                       {"on": "milestone"}, {"on": "purchase", "nth": 2}],
             "within_hours": 24, "top_share": 0.2, "cooldown_days": 30, "max_per_customer": 3},
    "share": {"message": "I like Demo shop, so here is {referee_reward} for you to try it: "
                         "{link}",
              "channels": ["copy", "share_sheet", "email", "sms", "whatsapp",
                           {"name": "x", "message": "Demo shop, with {referee_reward} off "
                                                    "through my link: {link}"},
                           "linkedin", "facebook"]},
}


@dataclass(frozen=True, slots=True)
class _Program:
    """The program being built and the ways to it: the API (and its session for the redirect)
    and the server's database."""

    conn: asyncpg.Connection
    api: Api
    slug: str
    program_id: int
    secret: str  # its signing secret, as the server made it


class _Steps:
    """One line per step on stderr, with how long it took."""

    def __init__(self, out: TextIO) -> None:
        self.out = out
        self.mark = time.monotonic()

    def done(self, text: str) -> None:
        now = time.monotonic()
        self.out.write(f"  {text} ({now - self.mark:.1f} s)\n")
        self.out.flush()
        self.mark = now


async def _free_slug(api: Api, wanted: str) -> str:
    for n in range(1, 1000):
        slug = wanted if n == 1 else f"{wanted[:58]}-{n}"
        status, _ = await api.call("GET", f"/api/v1/programs/{slug}", expect=(200, 404))
        if status == 404:
            return slug
    raise DemoError(f"programs {wanted!r} to {wanted!r}-999 all exist")


async def _lock_jobs(conn: asyncpg.Connection) -> None:
    """Hold the attribution, fraud-scan and clearance jobs' locks for this session."""
    await conn.execute(f"SET lock_timeout = '{LOCK_WAIT}'")
    try:
        for name in JOB_LOCKS:
            await conn.execute("SELECT pg_advisory_lock($1)", db.lock_key(name))
    except asyncpg.LockNotAvailableError:
        raise DemoError(f"the server's jobs held their locks for {LOCK_WAIT}; "
                        "try again in a minute") from None
    finally:
        await conn.execute("RESET lock_timeout")


async def _unlock_jobs(conn: asyncpg.Connection) -> None:
    for name in reversed(JOB_LOCKS):
        await conn.execute("SELECT pg_advisory_unlock($1)", db.lock_key(name))


async def run_demo(conn: asyncpg.Connection, settings: Settings, url: str, *,
                   program: str = DEFAULT_PROGRAM, seed: int = 7, size: DemoSize | None = None,
                   log: TextIO = sys.stderr) -> DemoResult:
    """Build the demo program on the server at `url`, whose database `conn` is. The admin
    token it drives the API with is revoked when it is done."""
    admin, admin_id = await create_token(conn, "admin", "refguard demo")
    try:
        return await _build(conn, settings, url, admin, program=program, seed=seed,
                            size=size or DemoSize(), log=log)
    finally:
        await conn.execute("UPDATE api_tokens SET revoked_at = now() WHERE id = $1", admin_id)


async def _build(conn: asyncpg.Connection, settings: Settings, url: str, admin: str, *,
                 program: str, seed: int, size: DemoSize, log: TextIO) -> DemoResult:
    url = url.rstrip("/")
    started = time.monotonic()
    steps = _Steps(log)
    async with open_session() as session:
        target = await _create_program(conn, settings, Api(session, url, admin), program, log)
        scenario = Scenario(seed, datetime.now(UTC), size)
        await gather(scenario.accounts, lambda account: _make_referrer(target, account))
        steps.done(f"program {target.slug} with {len(scenario.accounts)} referrers and their "
                   "links")
        live_ips = await _probe(target, scenario, seed)
        scenario.plan(live_injection=live_ips)

        # From here until clearance, the server's attribution, scan and clearance jobs wait.
        await _lock_jobs(conn)
        try:
            await _load(target, settings, scenario, steps)
            await _decide(target, steps)
            received = await _grow(target, settings, scenario, live_ips, steps)
        finally:
            await _unlock_jobs(conn)

        finance = await _finance_token(target)
        result = await summarise(conn, scenario, target.program_id)
        result["growth"] = await summarise_growth(conn, scenario, target.program_id, url=url,
                                                  secret_key=settings.secret_key,
                                                  receiver=received)
    return DemoResult(
        program=target.slug, url=url, seconds=time.monotonic() - started, live_ips=live_ips,
        referrers=len(scenario.accounts), clicks=len(scenario.clicks) + 1,
        live_clicks=sum(c.live for c in scenario.clicks) + 1,
        conversions=len(scenario.conversions), finance_token=finance, **result)


async def _create_program(conn: asyncpg.Connection, settings: Settings, api: Api, wanted: str,
                          log: TextIO) -> _Program:
    """A fresh program on the server, under `wanted` or the first free slug after it."""
    status, _ = await api.call("GET", "/api/v1/programs?limit=1", expect=(200, 401))
    if status == 401:
        raise DemoError(f"the server at {api.url} uses another database than this command "
                        "(give both the same REFGUARD_DATABASE_URL or REFGUARD_DATA_DIR)")
    slug = await _free_slug(api, wanted)
    log.write(f"refguard demo: building program {slug!r} on {api.url}\n")
    _, created = await api.call("POST", "/api/v1/programs", {
        "slug": slug, "name": "Demo shop", "destination_domains": [DOMAIN],
        "settings": PROGRAM_SETTINGS})
    program_id = await conn.fetchval("SELECT id FROM programs WHERE slug = $1", slug)
    if program_id is None:
        raise DemoError(f"the server at {api.url} uses another database than this command")
    secret = str(created["signing_secret"])
    seed = await conn.fetchval("SELECT signing_seed FROM programs WHERE id = $1", program_id)
    if secret != program_signing_secret(settings.secret_key, str(seed)):
        log.write("  note: this command's secret key differs from the server's "
                  "(REFGUARD_SECRET_KEY): imported clicks get other device fingerprints\n")
    return _Program(conn, api, slug, program_id, secret)


async def _make_referrer(target: _Program, account: Account) -> None:
    """The referrer and their link, through the API; the link's code goes on the account."""
    await target.api.call("POST", "/api/v1/referrers", {
        "program": target.slug, "external_id": account.external_id, "email": account.email,
        "name": display_name(account.external_id)})
    _, link = await target.api.call("POST", "/api/v1/links", {
        "program": target.slug, "referrer": account.external_id,
        "destination": f"https://{DOMAIN}/welcome?plan=starter"})
    account.code = str(link["code"])
    if account.pattern == ORGANIC:  # organic referrers share on channels: a link for each
        for channel in CHANNELS:
            _, link = await target.api.call("POST", "/api/v1/links", {
                "program": target.slug, "referrer": account.external_id, "channel": channel,
                "destination": f"https://{DOMAIN}/welcome?plan=starter"})
            account.channels[channel] = str(link["code"])


async def _probe(target: _Program, scenario: Scenario, seed: int) -> bool:
    """The probe: does the server believe X-Forwarded-For from this machine?"""
    probe = probe_click(scenario, seed)
    await live_click(target.api.session, target.api.url, probe)
    await wait_for_clicks(target.conn, target.program_id, [probe.click_id])
    recorded = await target.conn.fetchval(
        "SELECT host(ip) FROM clicks WHERE program_id = $1 AND click_id = $2::uuid",
        target.program_id, probe.click_id)
    return bool(recorded == probe.person.ip)


async def _load(target: _Program, settings: Settings, scenario: Scenario, steps: _Steps
                ) -> None:
    """The traffic: the history's clicks imported, the live ones through the redirect, then
    every conversion through the API."""
    imported = [c for c in scenario.clicks if not c.live]
    await _import(target.conn, settings, imported)
    steps.done(f"{len(imported):,} clicks of the last {scenario.size.days} days imported "
               "(refguard import)")
    live = [c for c in scenario.clicks if c.live]
    await _browse(target, live)
    steps.done(f"{len(live) + 1:,} live clicks through GET /r/{{code}}, stored by the "
               "server's flusher")
    # Customers' events and the referrers' shares meanwhile (they wait for no conversion,
    # and the conversions wait for the live purchases' time to come).
    await together(
        _post_conversions(target, scenario.conversions),
        gather(scenario.moments, lambda m: _post_signed(target, "/api/v1/events",
                                                        m.body(target.slug))),
        gather(scenario.shares, lambda s: _share(target, s)))
    steps.done(f"{len(scenario.conversions):,} conversions and {len(scenario.moments):,} "
               "customer events (NPS, reviews, milestones, support) posted, signed like a "
               f"merchant's backend; {len(scenario.shares):,} shares on channels "
               "(POST /api/v1/shares)")


async def _post_signed(target: _Program, path: str, body: dict[str, Any]) -> None:
    """A body signed like a merchant's backend signs them."""
    raw = json.dumps(body, separators=(",", ":")).encode()
    await target.api.call("POST", path, raw=raw, token="", headers={
        "X-Refguard-Signature": signature_header(target.secret, raw, int(time.time()))},
        expect=(201,))


async def _share(target: _Program, share: Share) -> None:
    await target.api.call("POST", "/api/v1/shares", {
        "program": target.slug, "referrer": share.account.external_id,
        "channel": share.channel, "occurred_at": rfc3339(share.at)}, expect=(201,))


async def _browse(target: _Program, live: list[Click]) -> None:
    """The live clicks through GET /r/{code}, until the server's flusher has stored them."""
    # A person's clicks one after the other (the cookie of the first names the rest).
    by_person: dict[int, list[Click]] = defaultdict(list)
    for c in live:
        by_person[id(c.person)].append(c)

    async def browse(clicks: list[Click]) -> None:
        for c in clicks:
            await live_click(target.api.session, target.api.url, c)

    await gather(list(by_person.values()), browse)
    await wait_for_clicks(target.conn, target.program_id, [c.click_id for c in live])


async def _post_conversions(target: _Program, conversions: list[Conversion]) -> None:
    """Every conversion, signed like a merchant's backend signs them."""

    async def post(conv: Conversion) -> None:
        await _post_signed(target, "/api/v1/conversions", conv.body(target.slug))

    # The history first; then the live purchases, once the seconds between their
    # click and their purchase have passed (a conversion may not come from the future).
    # A refund or chargeback only once its purchase is stored (it must name a known one).
    history = [c for c in conversions if c.at is not None]
    now_ones = [c for c in conversions if c.at is None]
    await gather([c for c in history if c.original is None], post)
    await gather([c for c in history if c.original is not None], post)
    if now_ones:
        latest = max(c.occurred_at() for c in now_ones)
        await asyncio.sleep(max(0.0, (latest - datetime.now(UTC)).total_seconds()) + 0.05)
        await gather([c for c in now_ones if c.original is None], post)
        await gather([c for c in now_ones if c.original is not None], post)


async def _decide(target: _Program, steps: _Steps) -> None:
    """Attribution, a full fraud scan and clearance, as their `refguard` commands run them."""
    # Here, not at the top: a missing server is reported before numpy and friends load.
    from tracker.finance.clearance import release
    from tracker.scoring.credits import attribute_pending
    from tracker.scoring.risk import scan

    conn, slug = target.conn, target.slug
    # Fresh statistics after a bulk load (as after any restore or import): planned with
    # the empty program's, the scan's and clearance's joins take seconds, not tenths.
    await conn.execute("SELECT refguard_analyze('clicks', 'conversions')")
    attributed = await attribute_pending(conn, target.program_id)
    steps.done(f"{attributed:,} conversions attributed (refguard attribution run)")
    await conn.execute("SELECT refguard_analyze('customer_visitors', 'touchpoints', 'credits')")
    scanned = (await scan(conn, slug))[0]
    await conn.execute("SELECT refguard_analyze('conversion_risk', 'fraud_flags')")
    rings = ", ".join(f"{n} {kind.replace('_', ' ')}" for kind, n in
                      sorted(scanned.rings.items())) or "no rings"
    steps.done(f"full fraud scan: {scanned.flagged_conversions:,} conversions at risk, "
               f"{rings} (refguard fraud scan)")
    cleared = await release(conn, slug)
    decided = ", ".join(f"{n:,} {status}" for status, n in sorted(cleared.decided.items()))
    steps.done(f"clearance: {decided} (refguard rewards release)")


async def _grow(target: _Program, settings: Settings, scenario: Scenario, live_ips: bool,
                steps: _Steps) -> Receiver:
    """Candidates, asks and their webhooks, shares and clicks after them (tracker.demo.growth),
    as the server's candidates, asks and webhooks jobs would run them; the receiver that took
    the webhooks (stopped)."""
    from tracker.asks.asks import run_asks
    from tracker.asks.candidates import refresh
    from tracker.scoring.credits import attribute_pending

    conn = target.conn
    await conn.execute("SELECT refguard_analyze('customer_events', 'shares')")
    fit = await refresh(conn, target.program_id)
    steps.done(f"referral candidates: {fit.kind} over {fit.trained_on:,} customers, "
               f"{fit.positives:,} of whom referred (the candidates job)")
    receiver = Receiver(target.secret)
    await receiver.start()
    try:
        await set_webhook_url(conn, target.program_id, receiver.url)
        decided = (await run_asks(conn, settings)).asks
        delivered = await deliver(conn, settings, target.program_id)
        told = ", ".join(f"{n:,} {s}{' (' + r + ')' if r else ''}"
                         for (s, r), n in sorted(decided.items()))
        steps.done(f"asks: {told or 'none'} (the asks job); {delivered:,} referral.ask "
                   "delivered to the demo's webhook receiver, signatures checked")
        if receiver.refused:
            steps.out.write(f"  note: the receiver refused {receiver.refused} webhook(s) for "
                            "their signature: this command's secret key differs from the "
                            "server's (REFGUARD_SECRET_KEY)\n")
        signups = await share_after_asks(target.api, conn, scenario, receiver.asks(),
                                         program=target.slug, program_id=target.program_id,
                                         live_ips=live_ips)
    finally:
        await set_webhook_url(conn, target.program_id, None)
        await receiver.stop()
    if signups:
        await _post_conversions(target, signups)
        await attribute_pending(conn, target.program_id)
    steps.done(f"asked customers shared through their share page and friends clicked "
               f"({len(signups)} signed up)")
    return receiver


async def _finance_token(target: _Program) -> str:
    """The finance token the report prints, checked where finance will use it."""
    finance, _ = await create_token(target.conn, "finance", f"demo {target.slug}")
    await target.api.call(
        "GET", f"/api/v1/rewards?program={target.slug}&status=flagged&limit=1",
        token=finance, expect=(200,))
    return finance


async def _import(conn: asyncpg.Connection, settings: Settings, clicks: list[Click]) -> None:
    """The history's clicks through the importer, as `refguard import --clicks` loads them."""
    geo = GeoReader(settings.geoip_dir)
    enricher = Enricher(settings.secret_key, settings.trusted_proxies, geo=geo)
    try:
        with tempfile.TemporaryDirectory(prefix="refguard-demo-") as folder:
            path = Path(folder) / "clicks.ndjson"
            with path.open("w", encoding="utf-8") as fh:
                for c in sorted(clicks, key=lambda c: c.at):
                    line: dict[str, str] = {
                        "ts": rfc3339(c.at), "ip": c.person.ip,
                        "code": c.account.channels.get(c.channel, c.account.code),
                        "user_agent": c.person.user_agent, "visitor_id": c.person.visitor,
                        "click_id": c.click_id}
                    if c.person.language:
                        line["accept_language"] = c.person.language
                    if c.referer:
                        line["referer"] = c.referer
                    fh.write(json.dumps(line) + "\n")
            result = await import_clicks(conn, path, enricher)
    finally:
        geo.close()
    if result.bad:
        raise DemoError(f"the click import refused a line: {result.bad[0]}")


async def demo(settings: Settings, url: str, *, program: str = DEFAULT_PROGRAM, seed: int = 7,
               size: DemoSize | None = None, log: TextIO = sys.stderr) -> DemoResult:
    """`refguard demo`: check the server, open its database, build the program."""
    url = url.rstrip("/")
    await check_server(url)
    dsn = settings.database_url or db.database_url(settings)
    try:
        conn = await db.connect(dsn)
    except (OSError, asyncpg.PostgresError) as exc:
        raise DemoError(f"cannot open the database: {exc}") from None
    try:
        await db.migrate(conn)
        # Without REFGUARD_GEOIP_DIR the history is enriched with the demo's own databases.
        settings, geo_dir = demo_geo(settings)
        result = await run_demo(conn, settings, url, program=program, seed=seed, size=size,
                                log=log)
    finally:
        await conn.close()
    if geo_dir is not None:
        result.geo_dir = geo_dir
    return result
