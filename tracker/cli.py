"""The `refguard` command line (also `python -m tracker`).

Exit status: 0 success, 2 bad usage or input, 1 other failure; errors are one line on stderr.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import sys
import threading
import time
from collections.abc import Awaitable, Callable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn, TextIO, TypeVar

from tracker.settings import Settings, SettingsError

if TYPE_CHECKING:
    import asyncpg

    from tracker.db import Replica

T = TypeVar("T")


class UsageError(Exception):
    """Bad input from the user: exit status 2."""


class _Parser(argparse.ArgumentParser):
    """Bad usage in one line, saying where the help is (subcommands inherit the class)."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: {message} (see {self.prog} --help)\n")


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="refguard", description="Referral fraud and attribution server.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    serve = sub.add_parser("serve", help="run the HTTP server (applies migrations first)")
    serve.add_argument("--host", help="bind address (REFGUARD_HOST, default 127.0.0.1)")
    serve.add_argument("--port", type=int, help="port (REFGUARD_PORT, default 8080)")
    serve.add_argument("--workers", type=int, help="worker processes (REFGUARD_WORKERS, default 1)")
    serve.add_argument("--no-jobs", action="store_true", help="do not run the periodic jobs")

    sub.add_parser("migrate", help="apply pending migrations (as the owner role) and exit")
    db_url = sub.add_parser("db-url", help="print the PostgreSQL DSN the application uses")
    db_url.add_argument("--owner", action="store_true",
                        help="the owner's DSN, which migrations use, instead")

    attribution = sub.add_parser("attribution", help="multi-touch attribution")
    attribution_sub = attribution.add_subparsers(dest="attribution_command", required=True,
                                                 metavar="ACTION")
    run = attribution_sub.add_parser("run", help="attribute every unattributed conversion now")
    run.add_argument("--program", help="only this program (slug)")

    imp = sub.add_parser("import", help="bulk-load historical clicks / conversions / customer "
                                        "events (NDJSON)")
    imp.add_argument("--clicks", type=Path, help="clicks, one JSON object a line")
    imp.add_argument("--conversions", type=Path, help="conversions, one JSON object a line")
    imp.add_argument("--events", type=Path, help="customer events (the body of POST "
                                                 "/api/v1/events), one JSON object a line; "
                                                 "imported after the conversions")

    fraud = sub.add_parser("fraud", help="fraud scans")
    fraud_sub = fraud.add_subparsers(dest="fraud_command", required=True, metavar="ACTION")
    fraud_scan = fraud_sub.add_parser("scan", help="run a full fraud scan now")
    fraud_scan.add_argument("--program", help="only this program (slug)")
    fraud_scan.add_argument("--json", action="store_true", help="print JSON")
    backtest = fraud_sub.add_parser(
        "backtest", help="replay stored risk under other thresholds/weights; show what changes")
    backtest.add_argument("--settings", required=True, type=Path,
                          help='JSON: {"review_at", "reject_at", "weights": {code: w}, '
                               '"disabled_reasons": [code]}')
    backtest.add_argument("--program", help="only this program (slug)")

    rewards = sub.add_parser("rewards", help="reward clearance")
    rewards_sub = rewards.add_subparsers(dest="rewards_command", required=True, metavar="ACTION")
    release = rewards_sub.add_parser(
        "release", help="run clearance now: create rewards, end holds, approve or flag")
    release.add_argument("--program", help="only this program (slug)")

    candidates = sub.add_parser("candidates", help="referral candidates")
    candidates_sub = candidates.add_subparsers(dest="candidates_command", required=True,
                                               metavar="ACTION")
    refresh = candidates_sub.add_parser(
        "refresh", help="fit every program's referral candidates now (or one program's)")
    refresh.add_argument("--program", help="only this program (slug)")

    payouts = sub.add_parser("payouts", help="payout batches")
    payouts_sub = payouts.add_subparsers(dest="payouts_command", required=True, metavar="ACTION")
    export = payouts_sub.add_parser(
        "export", help="export approved unpaid rewards as one batch and mark them paid")
    export.add_argument("--out", required=True, type=Path, help="the CSV file to write")
    export.add_argument("--format", dest="payout_format", default="csv",
                        choices=("csv", "paypal", "wise"),
                        help="csv (default: refguard's columns), paypal (PayPal Payouts Web "
                             "upload) or wise (Wise batch payments, send by email); the "
                             "recipient is the payee id (README, Payouts)")

    geo = sub.add_parser("geo", help="GeoIP databases")
    geo_sub = geo.add_subparsers(dest="geo_command", required=True, metavar="ACTION")
    lookup = geo_sub.add_parser("lookup", help="what the geo databases say of an IP")
    lookup.add_argument("ip")
    lookup.add_argument("--json", action="store_true", help="print JSON")

    demo = sub.add_parser(
        "demo", help="a demo program with realistic traffic and planted fraud, through the "
                     "server (started here and kept serving when none answers); prints the "
                     "URLs to look at and a finance token")
    demo.add_argument("--url", help="a running server's base URL (default "
                                    "http://127.0.0.1:<REFGUARD_PORT>, where a server is started "
                                    "for the demo when none answers)")
    demo.add_argument("--program", default="demo",
                      help="the demo program's slug (demo-2, demo-3, ... once it is taken)")
    demo.add_argument("--seed", type=int, default=7, help="another seed, other traffic")

    _token_parser(sub.add_parser("token", help="API tokens"))
    return parser


def _token_parser(token: argparse.ArgumentParser) -> None:
    token_sub = token.add_subparsers(dest="token_command", required=True, metavar="ACTION")
    create = token_sub.add_parser("create", help="print a new API token (shown once)")
    create.add_argument("--role", required=True,
                        choices=["admin", "integration", "finance", "viewer"])
    create.add_argument("--name", required=True)
    create.add_argument("--person", help="the person holding it (four-eyes counts people)")
    listing = token_sub.add_parser("list", help="list tokens (never their secrets)")
    listing.add_argument("--json", action="store_true", help="print JSON")
    revoke = token_sub.add_parser(
        "revoke", help="revoke a token: it stops working at once on every worker")
    revoke.add_argument("token", metavar="ID|NAME", help="the token's id, or its name")


def _settings(args: argparse.Namespace) -> Settings:
    settings = Settings.from_env()
    changes: dict[str, object] = {}
    if getattr(args, "host", None):
        changes["host"] = args.host
    if getattr(args, "port", None) is not None:
        if not 0 <= args.port <= 65535:
            raise UsageError("--port must be between 0 and 65535")
        changes["port"] = args.port
    if getattr(args, "workers", None) is not None:
        if not 1 <= args.workers <= 64:
            raise UsageError("--workers must be between 1 and 64")
        changes["workers"] = args.workers
    if getattr(args, "no_jobs", False):
        changes["run_jobs"] = False
    return settings.with_overrides(**changes) if changes else settings


def _resolve_dsn(settings: Settings) -> Settings:
    """Both DSNs resolved (the embedded server started if needed): the application's in
    `database_url`, the owner's in `migrate_database_url`."""
    from tracker.db import database_url, migrate_database_url

    return settings.with_overrides(database_url=database_url(settings),
                                   migrate_database_url=migrate_database_url(settings))


def _migrate(settings: Settings) -> list[str]:
    """Pending migrations, applied as the owner; then the application's role may log in.
    Warnings about that role go to stderr. `settings` must be resolved (`_resolve_dsn`)."""
    from tracker.db import migrate_dsn

    applied, warnings = asyncio.run(migrate_dsn(settings.migrate_database_url or "",
                                                settings.database_url))
    for warning in warnings:
        print(f"refguard: warning: {warning}", file=sys.stderr)
    return applied


PROGRESS_EVERY_S = 10.0  # a plain progress line this often when stderr is not a terminal


@contextlib.contextmanager
def _progress(label: str | None, out: TextIO | None = None) -> Iterator[None]:
    """Show that a long command is at work: on a terminal a line counting the seconds,
    otherwise a plain line every PROGRESS_EVERY_S (a shorter run prints nothing)."""
    if label is None:
        yield
        return
    out = out or sys.stderr
    tty = out.isatty()
    started = time.monotonic()
    stop = threading.Event()

    def tick() -> None:
        while not stop.wait(0.5 if tty else PROGRESS_EVERY_S):
            elapsed = time.monotonic() - started
            out.write(f"\r{label}: {elapsed:.0f} s" if tty
                      else f"{label}: working, {elapsed:.0f} s so far\n")
            out.flush()

    ticker = threading.Thread(target=tick, name="progress", daemon=True)
    ticker.start()
    finished = False
    try:
        yield
        finished = True
    finally:
        stop.set()
        ticker.join()
        if tty and time.monotonic() - started >= 0.5:
            out.write(f"\r{label}: done in {time.monotonic() - started:.0f} s\n" if finished
                      else "\n")
            out.flush()


def _with_database(settings: Settings, work: Callable[[asyncpg.Connection], Awaitable[T]],
                   slug: str | None = None, *, progress: str | None = None) -> T:
    """Run `work` on a migrated database; a `slug` that names no program is a usage error.
    With a `progress` label, a long run shows that it is at work."""
    from tracker import db

    settings = _resolve_dsn(settings)
    if settings.migrate_database_url != settings.database_url:
        _migrate(settings)

    async def run() -> T:
        conn = await db.connect(settings.database_url or "")
        try:
            if settings.migrate_database_url == settings.database_url:
                await db.migrate(conn)
            if slug is not None and not await conn.fetchval(
                    "SELECT 1 FROM programs WHERE slug = $1", slug):
                raise UsageError(f"no program {slug!r}")
            return await work(conn)
        finally:
            await conn.close()

    with _progress(progress):
        return asyncio.run(run())


# A command run by hand reads what was just written: it waits this long at most for the read
# replica to replay the primary's latest changes (then reads what the replica has).
CATCH_UP_S = 30.0


def _with_replica(settings: Settings,
                  work: Callable[[asyncpg.Connection, Replica], Awaitable[T]],
                  slug: str | None = None, *, progress: str | None = None) -> T:
    """`_with_database`, with the read replica (REFGUARD_READ_DATABASE_URL) open for the heavy
    reads (none without the variable: the primary's connection is read)."""
    from tracker.db import Replica

    async def run(conn: asyncpg.Connection) -> T:
        replica = Replica(settings.read_database_url, max_size=1)
        await replica.open()
        try:
            return await work(conn, replica)
        finally:
            await replica.close()

    return _with_database(settings, run, slug, progress=progress)


def _cmd_geo_lookup(settings: Settings, ip: str, as_json: bool) -> int:
    import ipaddress
    import json

    from geo.reader import GeoReader

    try:
        ipaddress.ip_address(ip)
    except ValueError:
        raise UsageError(f"{ip!r} is not an IP address") from None
    if settings.geoip_dir is None:
        raise UsageError("no GeoIP databases: set REFGUARD_GEOIP_DIR to a folder of .mmdb files")
    reader = GeoReader(settings.geoip_dir)
    try:
        info = reader.lookup(ip).as_dict()
        databases = [d.path.name for d in reader.databases]
    finally:
        reader.close()
    if as_json:
        print(json.dumps({"ip": ip, **info, "databases": databases}))
        return 0
    print(f"ip: {ip}")
    for key, value in info.items():
        print(f"{key}: {'' if value is None else value}")
    print(f"databases: {', '.join(databases) or '(none)'}")
    return 0


def _cmd_attribution_run(settings: Settings, slug: str | None) -> int:
    from tracker.scoring.credits import attribute_pending

    async def work(conn: asyncpg.Connection) -> int:
        program_id = None
        if slug is not None:
            program_id = await conn.fetchval("SELECT id FROM programs WHERE slug = $1", slug)
        return await attribute_pending(conn, program_id)

    count = _with_database(settings, work, slug, progress="attribution run")
    print(f"attributed {count} conversion(s)")
    return 0


def _cmd_import(settings: Settings, clicks: Path | None, conversions: Path | None,
                events: Path | None = None) -> int:
    from geo.reader import GeoReader
    from tracker import db
    from tracker.asks.events import import_events
    from tracker.clicks.enrich import Enricher
    from tracker.intake.importer import Progress, import_clicks, import_conversions, import_workers

    if clicks is None and conversions is None and events is None:
        raise UsageError("give --clicks FILE, --conversions FILE and/or --events FILE")
    for path in (clicks, conversions, events):
        if path is not None and not path.is_file():
            raise UsageError(f"{path}: no such file")
    settings = _resolve_dsn(settings)
    if settings.migrate_database_url != settings.database_url:
        _migrate(settings)
    geo = GeoReader(settings.geoip_dir)
    enricher = Enricher(settings.secret_key, settings.trusted_proxies, geo=geo)
    click_bar = Progress("clicks", clicks.stat().st_size) if clicks else None
    conversion_bar = Progress("conversions", conversions.stat().st_size) if conversions else None
    event_bar = Progress("events", events.stat().st_size) if events else None

    async def run() -> list[str]:
        conn = await db.connect(settings.database_url or "")
        bad: list[str] = []
        try:
            if settings.migrate_database_url == settings.database_url:
                await db.migrate(conn)
            if clicks is not None and click_bar is not None:
                result = await import_clicks(
                    conn, clicks, enricher, lambda d, n, f: click_bar.update(d, n, final=f),
                    workers=import_workers(clicks))
                print(f"clicks: {result.read} read, {result.stored} stored, "
                      f"{result.skipped_existing} already there, {len(result.bad)} bad")
                bad += result.bad
            if conversions is not None and conversion_bar is not None:
                result = await import_conversions(
                    conn, conversions, settings.secret_key,
                    lambda d, n, f: conversion_bar.update(d, n, final=f))
                print(f"conversions: {result.read} read, {result.stored} stored, "
                      f"{result.skipped_existing} already there, {len(result.bad)} bad")
                bad += result.bad
            if events is not None and event_bar is not None:
                result = await import_events(
                    conn, events, lambda d, n, f: event_bar.update(d, n, final=f))
                print(f"events: {result.read} read, {result.stored} stored, "
                      f"{result.skipped_existing} already there, {len(result.bad)} bad")
                bad += result.bad
        finally:
            await conn.close()
            geo.close()
        return bad

    bad = asyncio.run(run())
    for line in bad[:100]:
        print(line, file=sys.stderr)
    if len(bad) > 100:
        print(f"... and {len(bad) - 100} more bad lines", file=sys.stderr)
    return 2 if bad else 0


def _cmd_fraud_scan(settings: Settings, slug: str | None, as_json: bool) -> int:
    import json

    from tracker.scoring.risk import scan

    async def work(conn: asyncpg.Connection, replica: Replica) -> list[dict[str, Any]]:
        return [s.as_dict() for s in await scan(conn, slug, replica=replica,
                                                 catch_up_s=CATCH_UP_S)]

    summaries = _with_replica(settings, work, slug, progress="fraud scan")
    if as_json:
        print(json.dumps(summaries))
        return 0
    for s in summaries:
        rings = ", ".join(f"{n} {k}" for k, n in sorted(s["rings"].items())) or "no rings"
        model = s["supervised"]
        learned = (f"finance model on (ROC AUC {model['validation_auc']} on "
                   f"{model['decisions']} decisions)" if model["enabled"]
                   else "finance model off (too few finance decisions)")
        unusual = ("" if s["unusual_referrers"] is None  # full scans only
                   else f", {s['unusual_referrers']} unusual referrers (anomaly flags)")
        print(f"{s['program']}: {s['conversions']} conversions scanned, "
              f"{s['flagged_conversions']} flagged, {rings}{unusual}; {learned} "
              f"({s['seconds']} s)")
    return 0


def _cmd_fraud_backtest(settings: Settings, file: Path, slug: str | None) -> int:
    import json

    from tracker.scoring.backtest import BacktestSettingsInvalid, backtest

    try:
        raw = json.loads(file.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise UsageError(f"{file}: no such file") from None
    except (ValueError, UnicodeDecodeError):
        raise UsageError(f"{file}: not valid JSON") from None

    async def work(conn: asyncpg.Connection) -> tuple[list[Any], int]:
        try:
            return await backtest(conn, raw, slug)
        except BacktestSettingsInvalid as exc:
            raise UsageError(f"{file}: {exc}") from None

    changes, replayed = _with_database(settings, work, slug, progress="fraud backtest")
    print(f"replayed {replayed} conversion risk assessment(s); {len(changes)} would change")
    for c in changes[:200]:
        print(f"{c.program} {c.event_id}: {c.before} -> {c.after} "
              f"(risk {c.score_before:.3f} -> {c.score_after:.3f}; {', '.join(c.reasons)})")
    if len(changes) > 200:
        print(f"... and {len(changes) - 200} more")
    return 0


def _cmd_rewards_release(settings: Settings, slug: str | None) -> int:
    from tracker.finance.clearance import release

    async def work(conn: asyncpg.Connection, replica: Replica) -> dict[str, Any]:
        return (await release(conn, slug, replica=replica, catch_up_s=CATCH_UP_S)).as_dict()

    done = _with_replica(settings, work, slug, progress="rewards release")
    decided = ", ".join(f"{n} {status}" for status, n in sorted(done["decided"].items()))
    print(f"rewards: {done['created']} conversion(s) rewarded, {done['reversed']} reversed; "
          f"holds ended: {decided or 'none'}")
    return 0


def _cmd_candidates_refresh(settings: Settings, slug: str | None) -> int:
    from tracker.asks.candidates import Refit, refresh

    async def work(conn: asyncpg.Connection, replica: Replica) -> list[tuple[str, Refit]]:
        rows = await conn.fetch(
            "SELECT id, slug FROM programs WHERE $1::text IS NULL OR slug = $1 ORDER BY id",
            slug)
        return [(r["slug"], await refresh(conn, r["id"], replica=replica,
                                          catch_up_s=CATCH_UP_S)) for r in rows]

    for name, fit in _with_replica(settings, work, slug, progress="candidates refresh"):
        auc = "" if fit.auc_holdout is None else f", holdout AUC {fit.auc_holdout:.3f}"
        print(f"{name}: {fit.kind}, trained on {fit.trained_on} customer(s) "
              f"({fit.positives} referred){auc}; {fit.scored} scored")
    return 0


def _cmd_payouts_export(settings: Settings, out: Path, fmt: str = "csv") -> int:
    import os

    from tracker.finance.payouts import PayoutFormatError, export_payouts

    if not out.parent.is_dir():
        raise UsageError(f"{out.parent}: no such folder")
    if out.is_dir():
        raise UsageError(f"{out}: is a folder")
    partial = out.with_name(f".{out.name}.partial")

    def write(text: str) -> None:
        # Written and synced before the batch commits; renamed into place after. Who is paid
        # what is for finance only: the file is created 0600 (not chmod-ed after, which would
        # leave a moment readable by all), and a partial file left by a crash is replaced.
        partial.unlink(missing_ok=True)
        fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with open(fd, "w", encoding="utf-8", newline="") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())

    async def work(conn: asyncpg.Connection) -> tuple[Any, list[Any]]:
        return await export_payouts(conn, f"cli:{os.environ.get('USER', 'unknown')}", write,
                                    fmt=fmt)

    try:
        batch_id, lines = _with_database(settings, work)
    except PayoutFormatError as exc:
        partial.unlink(missing_ok=True)
        raise UsageError(f"{exc}; nothing was paid") from None
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
    partial.replace(out)
    if batch_id is None:
        empty = "an empty file" if fmt == "paypal" else "the header only"
        print(f"nothing to pay; wrote {empty} to {out}")
        return 0
    totals: dict[str, int] = {}
    for line in lines:
        totals[line.currency] = totals.get(line.currency, 0) + line.amount
    print(f"batch {batch_id}: {len(lines)} payee(s), "
          f"{sum(len(ln.reward_ids) for ln in lines)} reward(s), "
          + ", ".join(f"{amount} {cur}" for cur, amount in sorted(totals.items()))
          + f" (minor units) -> {out}")
    if fmt != "csv":
        print("the recipient column is each payee's external id: it must be the e-mail "
              f"(or PayPal PayerID) {'PayPal' if fmt == 'paypal' else 'Wise'} pays, or be "
              "mapped to it before uploading")
    return 0


def _cmd_serve(settings: Settings) -> int:
    from geo.reader import GeoReader
    from tracker.web.server import serve

    GeoReader(settings.geoip_dir).close()  # a corrupt database stops start-up, naming the file
    settings = _resolve_dsn(settings)
    applied = _migrate(settings)
    settings = settings.with_overrides(migrate_database_url=None)  # the workers never need it
    for name in applied:
        print(f"applied migration {name}", file=sys.stderr)
    print(
        f"refguard serving on {settings.base_url} with {settings.workers} worker(s); "
        f"links are {settings.base_url}/r/<code>, metrics at {settings.base_url}/metrics",
        file=sys.stderr,
        flush=True,
    )
    return serve(settings)


def _cmd_migrate(settings: Settings) -> int:
    applied = _migrate(_resolve_dsn(settings))
    print(f"applied {len(applied)} migration(s)" + (": " + ", ".join(applied) if applied else ""))
    return 0


def _cmd_demo(settings: Settings, url: str | None, program: str, seed: int) -> int:
    from tracker.demo import serve

    try:
        base = serve.server_url(settings, url, program)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    return serve.run(settings, base, program=program, seed=seed, own_server=url is None)


def _cmd_db_url(settings: Settings, owner: bool) -> int:
    embedded = settings.database_url is None
    settings = _resolve_dsn(settings)
    if embedded:
        _migrate(settings)  # the embedded server's application role logs in once migrated
    print(settings.migrate_database_url if owner else settings.database_url)
    return 0


def _cmd_token_create(settings: Settings, role: str, name: str, person: str | None) -> int:
    from tracker.auth import create_token

    async def work(conn: asyncpg.Connection) -> str:
        token, _ = await create_token(conn, role, name, person)
        return token

    try:
        token = _with_database(settings, work)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    print(token)
    return 0


def _cmd_token_list(settings: Settings, as_json: bool) -> int:
    import json

    from tracker.auth import TokenInfo, list_tokens
    from tracker.formats import rfc3339

    async def work(conn: asyncpg.Connection) -> list[TokenInfo]:
        return await list_tokens(conn)

    tokens = _with_database(settings, work)
    if as_json:
        print(json.dumps([{**t.as_dict(), "created_at": rfc3339(t.created_at),
                           "revoked_at": t.revoked_at and rfc3339(t.revoked_at)}
                          for t in tokens]))
        return 0
    rows = [("ID", "ROLE", "NAME", "PERSON", "CREATED", "REVOKED")] + [
        (str(t.id), t.role, t.name, t.person or "-", f"{t.created_at:%Y-%m-%d %H:%M}",
         f"{t.revoked_at:%Y-%m-%d %H:%M}" if t.revoked_at else "-") for t in tokens]
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for r in rows:
        print("  ".join(cell.ljust(w) for cell, w in zip(r, widths, strict=True)).rstrip())
    return 0


def _cmd_token_revoke(settings: Settings, ref: str) -> int:
    from tracker.auth import TokenInfo, find_token, revoke_token
    from tracker.errors import Conflict, NotFound

    async def work(conn: asyncpg.Connection) -> tuple[TokenInfo, bool]:
        try:
            found = await find_token(conn, ref)
        except NotFound:
            raise UsageError(f"no token {ref!r} (see refguard token list)") from None
        except Conflict as exc:
            raise UsageError(str(exc)) from None
        return await revoke_token(conn, found.id, "cli")

    token, revoked = _with_database(settings, work)
    label = f"token {token.id} ({token.role}, {token.name})"
    print(f"revoked {label}; it stops working at once" if revoked
          else f"{label} was revoked already, at {token.revoked_at:%Y-%m-%d %H:%M:%S %Z}")
    return 0


def _cmd_token(settings: Settings, args: argparse.Namespace) -> int:
    action = args.token_command
    if action == "list":
        return _cmd_token_list(settings, args.json)
    if action == "revoke":
        return _cmd_token_revoke(settings, args.token)
    return _cmd_token_create(settings, args.role, args.name, args.person)


def main(argv: Sequence[str] | None = None) -> int:
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    args = _parser().parse_args(argv)
    try:
        settings = _settings(args)
        if args.command == "serve":
            return _cmd_serve(settings)
        if args.command == "migrate":
            return _cmd_migrate(settings)
        if args.command == "db-url":
            return _cmd_db_url(settings, args.owner)
        if args.command == "token":
            return _cmd_token(settings, args)
        if args.command == "attribution":
            return _cmd_attribution_run(settings, args.program)
        if args.command == "import":
            return _cmd_import(settings, args.clicks, args.conversions, args.events)
        if args.command == "fraud" and args.fraud_command == "backtest":
            return _cmd_fraud_backtest(settings, args.settings, args.program)
        if args.command == "fraud":
            return _cmd_fraud_scan(settings, args.program, args.json)
        if args.command == "geo":
            return _cmd_geo_lookup(settings, args.ip, args.json)
        if args.command == "rewards":
            return _cmd_rewards_release(settings, args.program)
        if args.command == "candidates":
            return _cmd_candidates_refresh(settings, args.program)
        if args.command == "payouts":
            return _cmd_payouts_export(settings, args.out, args.payout_format)
        if args.command == "demo":
            return _cmd_demo(settings, args.url, args.program, args.seed)
    except (SettingsError, UsageError) as exc:
        print(f"refguard: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    except Exception as exc:  # noqa: BLE001 (one line for the user; details with -v later)
        print(f"refguard: {type(exc).__name__}: {exc}".splitlines()[0], file=sys.stderr)
        return 1
    return 2


if __name__ == "__main__":
    sys.exit(main())
