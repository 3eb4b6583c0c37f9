"""The share page: GET /s/{token} shows the referrer's link, the pre-written message and a
button per channel; POST /s/{token}/share (the buttons: one form, the pressed button names its
channel) records a share and answers a 303 to the channel's target, so every button works
without JavaScript. The page's script (static/share.js) copies, opens the phone's share sheet
(shown only where the browser has one), and asks for JSON instead of the 303 for those two.

Public: the token (tracker.signing.share_token) is the only key. A token refguard did not make,
a referrer that is gone or a disabled link is a plain 404 page; a POST from another site's page
is refused (403), as the review page's login is (tracker.web.review.sessions.cross_site). The
domain side is tracker.asks.sharing.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlencode

from aiohttp import web

from tracker.asks.sharing import LABELS, TARGET_SOURCES, SharePage, message, open_page, share
from tracker.programs.queries import referrer_link
from tracker.web import keys
from tracker.web.bodies import BodyError, read_form
from tracker.web.pages import CSP, HEADERS, Pages, database_guarded
from tracker.web.review.sessions import body_refused, cross_site
from tracker.web.review.views import number

FORM_MAX = 1024  # a channel name and an ask id
# The review page's policy, plus: the script asks for JSON (connect-src), and a button's form
# is redirected to its channel (CSP holds a form's redirects to form-action too).
SHARE_CSP = CSP.replace("form-action 'self'",
                        "form-action 'self' " + " ".join(TARGET_SOURCES)) \
    + "; connect-src 'self'"
PAGES = Pages("tracker.web.share", "/s/static", ("share.css", "share.js"),
              key="refguard_share_templates",
              # Referrer-Policy same-origin (HEADERS): the token in the address is never sent
              # on to the channels' sites, while the page's own POSTs keep their Origin
              # (no-referrer would make it "null", which cross_site refuses).
              headers={**HEADERS, "Content-Security-Policy": SHARE_CSP})


def _missing(request: web.Request, status: int = 404,
             text: str = "This share page does not exist.") -> web.Response:
    return PAGES.render(request, "missing.html", {"title": "Not found", "text": text},
                        status=status)


def _ask(raw: str | None) -> int | None:
    return number(raw) if raw else None


async def _open(request: web.Request) -> SharePage | None:
    token = request.match_info["token"]
    settings = request.config_dict[keys.SETTINGS]
    async with request.config_dict[keys.POOL].acquire() as conn:
        return await open_page(conn, settings.secret_key, settings.base_url, token)


@database_guarded
async def show(request: web.Request) -> web.Response:
    page = await _open(request)
    if page is None:
        return _missing(request)
    text, note = page.message, ""
    if request.query.get("copy") == "1" and "copy" in page.channels:
        # After the copy button without JavaScript: the copy channel's message to copy by hand.
        async with request.config_dict[keys.POOL].acquire() as conn:
            link = await referrer_link(conn, page.referrer.program_id,
                                       page.referrer.referrer_id, "copy")
        if link is not None:
            url = f"{request.config_dict[keys.SETTINGS].base_url}/r/{link.code}"
            text = message(page.referrer, url, "copy")
        note = "Select the message and copy it."
    context: dict[str, Any] = {
        "title": f"Share {page.referrer.program_name}",
        "page": page, "message": text, "note": note, "labels": LABELS,
        "token": request.match_info["token"], "ask": _ask(request.query.get("ask")),
    }
    return PAGES.render(request, "share.html", context)


@database_guarded
async def press(request: web.Request) -> web.Response:
    if cross_site(request):
        return _missing(request, 403, "Shares are recorded only from the share page itself.")
    try:
        form = await read_form(request, request.app[keys.BODY_READS], limit=FORM_MAX,
                               unauthenticated=True)
    except BodyError as exc:
        return body_refused(exc)
    page = await _open(request)
    if page is None:
        return _missing(request)
    channel = form.get("channel", "")
    ask = _ask(form.get("ask"))
    base_url = request.config_dict[keys.SETTINGS].base_url
    async with request.config_dict[keys.POOL].acquire() as conn:
        shared = await share(conn, page, base_url, channel, ask)
    if shared is None:
        return _missing(request, 404, "This channel is not on this share page.")
    if "application/json" in request.headers.get("Accept", ""):
        response = web.json_response({"channel": shared.channel, "link": shared.link,
                                      "message": shared.message, "target": shared.target,
                                      "recorded": shared.recorded})
        response.headers.update(PAGES.headers)
        return response
    if shared.target is not None:
        return PAGES.see_other(shared.target)
    query = {"copy": "1"} | ({"ask": str(ask)} if ask is not None else {})
    return PAGES.see_other(f"/s/{request.match_info['token']}?{urlencode(query)}#message")


def add_routes(app: web.Application) -> None:
    PAGES.setup(app)
    app.router.add_get("/s/{token}", show)
    app.router.add_post("/s/{token}/share", press)
