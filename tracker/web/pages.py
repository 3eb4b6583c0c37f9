"""Server-rendered pages: Jinja2 templates of a package (through aiohttp-jinja2, autoescaped),
its stylesheet and script served from memory with integrity hashes, and the security headers of
every answer. The review page (tracker.web.review.render) and the share page
(tracker.web.share) are each one `Pages`.

No aiohttp middleware: aiohttp_jinja2.setup adds one only for context processors, and none are
used; each handler passes its context explicitly.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import logging
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from importlib import resources
from typing import Any

import aiohttp_jinja2
import jinja2
from aiohttp import web

from tracker import db

log = logging.getLogger(__name__)
# Only the page's own stylesheet and script, from this origin (no inline style or script at
# all), each pinned to its content by its integrity attribute.
CSP = ("default-src 'none'; style-src 'self'; script-src 'self'; form-action 'self'; "
       "frame-ancestors 'none'; base-uri 'none'")
HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",
}
STATIC_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "Cache-Control": "public, max-age=86400",
    "Cross-Origin-Resource-Policy": "same-origin",
}


@dataclass(frozen=True, slots=True)
class Asset:
    name: str
    body: bytes
    content_type: str
    # The content's hash in the URL: a changed file is a new URL, so it may be cached long.
    url: str
    # Subresource Integrity: the browser applies the file only if it is exactly this one.
    integrity: str


def _asset(package: str, static_path: str, name: str, content_type: str) -> Asset:
    body = resources.files(package).joinpath("static", name).read_bytes()
    digest = hashlib.sha256(body).digest()
    return Asset(name, body, content_type, url=f"{static_path}/{name}?v={digest.hex()[:12]}",
                 integrity="sha256-" + base64.b64encode(digest).decode())


_TYPES = {".css": "text/css", ".js": "text/javascript"}


class Pages:
    """The templates (`<package>/templates`) and static files (`<package>/static`, served under
    `static_path`) of one set of pages, with the headers their answers carry."""

    def __init__(self, package: str, static_path: str, assets: tuple[str, ...], *,
                 key: str, headers: Mapping[str, str] = HEADERS,
                 filters: Mapping[str, Callable[..., Any]] | None = None) -> None:
        self.package = package
        self.static_path = static_path
        self.key = web.AppKey(key, jinja2.Environment)
        self.assets = {name: _asset(package, static_path, name, _TYPES[name[name.rfind("."):]])
                       for name in assets}
        self.headers = dict(headers)
        self.filters = dict(filters or {})

    def setup(self, app: web.Application) -> None:
        """The template environment on `app` (no context processors: they would add a
        middleware), and the route of the static files."""
        env = aiohttp_jinja2.setup(
            app, app_key=self.key, default_helpers=False, filters=self.filters,
            loader=jinja2.PackageLoader(self.package, "templates"), autoescape=True,
            undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True)
        env.globals["assets"] = self.assets
        app.router.add_get(self.static_path + "/{name}", self.static)

    def render(self, request: web.Request, template: str, context: dict[str, Any], *,
               status: int = 200) -> web.Response:
        """A template rendered with the security headers; `status` is in the context too."""
        context["status"] = status
        response = aiohttp_jinja2.render_template(template, request, context,
                                                  app_key=self.key, status=status)
        response.headers.update(self.headers)
        return response

    def see_other(self, location: str) -> web.Response:
        return web.Response(status=303, headers={**self.headers, "Location": location})

    async def static(self, request: web.Request) -> web.Response:
        asset = self.assets.get(request.match_info["name"])
        if asset is None:
            raise web.HTTPNotFound()
        return web.Response(body=asset.body, content_type=asset.content_type, charset="utf-8",
                            headers=STATIC_HEADERS)


PageHandler = Callable[[web.Request], Awaitable[web.Response]]


def database_guarded(handler: PageHandler) -> PageHandler:
    """A page handler whose database is lost (a restart, a failover: `tracker.db.UNAVAILABLE`)
    answers a plain 503 with `Retry-After: 1`, logged as a warning, never a 500; the pool
    replaces the dead connection, so a later request succeeds. The review page's guards
    (tracker.web.review.sessions) and the unguarded page handlers (login, the share page) use
    it: the JSON API's counterpart is tracker.web.api.errors."""

    @functools.wraps(handler)
    async def guarded(request: web.Request) -> web.Response:
        try:
            return await handler(request)
        except db.UNAVAILABLE as exc:
            log.warning("database unavailable for %s %s: %s", request.method, request.path, exc)
            resp = web.Response(status=503, text="The database is unavailable; retry shortly.",
                                headers={**HEADERS, "Retry-After": "1"})
            resp.force_close()
            return resp

    return guarded
