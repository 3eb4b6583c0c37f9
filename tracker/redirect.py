"""GET /r/{code}: the hot path.

Resolve the link from memory, journal the click, answer 302. No database, no cookie parser, no
URL objects, no datetime or UUID objects: every microsecond here costs two to three in
throughput. Enrichment (client IP behind proxies, fingerprint, bots, geo) happens in the flusher.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from urllib.parse import quote

from aiohttp import hdrs, web

from tracker.journal import SEP, VERSION, ClickIds, JournalWriter, encode_fallback
from tracker.links import LinkCache, LinkEntry
from tracker.metrics import JOURNAL_WRITE_FAILURES, RedirectStats

log = logging.getLogger(__name__)

VISITOR_COOKIE = "rg_vid"
COOKIE_MAX_AGE = 365 * 24 * 3600
_SEPARATORS = 20  # len(journal.FIELDS) - 1

NOT_FOUND_HTML = (
    "<!doctype html><html><head><meta charset=utf-8><title>Link not found</title></head>"
    "<body style=\"font-family:system-ui;margin:3em\"><h1>Link not found</h1>"
    "<p>This referral link does not exist or is no longer active.</p></body></html>"
)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def _visitor_from_cookie(cookie: str) -> str:
    """The rg_vid value from a Cookie header, or "" (hand-parsed: http.cookies is slow)."""
    i = cookie.find("rg_vid=")
    while i > 0 and cookie[i - 1] not in " ;":
        i = cookie.find("rg_vid=", i + 7)
    if i < 0:
        return ""
    end = cookie.find(";", i + 7)
    value = cookie[i + 7 :] if end < 0 else cookie[i + 7 : end]
    value = value.strip().strip('"')
    if 0 < len(value) <= 64 and value.isascii() and value.replace("-", "").isalnum():
        return value
    return ""


def _clean_query(qs: str) -> str:
    if "#" in qs:
        qs = qs.partition("#")[0]
    if "rg_cid=" in qs:
        qs = "&".join(p for p in qs.split("&") if p and not p.startswith("rg_cid="))
    if not qs.isascii():
        qs = quote(qs, safe="=&;%+:/?@!$'()*,~-._")
    return qs


def make_redirect_handler(
    links: LinkCache,
    journal: JournalWriter,
    stats: RedirectStats,
    *,
    secure_cookie: bool = False,
) -> Handler:
    get_link = links.get
    ids = ClickIds()
    perf = time.perf_counter
    now_ns = time.time_ns
    write = journal.write
    observe = stats.observe
    cookie_tail = f"; Max-Age={COOKIE_MAX_AGE}; Path=/; HttpOnly; SameSite=Lax"
    if secure_cookie:
        cookie_tail += "; Secure"
    h_cookie = hdrs.COOKIE
    h_ua = hdrs.USER_AGENT
    h_lang = hdrs.ACCEPT_LANGUAGE
    h_referer = hdrs.REFERER
    h_xff = hdrs.X_FORWARDED_FOR
    h_fwd = hdrs.FORWARDED
    h_accept = hdrs.ACCEPT
    h_ch_ua = "Sec-CH-UA"
    h_ch_mobile = "Sec-CH-UA-Mobile"
    h_ch_platform = "Sec-CH-UA-Platform"
    h_sec_purpose = "Sec-Purpose"
    h_purpose = "Purpose"

    async def redirect(request: web.Request) -> web.StreamResponse:
        t0 = perf()
        code = request.match_info["code"]
        entry = get_link(code)
        if entry is None:
            # Possibly created a moment ago on another worker: one look-up, then remembered.
            entry = await links.lookup_missing(code)
        if entry is None or not entry.enabled:
            return _not_served(stats, entry)
        headers = request.headers
        cookie = headers.get(h_cookie)
        vid = _visitor_from_cookie(cookie) if cookie else ""
        raw_path = request.raw_path
        q = raw_path.find("?")
        qs = raw_path[q + 1 :] if q >= 0 else ""
        if qs and ("rg_cid=" in qs or "#" in qs or not qs.isascii()):
            qs = _clean_query(qs)
        if request.method == "HEAD":
            # Answered like a GET (link checkers follow it) but not a click: no id, no record.
            stats.count_302 += 1
            return web.Response(
                status=302,
                headers={
                    "Location": entry.prefix + qs + entry.fragment if qs else entry.destination,
                    "Cache-Control": "private, no-store",
                },
            )
        ns = now_ns()
        cid = ids.new(ns)
        new_visitor = not vid
        if new_visitor:
            vid = cid
        peer = request.transport.get_extra_info("peername") if request.transport else None
        fields = [
            VERSION,
            str(ns // 1000),
            cid,
            entry.journal_key,
            vid,
            "1" if new_visitor else "",
            peer[0] if peer else "",
            headers.get(h_xff, ""),
            headers.get(h_fwd, ""),
            headers.get(h_ua, ""),
            headers.get(h_lang, ""),
            headers.get(h_referer, ""),
            headers.get(h_ch_ua, ""),
            headers.get(h_ch_mobile, ""),
            headers.get(h_ch_platform, ""),
            headers.get(h_sec_purpose) or headers.get(h_purpose, ""),
            headers.get(h_accept, ""),
            qs,
        ]
        line = SEP.join(fields)
        if line.count(SEP) != _SEPARATORS or "\n" in line:
            line = encode_fallback(
                fields[:3] + entry.journal_key.split(SEP) + fields[4:]
            ).rstrip("\n")
        try:
            write((line + "\n").encode("utf-8", "surrogateescape"))
        except OSError:
            # An answered redirect must be a recorded click; without a journal we cannot promise
            # that, so the visitor is asked to retry rather than silently lost.
            JOURNAL_WRITE_FAILURES.inc()
            stats.count_503 += 1
            log.exception("journal write failed")
            return web.Response(status=503, text="temporarily unavailable",
                                headers={"Retry-After": "1"})
        location = (
            f"{entry.prefix}{qs}&rg_cid={cid}{entry.fragment}"
            if qs
            else f"{entry.prefix}rg_cid={cid}{entry.fragment}"
        )
        resp_headers = {"Location": location, "Cache-Control": "private, no-store"}
        if new_visitor:
            resp_headers["Set-Cookie"] = f"rg_vid={vid}{cookie_tail}"
        stats.count_302 += 1
        observe(perf() - t0)
        return web.Response(status=302, headers=resp_headers)

    return redirect


def _not_served(stats: RedirectStats, entry: LinkEntry | None) -> web.Response:
    """Unknown or disabled link: the program's fallback URL if it has one, else a 404 page."""
    if entry is not None and entry.fallback_url:
        stats.count_302 += 1
        return web.Response(
            status=302,
            headers={"Location": entry.fallback_url, "Cache-Control": "private, no-store"},
        )
    stats.count_404 += 1
    return web.Response(
        status=404,
        text=NOT_FOUND_HTML,
        content_type="text/html",
        headers={"Cache-Control": "no-store"},
    )


def install(app: web.Application, handler: Handler) -> None:
    app.router.add_get(r"/r/{code}", handler, name="redirect")
