"""POST /api/v1/conversions: from the merchant's backend, by token or signed request.

Authentication comes first where the headers allow it: a bearer token is checked before the
body is read. A signed request cannot be verified without its body, so its header is checked
first (tracker.signing.signature_parts: a malformed or stale one is refused unread) and its body
is read as a stranger's: at most SIGNED_BODY_MAX bytes, within the read timeout, and only while
few such reads are under way (tracker.web.bodies).
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from tracker.errors import NotFound
from tracker.formats import SLUG_RE, rfc3339
from tracker.identity import email_hash
from tracker.intake.conversions import ConversionInvalid, parse_conversion
from tracker.intake.queries import Conversion, ReversalProblem, store_checked
from tracker.programs import queries
from tracker.programs.signing_secrets import accepted_secrets
from tracker.signing import (
    SIGNATURE_HEADER,
    SignatureInvalid,
    program_signing_secret,
    signature_parts,
    verify_signature,
)
from tracker.web import keys
from tracker.web.api.common import authenticate
from tracker.web.api.errors import (
    ApiError,
    conflict,
    invalid,
    json_errors,
    not_found,
    parse_json,
    request_body,
)
from tracker.web.bodies import json_problem, loads

ROLES = frozenset({"admin", "integration"})
SIGNED_BODY_MAX = 64 * 1024  # a conversion is a few hundred bytes


def conversion_json(c: Conversion, program: str) -> dict[str, Any]:
    return {
        "id": c.id,
        "program": program,
        "event_id": c.event_id,
        "type": c.type,
        "customer_id": c.customer_id,
        "amount": c.amount,
        "currency": c.currency,
        "occurred_at": rfc3339(c.occurred_at),
        "received_at": rfc3339(c.received_at),
    }


@json_errors
async def create_conversion(request: web.Request) -> web.Response:
    # A token, when there is one, is what authenticates (a signature header beside it is not
    # looked at).
    signature = None if "Authorization" in request.headers else request.headers.get(
        SIGNATURE_HEADER)
    if signature is None:
        await authenticate(request, ROLES)
        body = parse_json(await request_body(request))
        raw = b""
    else:
        try:
            signature_parts(signature)
        except SignatureInvalid as exc:
            raise ApiError(401, "unauthorized", str(exc)) from None
        raw = await request_body(request, limit=SIGNED_BODY_MAX, unauthenticated=True)
        try:
            body = loads(raw)
        except ValueError:
            raise ApiError(401, "unauthorized", "the signature does not match") from None
    slug = body.get("program") if isinstance(body, dict) else None
    pool = request.config_dict[keys.POOL]
    settings = request.config_dict[keys.SETTINGS]
    program = None
    if isinstance(slug, str) and SLUG_RE.fullmatch(slug):
        try:
            program = await queries.get_program(pool, slug)
        except NotFound:
            program = None
    if signature is not None:
        # Verified before anything else is said about the body: no oracle for strangers.
        # The current secret, and the previous one during a rotation's overlap.
        secrets = (accepted_secrets(settings.secret_key, program) if program
                   else [program_signing_secret(settings.secret_key, "")])
        try:
            verify_signature(signature, raw, secrets)
        except SignatureInvalid as exc:
            raise ApiError(401, "unauthorized", str(exc)) from None
        problem = json_problem(body)
        if problem is not None:
            raise ApiError(400, "bad_request", problem)
    try:
        conv = parse_conversion(body)
    except ConversionInvalid as exc:
        raise invalid(str(exc), exc.field) from None
    if program is None:
        raise not_found("program")
    digest = email_hash(settings.secret_key, conv.email) if conv.email else None
    async with pool.acquire() as conn:
        stored = await store_checked(conn, program.id, conv, digest)
    if isinstance(stored, ReversalProblem):
        raise invalid(stored.message, stored.field)
    if stored.conflict:
        raise conflict(f"event {conv.event_id!r} was reported before with another body")
    return web.json_response(conversion_json(stored.conversion, program.slug),
                             status=201 if stored.created else 200)


create_conversion.roles = ROLES  # type: ignore[attr-defined]


def add_routes(app: web.Application) -> None:
    app.router.add_post("/conversions", create_conversion)
