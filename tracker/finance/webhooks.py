"""Signed webhooks with retries: `reward.approved` and `reward.paid`.

A program with `settings.webhook_url` is told when its rewards are approved (by clearance or
by finance) and paid. `enqueue` writes the events into `webhook_outbox` inside the caller's
transaction, so an event exists exactly when its change committed. The `webhooks` job POSTs
due events as JSON, signed like conversions are (`X-Refguard-Signature: t=<unix>,v1=<hex
HMAC-SHA256(program signing secret, "<t>.<body>")>`), with `X-Refguard-Event` and
`X-Refguard-Delivery` (a stable id: receivers deduplicate on it). A 2xx answer delivers it;
anything else is retried with exponential backoff, and given up after MAX_ATTEMPTS.
"""

from __future__ import annotations

import asyncio
import logging
import time

import aiohttp
import asyncpg

from tracker import metrics
from tracker.finance import queries
from tracker.finance.queries import DueWebhook
from tracker.signing import program_signing_secret, signature_header

log = logging.getLogger(__name__)

MAX_ATTEMPTS = 12
BACKOFF_S = 10  # then 20, 40, ... up to an hour
TIMEOUT_S = 10
BATCH = 100
CONCURRENCY = 8  # receivers POSTed at once
LEASE_S = 300  # a claimed event is due again after this if its claimer never reported back


async def enqueue(conn: asyncpg.Connection, event: str, reward_ids: list[int]) -> None:
    """Queue `event` for these rewards, for the programs that have a webhook URL."""
    if not reward_ids:
        return
    await queries.enqueue_webhooks(conn, event, reward_ids)


async def deliver_due(conn: asyncpg.Connection, secret_key: bytes,
                      session: aiohttp.ClientSession) -> int:
    """POST the events that are due; how many were delivered.

    Due events are claimed in one statement that moves them LEASE_S into the future, so no
    transaction (nor row lock) stays open while receivers answer, and another node's run skips
    them; a claimer that dies mid-delivery leaves them to be retried when the lease ends. Call it
    outside a transaction."""
    rows = await queries.claim_due_webhooks(conn, BATCH, float(LEASE_S))
    limit = asyncio.Semaphore(CONCURRENCY)

    async def attempt(row: DueWebhook) -> str | None:
        if not row.url:
            return "the program no longer has a webhook_url"
        async with limit:
            return await _post(session, row, row.url,
                               program_signing_secret(secret_key, row.slug))

    errors = await asyncio.gather(*(attempt(row) for row in rows))
    delivered = 0
    for row, error in zip(rows, errors, strict=True):
        if error is None:
            delivered += 1
            metrics.WEBHOOKS.labels(result="delivered").inc()
            await queries.mark_delivered(conn, row.program_id, row.id)
            continue
        attempts = row.attempts + 1
        gave_up = attempts >= MAX_ATTEMPTS
        metrics.WEBHOOKS.labels(result="failed" if gave_up else "retry").inc()
        log.warning("webhook %s %s to %s failed (attempt %d): %s", row.event, row.id,
                    row.url, attempts, error)
        await queries.mark_failed(
            conn, row.program_id, row.id, attempts=attempts, error=error[:500],
            retry_in_s=float(min(BACKOFF_S * 2 ** (attempts - 1), 3600)), gave_up=gave_up)
    return delivered


async def _post(session: aiohttp.ClientSession, row: DueWebhook, url: str,
                secret: str) -> str | None:
    """None when the receiver took it, else what went wrong."""
    body = row.payload.encode()
    headers = {"Content-Type": "application/json",
               "X-Refguard-Event": row.event,
               "X-Refguard-Delivery": f"{row.program_id}-{row.id}",
               "X-Refguard-Signature": signature_header(secret, body, int(time.time()))}
    try:
        async with session.post(url, data=body, headers=headers,
                                timeout=aiohttp.ClientTimeout(total=TIMEOUT_S),
                                allow_redirects=False) as resp:
            if 200 <= resp.status < 300:
                return None
            return f"HTTP {resp.status}"
    except (aiohttp.ClientError, OSError, TimeoutError, ValueError) as exc:
        return f"{type(exc).__name__}: {exc}"
