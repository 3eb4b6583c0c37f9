"""The review page's templates (Jinja2 through aiohttp-jinja2, autoescaped), its stylesheet and
script (static files served from memory), and the security headers of every answer.

No aiohttp middleware: aiohttp_jinja2.setup adds one only for context processors, and none are
used; each handler passes its context (the session with it) explicitly.
"""

from __future__ import annotations

import base64
import hashlib
from dataclasses import dataclass
from importlib import resources
from typing import Any

import aiohttp_jinja2
import jinja2
from aiohttp import web

from tracker.web.review.filters import FILTERS

PACKAGE = "tracker.web.review"
TEMPLATES = web.AppKey("refguard_review_templates", jinja2.Environment)
STATIC_PATH = "/review/static"


@dataclass(frozen=True, slots=True)
class Asset:
    name: str
    body: bytes
    content_type: str
    # The content's hash in the URL: a changed file is a new URL, so it may be cached long.
    url: str
    # Subresource Integrity: the browser applies the file only if it is exactly this one.
    integrity: str


def _asset(name: str, content_type: str) -> Asset:
    body = resources.files(PACKAGE).joinpath("static", name).read_bytes()
    digest = hashlib.sha256(body).digest()
    return Asset(name, body, content_type, url=f"{STATIC_PATH}/{name}?v={digest.hex()[:12]}",
                 integrity="sha256-" + base64.b64encode(digest).decode())


ASSETS = {a.name: a for a in (_asset("review.css", "text/css"),
                              _asset("review.js", "text/javascript"))}

# Only the page's own stylesheet and script, from this origin (no inline style or script at
# all), each pinned to its content by its integrity attribute.
HEADERS = {
    "Content-Security-Policy": "default-src 'none'; style-src 'self'; script-src 'self'; "
                               "form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
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


def setup(app: web.Application) -> None:
    """The template environment on `app` (no context processors: they would add a
    middleware), and the route of the static files."""
    env = aiohttp_jinja2.setup(
        app, app_key=TEMPLATES, default_helpers=False, filters=FILTERS,
        loader=jinja2.PackageLoader(PACKAGE, "templates"), autoescape=True,
        undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True)
    env.globals["assets"] = ASSETS
    app.router.add_get(STATIC_PATH + "/{name}", static)


def page(request: web.Request, template: str, context: dict[str, Any], *,
         status: int = 200) -> web.Response:
    """A template rendered with the security headers. The context names the session (None
    before login), the title and, optionally, a flash message."""
    context.setdefault("flash", "")
    context.setdefault("session", None)
    context["status"] = status
    response = aiohttp_jinja2.render_template(template, request, context, app_key=TEMPLATES,
                                              status=status)
    response.headers.update(HEADERS)
    return response


def see_other(location: str) -> web.Response:
    return web.Response(status=303, headers={**HEADERS, "Location": location})


async def static(request: web.Request) -> web.Response:
    asset = ASSETS.get(request.match_info["name"])
    if asset is None:
        raise web.HTTPNotFound()
    return web.Response(body=asset.body, content_type=asset.content_type, charset="utf-8",
                        headers=STATIC_HEADERS)
