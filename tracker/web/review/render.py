"""The review page's templates (templates/), its stylesheet and script (static/) and the
security headers of every answer: one `tracker.web.pages.Pages`."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from tracker.web.pages import HEADERS, Pages
from tracker.web.review.filters import FILTERS

PAGES = Pages("tracker.web.review", "/review/static", ("review.css", "review.js"),
              key="refguard_review_templates", filters=FILTERS)
TEMPLATES = PAGES.key
ASSETS = PAGES.assets
STATIC_PATH = PAGES.static_path
__all__ = ["ASSETS", "HEADERS", "STATIC_PATH", "TEMPLATES", "page", "see_other", "setup"]


def setup(app: web.Application) -> None:
    PAGES.setup(app)


def page(request: web.Request, template: str, context: dict[str, Any], *,
         status: int = 200) -> web.Response:
    """A template rendered with the security headers. The context names the session (None
    before login), the title and, optionally, a flash message."""
    context.setdefault("flash", "")
    context.setdefault("session", None)
    return PAGES.render(request, template, context, status=status)


def see_other(location: str) -> web.Response:
    return PAGES.see_other(location)
