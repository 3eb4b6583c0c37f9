"""Shares: a referrer sent their link out on a channel (DESIGN section 1).

`record_share` is the only writer of the `shares` table: the share page (`GET /s/{token}`, one
share per button pressed, source "page") and `POST /api/v1/shares` (shares made elsewhere, as
the merchant reports them, source "api") both call it. A share may answer an ask: the ask must
be the program's (else NotFound) and made to this referrer (else ShareInvalid on `ask_id`: the
API answers 422, as it does a refund naming another customer's purchase).
"""

from __future__ import annotations

from datetime import UTC, datetime

import asyncpg

from tracker.asks import queries
from tracker.asks.queries import Share
from tracker.formats import CHANNEL_RE

SOURCES = ("page", "api")


class ShareInvalid(ValueError):
    """A share that may not be recorded; `field` names the part at fault."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field


async def record_share(  # noqa: PLR0917 (the signature the share page codes against)
        conn: asyncpg.Connection, program_id: int, referrer_id: int, channel: str,
        occurred_at: datetime | None, source: str, ask_id: int | None = None) -> Share:
    """Record one share of the referrer's link on `channel` (a word as links.channel:
    formats.CHANNEL_RE) at `occurred_at` (None: now), from `source` ("page" or "api"),
    possibly answering the ask `ask_id`. The referrer must be the program's (the caller looked
    it up). NotFound("ask") for an ask the program does not have; ShareInvalid for a bad
    channel or source, or an ask made to someone else."""
    if not CHANNEL_RE.fullmatch(channel):
        raise ShareInvalid("channel", "channel must be a word of a-z, 0-9, '_' or '-' (at most "
                           "32 characters, starting with a letter or digit)")
    if source not in SOURCES:
        raise ShareInvalid("source", f"source must be one of {', '.join(SOURCES)}")
    if ask_id is not None:
        owner = await queries.ask_owner(conn, program_id, ask_id, referrer_id)
        if not owner.theirs:
            raise ShareInvalid("ask_id", f"ask {ask_id} was made to another customer, not to "
                               "this referrer")
    return await queries.insert_share(conn, program_id, referrer_id, channel=channel,
                                      occurred_at=occurred_at or datetime.now(UTC),
                                      source=source, ask_id=ask_id)
