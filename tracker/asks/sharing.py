"""The share page's domain: who a token names, the referrer's link per channel, each channel's
target, and recording a share (GET /s/{token}, POST /s/{token}/share; the web side is
tracker.web.share).

Each channel has a link of its own: the referrer's earliest link tagged with that channel
(`links.channel`), made on first need with the destination of the referrer's link (its earliest
untagged link, itself made with the program's default destination when the referrer has none),
so a click through it counts under that channel in the funnel. A disabled untagged link closes
the page; a disabled channel link closes that channel.

A share is recorded per button press, at most one per referrer and channel in
RECORD_EVERY_S (a page reloaded or a button pressed over and over records one share): the
press still leads to the channel.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote

import asyncpg

from tracker import audit
from tracker.asks import queries
from tracker.asks.messages import share_message
from tracker.asks.shares import record_share
from tracker.programs.queries import Link, add_link, referrer_link
from tracker.programs.validation import SHARE_CHANNELS, default_destination
from tracker.signing import share_token, share_token_ids

RECORD_EVERY_S = 60.0
ACTOR = "share_page"

# What each button is called on the page.
LABELS = {
    "copy": "Copy the message",
    "share_sheet": "Share…",
    "email": "E-mail",
    "sms": "Text message",
    "whatsapp": "WhatsApp",
    "x": "X",
    "linkedin": "LinkedIn",
    "facebook": "Facebook",
}
# Where a channel's button leads: a URL built from the message (and link). copy and
# share_sheet stay on the page (its script copies or opens the phone's share sheet).
_TARGETS = {
    "email": "mailto:?subject={subject}&body={text}",
    # `?&body=`: Android reads `?body=`, iOS reads `&body=`.
    "sms": "sms:?&body={text}",
    "whatsapp": "https://wa.me/?text={text}",
    "x": "https://x.com/intent/post?text={text}",
    "linkedin": "https://www.linkedin.com/sharing/share-offsite/?url={url}",
    "facebook": "https://www.facebook.com/sharer/sharer.php?u={url}",
}
# The schemes and origins the targets use, for the page's CSP form-action (a form's redirect
# is held to it too).
TARGET_SOURCES = ("mailto:", "sms:", "https://wa.me", "https://x.com",
                  "https://www.linkedin.com", "https://www.facebook.com")


def share_url(secret_key: bytes, base_url: str, program_id: int, referrer_id: int) -> str:
    """The address of a referrer's share page."""
    return f"{base_url}/s/{share_token(secret_key, program_id, referrer_id)}"


def channels(settings: dict[str, Any]) -> list[str]:
    """The program's share channels in page order (`share.channels`, default all)."""
    listed = (settings.get("share") or {}).get("channels")
    if not listed:
        return list(SHARE_CHANNELS)
    names = {c["name"] if isinstance(c, dict) else c for c in listed}
    return [c for c in SHARE_CHANNELS if c in names]


def with_link(message: str, link: str) -> str:
    """The message, ending with the link when its template did not place it."""
    return message if link in message else f"{message} {link}".strip()


def target(channel: str, *, text: str, link: str, subject: str) -> str | None:
    """Where the channel's button leads (None: it stays on the page)."""
    template = _TARGETS.get(channel)
    if template is None:
        return None
    return template.format(text=quote(text, safe=""), url=quote(link, safe=""),
                           subject=quote(subject, safe=""))


@dataclass(frozen=True, slots=True)
class SharePage:
    referrer: queries.ShareReferrer
    link: str  # the referrer's link (untagged)
    message: str
    channels: list[str]


@dataclass(frozen=True, slots=True)
class Shared:
    channel: str
    link: str  # the channel's link
    message: str  # the channel's message, with its link
    target: str | None
    recorded: bool  # False: the rate limit kept this press out of the shares


async def _link(conn: asyncpg.Connection, referrer: queries.ShareReferrer,
                channel: str | None) -> Link:
    """The referrer's link on the channel (None: untagged), made now when there is none.
    Runs under lock_referrer, so two presses never make two."""
    found = await referrer_link(conn, referrer.program_id, referrer.referrer_id, channel)
    if found is not None:
        return found
    if channel is None:
        destination = default_destination(referrer.destination_domains, referrer.settings)
    else:
        destination = (await _link(conn, referrer, None)).destination
    made = await add_link(conn, referrer.program_id, referrer.referrer_id, destination,
                          channel=channel)
    await audit.record(conn, actor=ACTOR, action="link.create", object_type="link",
                       object_id=made.code, program_id=referrer.program_id,
                       details={"channel": channel})
    return made


async def _referrer(conn: asyncpg.Connection, secret_key: bytes,
                    token: str) -> queries.ShareReferrer | None:
    ids = share_token_ids(secret_key, token)
    if ids is None:
        return None
    return await queries.share_referrer(conn, *ids)


def message(referrer: queries.ShareReferrer, link: str, channel: str | None) -> str:
    """The referrer's message on the channel (None: the page's), ending with the link."""
    return with_link(share_message(referrer.settings, name=referrer.name, link=link,
                                   channel=channel), link)


async def open_page(conn: asyncpg.Connection, secret_key: bytes, base_url: str,
                    token: str) -> SharePage | None:
    """The page a token opens; None for a token refguard did not make, a referrer that is gone
    or whose link is disabled."""
    referrer = await _referrer(conn, secret_key, token)
    if referrer is None:
        return None
    link = await referrer_link(conn, referrer.program_id, referrer.referrer_id, None)
    if link is None:  # the referrer's first link, made under the lock
        async with conn.transaction():
            await queries.lock_referrer(conn, referrer.program_id, referrer.referrer_id)
            link = await _link(conn, referrer, None)
    if not link.enabled:
        return None
    url = f"{base_url}/r/{link.code}"
    return SharePage(referrer, url, message(referrer, url, None), channels(referrer.settings))


async def share(conn: asyncpg.Connection, page: SharePage, base_url: str, channel: str,
                ask_id: int | None, *, now: datetime | None = None) -> Shared | None:
    """A button pressed: the channel's link and target, and a share recorded (with the ask
    when it is the referrer's; another one is dropped). None when the channel is not on the
    page or its link is disabled."""
    if channel not in page.channels:
        return None
    referrer = page.referrer
    async with conn.transaction():
        await queries.lock_referrer(conn, referrer.program_id, referrer.referrer_id)
        link = await _link(conn, referrer, channel)
        if not link.enabled:
            return None
        if ask_id is not None and not await queries.ask_of_referrer(
                conn, referrer.program_id, ask_id, referrer.referrer_id):
            ask_id = None
        recorded = not await queries.page_shared_within(
            conn, referrer.program_id, referrer.referrer_id, channel, RECORD_EVERY_S)
        if recorded:
            await record_share(conn, referrer.program_id, referrer.referrer_id, channel,
                               now or datetime.now(UTC), "page", ask_id)
    url = f"{base_url}/r/{link.code}"
    text = message(referrer, url, channel)
    return Shared(channel, url, text,
                  target(channel, text=text, link=url, subject=referrer.program_name),
                  recorded)
