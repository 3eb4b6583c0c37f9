"""Signed webhooks with retries: the whole life of a referral (DESIGN section 5).

A program with `settings.webhook_url` is told, as JSON `{"event": NAME, <object>: {...}}`:

- `referral.converted` (`referral`: the conversion, its referrers and their credits): a
  conversion credited to a referrer, once, when clearance first takes it up (attribution's
  credits belong to scoring; clearance marks each attributed conversion `rewarded_at` once,
  whether or not a rule rewards it, and the event is written in that transaction);
- `reward.created`, `reward.flagged`, `reward.approved`, `reward.rejected`, `reward.reversed`,
  `reward.paid` (`reward`: the reward as it is after the change): each time a reward takes
  that status, by clearance or by finance, so an approval overturned and approved again sends
  approved, rejected, approved (a four-eyes first approval changes nothing and sends nothing);
- `payout.created` (`payout`: the batch with that program's lines and totals): per batch and
  program it paid;
- `referral.ask` (`ask`: whom to ask to refer, with their share page, link and message),
  written by the asks job (tracker.asks.asks) with its ask. It is never delivered after the
  ask's deadline: a due one past it is given up and its ask expires (`past_deadline`), and so
  does one whose next retry would fall after it or that ran out of attempts (`undelivered`); a
  POST is given at most the time left before the deadline. Delivered, its ask is `sent`.

`enqueue` and its siblings write the events into `webhook_outbox` inside the caller's
transaction, in the same transaction as the change they announce, so an event exists exactly
when its change committed. The `webhooks` job POSTs
due events as JSON, signed like conversions are (`X-Refguard-Signature: t=<unix>,v1=<hex
HMAC-SHA256(the program's current signing secret, "<t>.<body>")>`), with `X-Refguard-Event` and
`X-Refguard-Delivery` (a stable id: receivers deduplicate on it). A 2xx answer delivers it;
anything else is retried with exponential backoff, and given up after MAX_ATTEMPTS.

Receivers must be on the public internet unless the server runs with
REFGUARD_WEBHOOK_ALLOW_PRIVATE=1: the settings refuse private targets when they are written, and
every delivery resolves the host again, refuses it if any address is private, loopback,
link-local (cloud metadata), multicast or reserved, and connects to an address it checked (so a
name that changes its answer between the check and the connection, DNS rebinding, gains
nothing). Credentials in a webhook URL never reach the logs.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import socket
import time
import uuid
from datetime import UTC, datetime
from typing import Any
from urllib.parse import unquote, urlsplit

import aiohttp
import asyncpg
import yarl

from tracker import metrics
from tracker.finance import queries
from tracker.finance.queries import DueWebhook
from tracker.programs import queries as program_queries
from tracker.programs.validation import (
    address_is_public,
    literal_address,
    private_target,
    redact_url,
)
from tracker.signing import program_signing_secret, signature_header

log = logging.getLogger(__name__)

MAX_ATTEMPTS = 12
BACKOFF_S = 10  # then 20, 40, ... up to an hour
TIMEOUT_S = 10
BATCH = 100
CONCURRENCY = 8  # receivers POSTed at once
LEASE_S = 300  # a claimed event is due again after this if its claimer never reported back
ADDRESSES_TRIED = 3  # of a name's (checked) addresses, when the first ones refuse connections
REWARD_EVENTS = ("reward.created", "reward.flagged", "reward.approved", "reward.rejected",
                 "reward.reversed", "reward.paid")
EVENTS = ("referral.converted", *REWARD_EVENTS, "payout.created")  # migration 0021
ASK_EVENT = "referral.ask"  # migration 0024: written by the asks job, not by finance
# Why an ask's referral.ask was never sent (its `reason` when it expires here).
PAST_DEADLINE = "past_deadline"  # due (or claimed) only after the ask's deadline
UNDELIVERED = "undelivered"  # the receiver did not take it in time, or ever


class TargetRefused(Exception):
    """The receiver is not on the public internet."""


async def enqueue(conn: asyncpg.Connection, event: str, reward_ids: list[int]) -> None:
    """Queue `event` for these rewards, for the programs that have a webhook URL."""
    if not reward_ids:
        return
    if event not in REWARD_EVENTS:
        raise ValueError(f"not a reward event: {event!r}")
    await queries.enqueue_webhooks(conn, event, reward_ids)


async def enqueue_converted(conn: asyncpg.Connection, program_id: int,
                            conversion_ids: list[int]) -> None:
    """Queue `referral.converted` for these conversions (those credited to a referrer)."""
    if conversion_ids:
        await queries.enqueue_conversion_webhooks(conn, program_id, conversion_ids)


async def enqueue_payout(conn: asyncpg.Connection, batch_id: uuid.UUID) -> None:
    """Queue `payout.created` for the batch, once per program it paid."""
    await queries.enqueue_payout_webhooks(conn, batch_id)


async def enqueue_ask(conn: asyncpg.Connection, program_id: int,
                      payload: dict[str, Any]) -> None:
    """Queue `referral.ask` (payload `{"event": "referral.ask", "ask": {...}}`), in the
    transaction that stores its ask."""
    if payload.get("event") != ASK_EVENT or not isinstance(payload.get("ask"), dict):
        raise ValueError("not a referral.ask payload")
    await queries.enqueue_ask_webhook(conn, program_id, payload)


def _ask_left_s(row: DueWebhook, now: datetime) -> float | None:
    """Seconds left before a referral.ask's deadline (<= 0: too late, also when its ask is gone
    or no longer queued); None for every other event."""
    if row.event != ASK_EVENT:
        return None
    if row.ask_id is None or row.deadline is None or row.ask_status != "queued":
        return 0.0
    return (row.deadline - now).total_seconds()


async def _give_up_ask(conn: asyncpg.Connection, row: DueWebhook, *, attempts: int, error: str,
                       reason: str) -> None:
    """Never again: the event failed for good and its ask (if still queued) expires."""
    async with conn.transaction():
        await queries.mark_failed(conn, row.program_id, row.id, attempts=attempts,
                                  error=error[:500], retry_in_s=0.0, gave_up=True)
        expired = row.ask_id is not None and await queries.expire_ask(
            conn, row.program_id, row.ask_id, reason)
    if expired:
        metrics.ASKS.labels(outcome="expired", reason=reason).inc()


async def deliver_due(conn: asyncpg.Connection, secret_key: bytes,
                      session: aiohttp.ClientSession, *, allow_private: bool = False,
                      program_id: int | None = None) -> int:
    """POST the events that are due; how many were delivered.

    Due events are claimed in one statement that moves them LEASE_S into the future, so no
    transaction (nor row lock) stays open while receivers answer, and another node's run skips
    them; a claimer that dies mid-delivery leaves them to be retried when the lease ends. Call it
    outside a transaction. Without `allow_private` (REFGUARD_WEBHOOK_ALLOW_PRIVATE) only public
    addresses are POSTed to. `program_id` delivers only that program's events (the demo's,
    to its own receiver on this machine)."""
    rows = await queries.claim_due_webhooks(conn, BATCH, float(LEASE_S), program_id)
    if not rows:
        return 0
    now = datetime.now(UTC)
    left = {row.id: _ask_left_s(row, now) for row in rows}

    def too_late(row: DueWebhook) -> bool:
        ask_left = left[row.id]
        return ask_left is not None and ask_left <= 0

    for row in rows:
        if too_late(row):  # a referral.ask past its deadline (or its ask gone): never sent
            metrics.WEBHOOKS.labels(result="expired").inc()
            gone = row.ask_id is None
            await _give_up_ask(conn, row, attempts=row.attempts,
                               error="not sent: " + ("its ask no longer exists" if gone else
                                                     "the ask's deadline has passed"),
                               reason=PAST_DEADLINE)
    rows = [row for row in rows if not too_late(row)]
    if not rows:
        return 0
    seeds = await program_queries.current_signing_seeds(
        conn, sorted({row.program_id for row in rows}))
    limit = asyncio.Semaphore(CONCURRENCY)

    async def attempt(row: DueWebhook) -> str | None:
        if not row.url:
            return "the program no longer has a webhook_url"
        secret = program_signing_secret(secret_key, seeds[row.program_id])
        # A referral.ask gets at most the time left before its deadline (counted from the
        # claim), waiting for its turn and resolving the receiver included.
        ask_left = left[row.id]
        try:
            async with asyncio.timeout(ask_left), limit:
                timeout = TIMEOUT_S if ask_left is None else min(float(TIMEOUT_S), ask_left)
                return _scrub(await _post(session, row, row.url, secret, allow_private,
                                          timeout_s=timeout), row.url)
        except TimeoutError:
            return "TimeoutError: the ask's deadline came before the receiver answered"

    errors = await asyncio.gather(*(attempt(row) for row in rows))
    delivered = 0
    for row, error in zip(rows, errors, strict=True):
        if error is None:
            delivered += 1
            metrics.WEBHOOKS.labels(result="delivered").inc()
            async with conn.transaction():
                await queries.mark_delivered(conn, row.program_id, row.id)
                if row.ask_id is not None:
                    await queries.mark_ask_sent(conn, row.program_id, row.ask_id)
            if row.ask_id is not None:
                metrics.ASKS.labels(outcome="sent", reason="").inc()
            continue
        attempts = row.attempts + 1
        retry_in_s = float(min(BACKOFF_S * 2 ** (attempts - 1), 3600))
        gave_up = attempts >= MAX_ATTEMPTS
        ask_left = left[row.id]
        # A retry after the deadline could not be sent either: give up now.
        retry_late = ask_left is not None and (
            datetime.now(UTC) - now).total_seconds() + retry_in_s >= ask_left
        metrics.WEBHOOKS.labels(result="failed" if gave_up or retry_late else "retry").inc()
        log.warning("webhook %s %s to %s failed (attempt %d): %s", row.event, row.id,
                    redact_url(row.url or ""), attempts, error)
        if ask_left is not None and (gave_up or retry_late):
            await _give_up_ask(conn, row, attempts=attempts, error=error, reason=UNDELIVERED)
            continue
        await queries.mark_failed(
            conn, row.program_id, row.id, attempts=attempts, error=error[:500],
            retry_in_s=retry_in_s, gave_up=gave_up)
    return delivered


async def public_addresses(url: yarl.URL) -> list[str]:
    """The addresses of the URL's host, every one of them public, in the resolver's order;
    raises TargetRefused naming the first that is not (and OSError when the name does not
    resolve)."""
    host = url.raw_host
    if not host:
        raise TargetRefused("the URL has no host")
    problem = private_target(host)
    if problem is not None:
        raise TargetRefused(f"the receiver is {problem}")
    literal = literal_address(host)
    if literal is not None:
        return [str(literal)]
    loop = asyncio.get_running_loop()
    async with asyncio.timeout(TIMEOUT_S):
        infos = await loop.getaddrinfo(host, url.port, type=socket.SOCK_STREAM)
    out: list[str] = []
    for *_, sockaddr in infos:
        ip = ipaddress.ip_address(str(sockaddr[0]))
        if not address_is_public(ip):
            raise TargetRefused(f"{host} resolves to the non-public address {ip}")
        if str(ip) not in out:
            out.append(str(ip))
    if not out:
        raise TargetRefused(f"{host} resolves to no address")
    return out


async def _post(session: aiohttp.ClientSession, row: DueWebhook, url: str, secret: str,
                allow_private: bool, *, timeout_s: float = TIMEOUT_S) -> str | None:
    """None when the receiver took it, else what went wrong."""
    body = row.payload.encode()
    headers = {"Content-Type": "application/json",
               "X-Refguard-Event": row.event,
               "X-Refguard-Delivery": f"{row.program_id}-{row.id}",
               "X-Refguard-Signature": signature_header(secret, body, int(time.time()))}
    try:
        target = yarl.URL(url)
        if allow_private:
            return await _send(session, target, body, headers, {}, timeout_s=timeout_s)
        addresses = await public_addresses(target)
        # Connect to an address just checked, never to what a second lookup might say; the
        # Host header and the TLS name (SNI and certificate check) stay the URL's own.
        host = target.raw_host or ""
        headers["Host"] = host if target.explicit_port is None else f"{host}:{target.port}"
        extra: dict[str, Any] = {"server_hostname": host} if target.scheme == "https" else {}
        tries = addresses[:ADDRESSES_TRIED]
        for address in tries[:-1]:
            with contextlib.suppress(aiohttp.ClientConnectorError):
                return await _send(session, target.with_host(address), body, headers, extra,
                                   timeout_s=timeout_s)
        return await _send(session, target.with_host(tries[-1]), body, headers, extra,
                           timeout_s=timeout_s)
    except TargetRefused as exc:
        return (f"refused: {exc} (webhooks go only to public addresses unless "
                "REFGUARD_WEBHOOK_ALLOW_PRIVATE=1)")
    except (aiohttp.ClientError, OSError, TimeoutError, ValueError) as exc:
        return f"{type(exc).__name__}: {exc}"


async def _send(session: aiohttp.ClientSession, url: yarl.URL, body: bytes,
                headers: dict[str, str], extra: dict[str, Any], *,
                timeout_s: float = TIMEOUT_S) -> str | None:
    async with session.post(url, data=body, headers=headers,
                            timeout=aiohttp.ClientTimeout(total=timeout_s),
                            allow_redirects=False, **extra) as resp:
        if 200 <= resp.status < 300:
            return None
        return f"HTTP {resp.status}"


def _scrub(error: str | None, url: str) -> str | None:
    """An error text without the URL's credentials (some exceptions quote the whole URL)."""
    if error is None:
        return None
    try:
        netloc = urlsplit(url).netloc
    except ValueError:
        return error
    userinfo = netloc.rpartition("@")[0]
    if not userinfo:
        return error
    error = error.replace(userinfo + "@", "***@")
    for part in (userinfo, *userinfo.split(":", 1)):
        for secret in {part, unquote(part)}:
            if len(secret) >= 3:
                error = error.replace(secret, "***")
    return error
