"""Typed application state: every `web.AppKey` in one place."""

from __future__ import annotations

import asyncpg
from aiohttp import web

from tracker.auth import TokenCache
from tracker.clicks.journal import JournalWriter
from tracker.clicks.links import LinkCache
from tracker.clicks.redirect import Redirect
from tracker.db import Replica
from tracker.settings import Settings
from tracker.web.bodies import BodyReads

SETTINGS = web.AppKey("settings", Settings)
POOL = web.AppKey("pool", asyncpg.Pool)
# The heavy reads' database (reports): REFGUARD_READ_DATABASE_URL, or none (POOL).
REPLICA = web.AppKey("replica", Replica)
LINKS = web.AppKey("links", LinkCache)
# GET /r/{code}: aiohttp's handler and the fast path that tracker.web.server's protocol takes.
REDIRECT = web.AppKey("redirect", Redirect)
JOURNAL = web.AppKey("journal", JournalWriter)
TOKENS = web.AppKey("tokens", TokenCache)
BODY_READS = web.AppKey("body_reads", BodyReads)
