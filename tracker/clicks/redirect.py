"""GET /r/{code}: the hot path.

Resolve the link from memory, journal the click, answer 302. No database, no cookie parser, no
URL objects, no datetime or UUID objects: every microsecond here costs two to three in
throughput. Enrichment (client IP behind proxies, fingerprint, bots, geo) happens in the flusher.

The visitor cookie `rg_vid` is `<visitor id>.<signature>`: the id is 96 random bits (24 hex
digits, never the shape of a click id, and never shown in a URL), the signature a keyed BLAKE2b
MAC of the id, 96 bits (24 hex digits), under a key derived from the server's secret
(`visitor_key`). A cookie whose signature does not verify (forged, an old unsigned one, another
server's) is a new visitor: nobody can join a visitor whose cookie they have not got, so a
click id seen in a landing URL no longer lets anyone add clicks to its visitor (issue 12).
What is stored and shown as `visitor_id` is the id alone. Keyed BLAKE2b rather than HMAC-SHA256:
the same strength as a truncated HMAC, at a third of its cost here (0.5 against 1.3 us).

Two ways in share the click: aiohttp's handler, and a fast path that the worker's connection
protocol (tracker.web.protocol) offers a plain GET before aiohttp builds a request, a task and a
Response for it; the fast path answers only an enabled link in memory with a plain 302, from a
prebuilt head, once the click's journal group is written, and declines everything else.

The visitor's query is added to the destination's, but never one of its keys: a key the
destination sets itself (`coupon=`) or `rg_cid` in any spelling that decodes or that a backend
folds into that name (`rg%5Fcid`, `rg.cid`, `rg_cid[]`) is dropped, so neither the merchant's
own parameters nor the click id can be overridden by whoever writes the link.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import hmac
import json
import logging
import os
import re
import time
from collections.abc import Awaitable, Callable
from typing import NamedTuple
from urllib.parse import quote

import jinja2
from aiohttp import StreamReader, hdrs, web
from aiohttp.http import RawRequestMessage
from markupsafe import Markup
from multidict import CIMultiDictProxy, istr

from tracker.clicks.journal import (
    N_SEPARATORS,
    SEP,
    SIGNALS_VERSION,
    VERSION,
    ClickIds,
    JournalWriter,
    encode_fallback,
)
from tracker.clicks.links import LinkCache, LinkEntry, parameter_names
from tracker.metrics import RedirectStats

log = logging.getLogger(__name__)

VISITOR_COOKIE = "rg_vid"
_VID = VISITOR_COOKIE + "="
COOKIE_MAX_AGE = 365 * 24 * 3600
SIGNALS_MAX_BYTES = 4096
SIGNALS_READ_S = 10.0  # the beacon's body must arrive within this
_CID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-7[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
# The fast path's answer for one request: the head of its 302 once the click is journaled, or
# None when the click could not be written (aiohttp's handler then takes the request).
FastAnswer = Callable[[bytes | None], None]
# (request, the connection's peer address, where the answer goes) -> whether it took it.
FastRedirect = Callable[[RawRequestMessage, str, FastAnswer], bool]


VISITOR_ID_BYTES = 12  # 24 hex digits: a 32-bit second, then 64 random bits (VisitorIds)
_RANDOM_BYTES = 8
SIGNATURE_BYTES = 12  # a 96-bit MAC: 24 hex digits
_ID_LEN = 2 * VISITOR_ID_BYTES
_COOKIE_LEN = _ID_LEN + 1 + 2 * SIGNATURE_BYTES  # 49: fits a conversion's visitor_id (64)


def visitor_key(secret_key: bytes) -> bytes:
    """The key that signs visitor cookies: its own, derived from the server's secret."""
    return hashlib.blake2b(secret_key, person=b"rg-visitor").digest()


def visitor_signature(key: bytes, visitor_id: str) -> str:
    """The MAC of a visitor id, as the cookie carries it after the dot (the redirect computes
    the same inline for a new visitor)."""
    return hashlib.blake2b(visitor_id.encode(), key=key, digest_size=SIGNATURE_BYTES).hexdigest()


class VisitorIds:
    """New visitor ids, 24 hex digits: the second they were made in (Unix time, 32 bits, as a
    MongoDB ObjectId starts) and then 64 bits of os.urandom, read for many ids at a time (one
    getrandom call per BATCH new visitors instead of one each: 0.16 against 0.31 us of CPU an
    id). Time first, so a new visitor's click goes in at the right end of the clicks' index on
    (program_id, visitor_id, ts) instead of on a random leaf of it (the UUIDv7 idea); the random
    part keeps ids unguessable and apart across workers (two ids of one second collide with
    probability 2^-64); the id shows the second of the visitor's first click to whoever reads
    the cookie. Same length and alphabet as the ids of 96 random bits made before, so their
    cookies stay valid; nothing reads the time back (it only orders, and nothing relied on ids
    being uniform: reports split visitors by a hash of the whole id). Measured with
    bench.flush_stages, 200,000 clicks a shape, three pairs: PostgreSQL CPU per click 11.4-12.7
    -> 8.6-10.2 us for new visitors only (wrk), 19.4-20.6 -> 15.2-18.8 us for browser-like
    traffic (flusher's unchanged); with 16 MB of shared_buffers (an index larger than the
    cache) 11.2 -> 9.1-9.2 and 29.6-30.9 -> 24.4-26.4."""

    __slots__ = ("_hex", "_next", "_pos", "_prefix")
    BATCH = 256

    def __init__(self) -> None:
        self._hex = ""
        self._pos = 0
        self._prefix = ""
        self._next = 0  # the time (ns) from which _prefix is out of date

    def new(self, now_ns: int) -> str:
        """A new id made at `now_ns` (the click's time.time_ns(), which the redirect has)."""
        pos = self._pos
        if pos >= len(self._hex):
            self._hex = os.urandom(_RANDOM_BYTES * self.BATCH).hex()
            pos = 0
        if not 0 < self._next - now_ns <= 1_000_000_000:  # another second (or the clock fell)
            second = now_ns // 1_000_000_000
            self._prefix = f"{second & 0xFFFF_FFFF:08x}"  # wraps in 2106: only the order suffers
            self._next = (second + 1) * 1_000_000_000
        self._pos = pos + 2 * _RANDOM_BYTES
        return self._prefix + self._hex[pos : pos + 2 * _RANDOM_BYTES]


def _visitor_from_cookie(cookie: str, key: bytes) -> str:
    """The visitor id of a validly signed rg_vid in a Cookie header, or "" (hand-parsed:
    http.cookies is slow). Of several rg_vid cookies the first that verifies counts."""
    i = cookie.find(_VID)
    while i >= 0:
        if i == 0 or cookie[i - 1] in " ;":
            start = i + len(_VID)
            end = cookie.find(";", start)
            value = (cookie[start:] if end < 0 else cookie[start:end]).strip().strip('"')
            if (len(value) == _COOKIE_LEN and value[_ID_LEN] == "." and value.isascii()
                    and hmac.compare_digest(value[_ID_LEN + 1:],
                                            visitor_signature(key, value[:_ID_LEN]))):
                return value[:_ID_LEN]
        i = cookie.find(_VID, i + len(_VID))
    return ""


def _clean_query(qs: str, taken: frozenset[str]) -> str:
    """The visitor's query without a fragment, empty pairs and pairs whose key names a taken
    parameter (also where ";" separates pairs, as some backends take it), ASCII-safe."""
    if "#" in qs:
        qs = qs.partition("#")[0]
    kept = []
    for pair in qs.split("&"):
        if pair and not any(name in taken for sub in pair.split(";")
                            for name in parameter_names(sub.partition("=")[0])):
            kept.append(pair)
    qs = "&".join(kept)
    if not qs.isascii():
        qs = quote(qs, safe="=&;%+:/?@!$'()*,~-._")
    return qs


def signal_token(key: bytes, click_id: str) -> str:
    """What the fingerprint page must send back with its signals for this click."""
    return hmac.new(key, click_id.encode(), hashlib.sha256).hexdigest()[:32]


class Redirect(NamedTuple):
    """The redirect's two ways in, over one journal and one set of counters.

    `handler` is aiohttp's handler for `GET /r/{code}` and answers every case. `fast` is called
    by a worker's connection protocol (tracker.web.protocol.RedirectProtocol) ahead of aiohttp,
    for a plain HTTP/1.1 GET without a body: it takes a request only for an enabled link that is
    in memory and answers with a plain 302 (no fingerprint page), and returns False for anything
    else, which aiohttp then routes as always (unknown codes, HEAD, other methods and paths).
    """

    handler: Handler
    fast: FastRedirect


# Closures over local names on purpose: the per-request path makes no attribute look-ups
# (measured by bench/redirect); `click` and `visitor_query` are what its two ways in share.
def make_redirect(  # noqa: PLR0915
    links: LinkCache,
    journal: JournalWriter,
    stats: RedirectStats,
    *,
    visitor_signing_key: bytes,
    secure_cookie: bool = False,
    signing_key: bytes = b"",
) -> Redirect:
    if not visitor_signing_key:
        raise ValueError("the visitor cookie needs a signing key")
    vkey = visitor_signing_key
    # The keyed MAC's state after the key block, copied per new visitor (a keyed constructor
    # hashes the key again every time: measured 2.1 against 1.2 us).
    mac_state = hashlib.blake2b(key=vkey, digest_size=SIGNATURE_BYTES)
    new_visitor_id = VisitorIds().new
    get_link = links.get
    ids = ClickIds()
    perf = time.perf_counter
    now_ns = time.time_ns
    submit = journal.submit
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
    # istr, as aiohttp's own names: a plain str is case-folded again on every look-up.
    h_ch_ua = istr("Sec-CH-UA")
    h_ch_mobile = istr("Sec-CH-UA-Mobile")
    h_ch_platform = istr("Sec-CH-UA-Platform")
    h_sec_purpose = istr("Sec-Purpose")
    h_purpose = istr("Purpose")
    # The answer's names too: a Response built from istr keys costs 0.9 us, from str 1.3 us.
    h_cache_control = hdrs.CACHE_CONTROL
    h_location = hdrs.LOCATION
    h_set_cookie = hdrs.SET_COOKIE

    def visitor_query(entry: LinkEntry, raw_path: str) -> str:
        """The visitor's query as the destination takes it."""
        q = raw_path.find("?")
        if q < 0:
            return ""
        qs = raw_path[q + 1 :]
        # Parsed only when something in it could clash: the destination has a query of its
        # own, or the visitor's could spell rg_cid or need escaping.
        taken = entry.taken
        if (len(taken) > 1 or "cid" in qs or "%" in qs or "+" in qs or "[" in qs
                or "#" in qs or not qs.isascii()):
            qs = _clean_query(qs, taken)
        return qs

    def click(
        entry: LinkEntry, qs: str, headers: CIMultiDictProxy[str], remote: str
    ) -> tuple[bytes, str, str, str]:
        """A new click: its journal line, its id, the Location it answers with, and the visitor
        cookie to set ("" for a returning visitor)."""
        cookie = headers.get(h_cookie)
        vid = _visitor_from_cookie(cookie, vkey) if cookie else ""
        ns = now_ns()
        cid = ids.new(ns)
        new_visitor = not vid
        set_cookie = ""
        if new_visitor:
            # A new id (its second, then random bits), never the click id (that one is shown
            # in the landing URL), signed.
            vid = new_visitor_id(ns)
            mac = mac_state.copy()
            mac.update(vid.encode())
            set_cookie = f"{_VID}{vid}.{mac.hexdigest()}{cookie_tail}"
        fields = [
            VERSION,
            str(ns // 1000),
            cid,
            entry.journal_key,
            vid,
            "1" if new_visitor else "",
            remote,
            # Every line of these, in order: a proxy may append its own line after the
            # client's, and the client's own is never the one to believe. (Most requests
            # carry neither: one look-up each then.)
            ", ".join(headers.getall(h_xff)) if h_xff in headers else "",
            ", ".join(headers.getall(h_fwd)) if h_fwd in headers else "",
            headers.get(h_ua, ""),
            headers.get(h_lang, ""),
            headers.get(h_referer, ""),
            headers.get(h_ch_ua, ""),
            headers.get(h_ch_mobile, ""),
            headers.get(h_ch_platform, ""),
            headers.get(h_sec_purpose) or headers.get(h_purpose) or "",
            headers.get(h_accept, ""),
            qs,
            "page" if entry.browser_page else "",
        ]
        line = SEP.join(fields)
        if line.count(SEP) != N_SEPARATORS or "\n" in line:
            line = encode_fallback(
                fields[:3] + entry.journal_key.split(SEP) + fields[4:]
            ).rstrip("\n")
        location = (
            f"{entry.prefix}{qs}&rg_cid={cid}{entry.fragment}"
            if qs
            else f"{entry.prefix}rg_cid={cid}{entry.fragment}"
        )
        return (line + "\n").encode("utf-8", "surrogateescape"), cid, location, set_cookie

    async def redirect(request: web.Request) -> web.StreamResponse:
        t0 = perf()
        code = request.match_info["code"]
        entry = get_link(code)
        if entry is None:
            # Possibly created a moment ago on another worker: one look-up, then remembered.
            entry = await links.lookup_missing(code)
        if entry is None or not entry.enabled:
            return _not_served(stats, entry)
        qs = visitor_query(entry, request.raw_path)
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
        # request.remote: the connection's peer, kept by aiohttp (no syscall)
        line, cid, location, set_cookie = click(entry, qs, request.headers, request.remote or "")
        # Written with the other clicks of this loop iteration, before any of them is answered.
        written, index = submit(line)
        failed = await written
        if failed and index in failed:
            # An answered redirect must be a recorded click; without a journal we cannot promise
            # that, so the visitor is asked to retry rather than silently lost (the journal
            # logged why).
            stats.count_503 += 1
            return web.Response(status=503, text="temporarily unavailable",
                                headers={"Retry-After": "1"})
        resp_headers = {h_cache_control: "private, no-store"}
        if set_cookie:
            resp_headers[h_set_cookie] = set_cookie
        if entry.browser_page:
            stats.count_200 += 1
            return web.Response(
                status=200, text=fingerprint_page(code, cid, location,
                                                  signal_token(signing_key, cid)),
                content_type="text/html", headers=resp_headers,
            )
        resp_headers[h_location] = location
        stats.count_302 += 1
        observe(perf() - t0)
        return web.Response(status=302, headers=resp_headers)

    # The fast path's answers wait for their journal group: one done-callback per group (not
    # one per click) answers all of the group's clicks in order.
    group: asyncio.Future[frozenset[int]] | None = None
    waiting: list[tuple[int, float, bytes, FastAnswer]] = []

    def answer_group(
        done: asyncio.Future[frozenset[int]], answers: list[tuple[int, float, bytes, FastAnswer]]
    ) -> None:
        failed = done.result() if not done.cancelled() else None
        for index, t0, head, answer in answers:
            try:
                if failed is None or index in failed:
                    # Not written: aiohttp's handler takes the request again (it answers 503
                    # while the journal fails). Nothing of this attempt reached the journal whole.
                    answer(None)
                else:
                    stats.count_302 += 1
                    answer(head)
                    observe(perf() - t0)
            except Exception:
                # One connection's trouble must not leave the rest of the group unanswered.
                log.exception("answering a redirect failed")

    def fast(message: RawRequestMessage, remote: str, answer: FastAnswer) -> bool:
        nonlocal group, waiting
        path = message.path
        if message.method != "GET" or not path.startswith("/r/"):
            return False
        t0 = perf()
        q = path.find("?")
        # Only a code that is in memory as it stands: one with escapes, a slash or anything
        # else aiohttp's router might read otherwise is not, and goes the normal way.
        entry = get_link(path[3:q] if q >= 0 else path[3:])
        if entry is None or not entry.enabled or entry.browser_page:
            return False
        line, _, location, set_cookie = click(entry, visitor_query(entry, path), message.headers,
                                              remote)
        # The same headers in the same order as aiohttp writes the handler's Response; the
        # protocol adds Content-Length, Date, Server (and Connection) as aiohttp does.
        cookie_line = f"Set-Cookie: {set_cookie}\r\n" if set_cookie else ""
        head = (f"HTTP/1.1 302 Found\r\nCache-Control: private, no-store\r\n{cookie_line}"
                f"Location: {location}\r\n").encode()
        done, index = submit(line)
        if done is not group:
            group, waiting = done, []
            done.add_done_callback(functools.partial(answer_group, answers=waiting))
        waiting.append((index, t0, head, answer))
        return True

    return Redirect(redirect, fast)


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


def _js(value: str) -> Markup:
    """A string as a JavaScript literal that cannot end the <script> element it is in (JSON
    escapes quotes, backslashes, controls and all non-ASCII; "</" is broken up), so safe to
    place in the script unescaped."""
    return Markup(json.dumps(value).replace("</", "<\\/"))  # noqa: S704 (escaped just now)


# Compiled once: the page is rendered on the hot path, a template look-up per click is waste.
_TEMPLATES = jinja2.Environment(loader=jinja2.PackageLoader("tracker.clicks", "templates"),
                                autoescape=True, undefined=jinja2.StrictUndefined)
_TEMPLATES.filters["js"] = _js
_PAGE = _TEMPLATES.get_template("fingerprint.html")
NOT_FOUND_HTML = _TEMPLATES.get_template("not_found.html").render()


def fingerprint_page(code: str, click_id: str, location: str, token: str) -> str:
    """The page that collects client signals, sends them and navigates to `location`."""
    return _PAGE.render(location=location, click_id=click_id, token=token,
                        beacon=f"/r/{code}/s")


_SIGNAL_KEYS = {"tz": str, "tzo": int, "sw": int, "sh": int, "dpr": (int, float), "cd": int,
                "langs": list, "wd": bool, "canvas": int, "hc": int, "plat": str}


def clean_signals(raw: object) -> dict[str, object] | None:
    """The known signals with sane types and sizes, or None if this is not a signals body.
    Text is kept only when printable: PostgreSQL's jsonb refuses NUL and lone surrogates, and
    one such line in the journal would stop the flusher at it."""
    if not isinstance(raw, dict):
        return None
    out: dict[str, object] = {}
    for key, kind in _SIGNAL_KEYS.items():
        value = raw.get(key)
        if isinstance(value, bool) and kind is not bool:
            continue
        if isinstance(value, kind):  # type: ignore[arg-type]
            if isinstance(value, str):
                value = value[:64]
                if not value.isprintable():
                    continue
            elif isinstance(value, list):
                value = [v[:32] for v in value[:10] if isinstance(v, str) and v[:32].isprintable()]
            out[key] = value
    return out


def _no_constant(name: str) -> object:
    raise ValueError(f"{name} is not JSON")  # NaN, Infinity: Python reads them, jsonb does not


async def _read_signals(content: StreamReader) -> bytes:
    """The beacon's body up to one byte more than allowed (a `read(n)` alone may stop at the
    first packet), within SIGNALS_READ_S (TimeoutError): one byte of a promised thousand does
    not hold the connection."""
    body = bytearray()
    async with asyncio.timeout(SIGNALS_READ_S):
        while len(body) <= SIGNALS_MAX_BYTES:
            chunk = await content.read(SIGNALS_MAX_BYTES + 1 - len(body))
            if not chunk:
                break
            body += chunk
    return bytes(body)


def make_signals_handler(links: LinkCache, journal: JournalWriter, signing_key: bytes) -> Handler:
    async def signals(request: web.Request) -> web.StreamResponse:
        entry = links.get(request.match_info["code"])
        if entry is None or not entry.browser_page:
            return web.Response(status=404)
        if (request.content_length or 0) > SIGNALS_MAX_BYTES:
            return web.Response(status=413)
        try:
            body = await _read_signals(request.content)
        except TimeoutError:
            timed_out = web.Response(status=408)
            timed_out.force_close()
            return timed_out
        if len(body) > SIGNALS_MAX_BYTES:
            return web.Response(status=413)
        try:
            raw = json.loads(body, parse_constant=_no_constant)
        except (ValueError, RecursionError):  # RecursionError: "[[[[..." a few thousand deep
            return web.Response(status=400)
        cid = raw.get("cid") if isinstance(raw, dict) else None
        tok = raw.get("tok") if isinstance(raw, dict) else None
        # compare_digest refuses non-ASCII text (TypeError): such a token is simply wrong.
        if not (isinstance(cid, str) and _CID.match(cid) and isinstance(tok, str)
                and tok.isascii() and hmac.compare_digest(tok, signal_token(signing_key, cid))):
            return web.Response(status=403)
        clean = clean_signals(raw)
        if clean is None:
            return web.Response(status=400)
        line = SEP.join((SIGNALS_VERSION, str(time.time_ns() // 1000), cid,
                         str(entry.program_id), json.dumps(clean, ensure_ascii=True)))
        try:
            journal.write((line + "\n").encode())
        except OSError:
            return web.Response(status=503)
        return web.Response(status=204)

    return signals


def install(app: web.Application, handler: Handler, signals: Handler) -> None:
    app.router.add_get(r"/r/{code}", handler, name="redirect")
    app.router.add_post(r"/r/{code}/s", signals, name="signals")
