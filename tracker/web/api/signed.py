"""Bodies from the merchant's backend, by bearer token or by the program's HMAC signature:
`POST /api/v1/conversions` and `POST /api/v1/events` take either.

Authentication comes first where the headers allow it: a bearer token is checked before the
body is read. A signed request cannot be verified without its body, so its header is checked
first (tracker.signing.signature_parts: a malformed or stale one is refused unread) and its body
is read as a stranger's: at most `signed_limit` bytes, within the read timeout, and only while
few such reads are under way (tracker.web.bodies). The signature is verified before anything
else is said about the body (no oracle for strangers), against the secret of the program the
body names: the current one, and the previous one during a rotation's overlap.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from aiohttp import web

from tracker.errors import NotFound
from tracker.formats import SLUG_RE
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
from tracker.web.api.errors import ApiError, parse_json, request_body
from tracker.web.bodies import json_problem, loads


@dataclass(frozen=True, slots=True)
class MerchantBody:
    """An authenticated body: the parsed JSON (anything: the caller validates it) and the
    program its `program` names, when there is one with that slug."""

    body: Any
    program: queries.Program | None


async def merchant_body(request: web.Request, roles: frozenset[str], *,
                        signed_limit: int) -> MerchantBody:
    """The request's body once its bearer token (of one of `roles`) or its signature is
    accepted; 401, 403 or 400 otherwise."""
    # A token, when there is one, is what authenticates (a signature header beside it is not
    # looked at).
    signature = None if "Authorization" in request.headers else request.headers.get(
        SIGNATURE_HEADER)
    if signature is None:
        await authenticate(request, roles)
        body = parse_json(await request_body(request))
        raw = b""
    else:
        try:
            signature_parts(signature)
        except SignatureInvalid as exc:
            raise ApiError(401, "unauthorized", str(exc)) from None
        raw = await request_body(request, limit=signed_limit, unauthenticated=True)
        try:
            body = loads(raw)
        except ValueError:
            raise ApiError(401, "unauthorized", "the signature does not match") from None
    slug = body.get("program") if isinstance(body, dict) else None
    pool = request.config_dict[keys.POOL]
    program = None
    if isinstance(slug, str) and SLUG_RE.fullmatch(slug):
        try:
            program = await queries.get_program(pool, slug)
        except NotFound:
            program = None
    if signature is not None:
        settings = request.config_dict[keys.SETTINGS]
        secrets = (accepted_secrets(settings.secret_key, program) if program
                   else [program_signing_secret(settings.secret_key, "")])
        try:
            verify_signature(signature, raw, secrets)
        except SignatureInvalid as exc:
            raise ApiError(401, "unauthorized", str(exc)) from None
        problem = json_problem(body)
        if problem is not None:
            raise ApiError(400, "bad_request", problem)
    return MerchantBody(body, program)
