"""The application factory.

`create_app(settings)` registers its lifecycles in order: pool, link cache, then (when
`background` is true) the flusher and the jobs, then the journal. aiohttp closes them in reverse:
the journal seals its segment, the flusher drains it, and only then does the pool close.
`refguard serve` runs the HTTP workers with `background=False` and one background process
(`tracker.web.server.background_main`) with the flusher and jobs, so CPU spent on flushing never
sits on a redirect's latency.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import os
from collections.abc import AsyncIterator, Callable

import asyncpg
from aiohttp import web

from geo.reader import GeoReader
from tracker import metrics
from tracker.auth import TokenCache
from tracker.clicks.enrich import Enricher
from tracker.clicks.flusher import Flusher
from tracker.clicks.journal import JournalWriter
from tracker.clicks.links import LinkCache
from tracker.clicks.redirect import install as install_redirect
from tracker.clicks.redirect import make_redirect, make_signals_handler, visitor_key
from tracker.db import Replica, create_pool, database_url
from tracker.jobs import JobRunner, default_jobs
from tracker.listener import Listener
from tracker.metrics import RedirectStats, fold_forever
from tracker.settings import Settings
from tracker.web import keys
from tracker.web.api import (
    API_PREFIX,
    conversions,
    customers,
    fraud,
    openapi,
    reports,
    resources,
    rewards,
)
from tracker.web.api import asks as asks_api
from tracker.web.api import coupons as coupons_api
from tracker.web.api import events as events_api
from tracker.web.api import payouts as payouts_api
from tracker.web.api import shares as shares_api
from tracker.web.api import tokens as tokens_api
from tracker.web.api.errors import MAX_BODY, error_response, json_errors
from tracker.web.bodies import BodyReads
from tracker.web.review import views as review
from tracker.web.share import views as share_page

log = logging.getLogger(__name__)

LINGER_S = 2.0


def create_app(settings: Settings, *, background: bool = True) -> web.Application:
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    # After an answer given without reading the whole body (a 401 before it, a 408 for one too
    # slow), aiohttp reads and drops what still comes for `lingering_time` (default 10 s) before
    # closing, so that the client sees the answer: 2 s is enough for that, and it is as long
    # as a stranger's connection is held after its 408.
    app = web.Application(client_max_size=MAX_BODY, handler_args={"lingering_time": LINGER_S})
    dsn = database_url(settings)
    app[keys.SETTINGS] = settings
    # One LISTEN connection per worker (tracker.listener): the link and the token cache.
    listener = Listener(dsn, name="listener")
    tokens = app[keys.TOKENS] = TokenCache()
    tokens.follow(listener)
    # Bodies are read within a timeout, strangers' few at once (tracker.web.bodies); a test
    # may set its own limits here before the app starts.
    app[keys.BODY_READS] = BodyReads()
    stats = RedirectStats()
    links = LinkCache(dsn, snapshot=settings.data_dir / "links.snapshot.json", listener=listener)
    app[keys.LINKS] = links
    journal = JournalWriter(
        settings.journal_dir,
        fsync_ms=settings.journal_fsync_ms,
        max_lines=settings.flush_max_clicks,
        rotate_ms=settings.flush_interval_ms,
    )
    app[keys.JOURNAL] = journal

    replica = app[keys.REPLICA] = Replica(settings.read_database_url)

    async def pool_ctx(app: web.Application) -> AsyncIterator[None]:
        app[keys.POOL] = await create_pool(dsn, min_size=0, max_size=10)
        await replica.open()
        yield
        await replica.close()
        await app[keys.POOL].close()

    async def links_ctx(app: web.Application) -> AsyncIterator[None]:
        await links.start()
        yield
        await links.close()

    async def journal_ctx(app: web.Application) -> AsyncIterator[None]:
        journal.open()
        journal.start()
        folder = asyncio.create_task(fold_forever(stats), name="metrics-fold")
        yield
        folder.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await folder
        await journal.close()

    app.cleanup_ctx.append(pool_ctx)
    app.cleanup_ctx.append(links_ctx)
    app.cleanup_ctx.append(_tokens_ctx(tokens, dsn))
    if background:
        # Before the journal, so that at shutdown the journal seals first and the flusher drains.
        app.cleanup_ctx.append(_background_ctx(settings, dsn))
    app.cleanup_ctx.append(journal_ctx)

    signing_key = hashlib.blake2b(settings.secret_key, person=b"rg-signals").digest()
    redirect = app[keys.REDIRECT] = make_redirect(
        links, journal, stats, signing_key=signing_key,
        visitor_signing_key=visitor_key(settings.secret_key),
        secure_cookie=settings.base_url.startswith("https://"))
    # Its fast path is taken by the worker's connection protocol (tracker.web.server), ahead of
    # the router; these routes answer everything else under /r/.
    install_redirect(app, redirect.handler, make_signals_handler(links, journal, signing_key))
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/metrics", metrics.handle_metrics)
    review.add_routes(app)
    share_page.add_routes(app)
    # Handlers of the sub-application read the shared state through `request.config_dict`.
    app.add_subapp(API_PREFIX, _api())
    return app


def _api() -> web.Application:
    """The /api/v1 sub-application: every resource's routes, JSON 404s and 405s."""
    api = web.Application(client_max_size=MAX_BODY)
    resources.add_routes(api)
    conversions.add_routes(api)
    reports.add_routes(api)
    fraud.add_routes(api)
    rewards.add_routes(api)
    payouts_api.add_routes(api)
    tokens_api.add_routes(api)
    customers.add_routes(api)
    coupons_api.add_routes(api)
    asks_api.add_routes(api)
    events_api.add_routes(api)
    shares_api.add_routes(api)
    openapi.add_routes(api)
    for resource in api.router.resources():
        if isinstance(resource, web.Resource):
            # Last, so it only catches methods the resource does not serve: a JSON 405.
            resource.add_route("*", _api_method_not_allowed)
    api.router.add_route("*", "/{tail:.*}", _api_not_found)
    return api


@json_errors
async def _api_not_found(request: web.Request) -> web.Response:
    raise web.HTTPNotFound(reason="no such API route")


@json_errors
async def _api_method_not_allowed(request: web.Request) -> web.Response:
    resource = request.match_info.route.resource
    allowed = sorted({r.method for r in resource} - {"*"}) if resource is not None else []
    resp = error_response(405, "method_not_allowed",
                          f"{request.method} is not allowed here; use {', '.join(allowed)}")
    resp.headers["Allow"] = ", ".join(allowed)
    return resp


def _tokens_ctx(
    tokens: TokenCache, dsn: str
) -> Callable[[web.Application], AsyncIterator[None]]:
    async def ctx(app: web.Application) -> AsyncIterator[None]:
        # A revoked token is announced by the database: this worker drops it at once.
        await tokens.start(dsn)
        yield
        await tokens.close()

    return ctx


def _background_ctx(
    settings: Settings, dsn: str
) -> Callable[[web.Application], AsyncIterator[None]]:
    async def ctx(app: web.Application) -> AsyncIterator[None]:
        async with background(settings, dsn, pool=app[keys.POOL], replica=app[keys.REPLICA]):
            yield

    return ctx


@contextlib.asynccontextmanager
async def background(
    settings: Settings, dsn: str, pool: asyncpg.Pool | None = None, drain_s: float = 10.0,
    replica: Replica | None = None,
) -> AsyncIterator[Flusher]:
    """The flusher and (unless disabled) the jobs, for as long as the context is open; the
    jobs' heavy reads on `replica` (else one opened here from settings.read_database_url)."""
    own_pool = pool is None
    the_pool = await create_pool(dsn, min_size=0, max_size=4) if pool is None else pool
    own_replica = replica is None
    the_replica = Replica(settings.read_database_url) if replica is None else replica
    await the_replica.open()
    geo = GeoReader(settings.geoip_dir)
    enricher = Enricher(settings.secret_key, settings.trusted_proxies, geo=geo)
    flusher = Flusher(
        settings.journal_dir,
        dsn,
        enricher,
        interval_ms=settings.flush_interval_ms,
        max_clicks=settings.flush_max_clicks,
    )
    flusher.start()
    jobs = (JobRunner(the_pool, default_jobs(enricher, settings, the_replica, the_pool))
            if settings.run_jobs else None)
    if jobs is not None:
        jobs.start()
    try:
        yield flusher
    finally:
        if jobs is not None:
            await jobs.close()
        await flusher.close(drain_s)
        geo.close()
        if own_replica:
            await the_replica.close()
        if own_pool:
            await the_pool.close()


async def healthz(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok", "pid": os.getpid()})


async def readyz(request: web.Request) -> web.Response:
    app = request.app
    database = False
    try:
        async with asyncio.timeout(2):
            database = await app[keys.POOL].fetchval("SELECT 1") == 1
    except Exception:  # noqa: BLE001 (any failure means "not reachable")
        database = False
    journal = app[keys.JOURNAL].writable()
    ready = database and journal
    return web.json_response(
        {"status": "ready" if ready else "degraded", "database": database, "journal": journal,
         "links": len(app[keys.LINKS].links)},
        status=200 if ready else 503,
    )
