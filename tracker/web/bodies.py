"""Reading request bodies: bounded in size and time, and few at once for strangers.

aiohttp reads a body for as long as the client takes to send it: a socket that announces
`Content-Length: 1000` and sends one byte holds a handler (and its connection) for ever. So
a body is read here: at most `limit` bytes, within `BodyReads.timeout_s` (else 408), and a
body from a client not yet authenticated (a signed conversion, whose signature covers the body;
the review page's login form) only while fewer than `BodyReads.max_unauthenticated` such reads
are under way in this worker (else 503 with Retry-After: a flood of slow strangers cannot take
every connection). Whoever can be authenticated from the headers is, before the body is read.
This is how the API and the review page read bodies; the redirect's beacon (tracker.clicks,
which does not import the web layer) bounds its own read the same way.

Also the checks every JSON body gets: nested at most MAX_JSON_DEPTH deep and no lone surrogate
in any string (`"\\ud800"` is valid JSON, but no text column, hash or log line can take it).
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass
from urllib.parse import parse_qsl

from aiohttp import StreamReader, web
from multidict import MultiDict, MultiDictProxy

MAX_JSON_DEPTH = 32
FORM_TYPE = "application/x-www-form-urlencoded"
FORM_MAX_FIELDS = 2000  # the review page's bulk approval posts at most 1000 ids


@dataclass(slots=True)
class BodyReads:
    """One worker's limits on body reads (`keys.BODY_READS`); `active` counts the
    unauthenticated reads under way."""

    timeout_s: float = 10.0
    max_unauthenticated: int = 64
    active: int = 0


class BodyError(Exception):
    """A body that was refused: 408 (too slow), 413 (too large), 415, 503 (too many at once)
    or 400 (not the form or JSON it should be)."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message


async def _read_capped(content: StreamReader, limit: int) -> bytes:
    """Up to `limit + 1` bytes, to the end of the body (one more than allowed tells "too big")."""
    body = bytearray()
    while len(body) <= limit:
        chunk = await content.read(limit + 1 - len(body))
        if not chunk:
            break
        body += chunk
    return bytes(body)


async def read_body(request: web.Request, reads: BodyReads, *, limit: int,
                    unauthenticated: bool = False) -> bytes:
    """The whole body, of at most `limit` bytes, within the timeout; raises BodyError."""
    if request.content_length is not None and request.content_length > limit:
        raise BodyError(413, "payload_too_large", f"the body is larger than {limit} bytes")
    if unauthenticated:
        if reads.active >= reads.max_unauthenticated:
            raise BodyError(503, "busy", "too many requests are sending their bodies right now; "
                            "retry in a moment")
        reads.active += 1
    try:
        async with asyncio.timeout(reads.timeout_s):
            body = await _read_capped(request.content, limit)
    except TimeoutError:
        raise BodyError(408, "timeout", f"the body did not arrive within {reads.timeout_s:g} "
                        "seconds") from None
    finally:
        if unauthenticated:
            reads.active -= 1
    if len(body) > limit:
        raise BodyError(413, "payload_too_large", f"the body is larger than {limit} bytes")
    return body


async def read_form(request: web.Request, reads: BodyReads, *, limit: int,
                    unauthenticated: bool = False) -> MultiDictProxy[str]:
    """An HTML form (`application/x-www-form-urlencoded`, what the review page's forms send),
    read as `read_body` does."""
    if request.content_type not in (FORM_TYPE, "application/octet-stream"):
        # aiohttp reports a missing Content-Type as application/octet-stream.
        raise BodyError(415, "unsupported_media", f"send the form as {FORM_TYPE}")
    raw = await read_body(request, reads, limit=limit, unauthenticated=unauthenticated)
    try:
        fields = parse_qsl(raw.decode("utf-8"), keep_blank_values=True,
                           max_num_fields=FORM_MAX_FIELDS)
    except (UnicodeDecodeError, ValueError):
        raise BodyError(400, "bad_request", "the form is not valid") from None
    return MultiDictProxy(MultiDict(fields))


def loads(raw: bytes) -> object:
    """JSON text as Python values; ValueError when it is not JSON or nested beyond what the
    parser can take (RecursionError, here a ValueError like any other bad body)."""
    try:
        return json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        raise ValueError("the body is not valid JSON") from None
    except RecursionError:
        raise ValueError(f"the body is nested more than {MAX_JSON_DEPTH} levels deep") from None


def json_problem(value: object) -> str | None:
    """What is wrong with parsed JSON (too deep, a lone surrogate in a string), or None."""
    stack: list[tuple[object, int]] = [(value, 0)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, str):
            if not _encodable(item):
                return "the body holds text that is not valid Unicode (a lone surrogate)"
        elif isinstance(item, dict | list):
            if depth >= MAX_JSON_DEPTH:
                return f"the body is nested more than {MAX_JSON_DEPTH} levels deep"
            if isinstance(item, dict):
                stack.extend((key, depth + 1) for key in item)
                stack.extend((v, depth + 1) for v in item.values())
            else:
                stack.extend((v, depth + 1) for v in item)
    return None


def _encodable(text: str) -> bool:
    if text.isascii():
        return True
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True
