"""Programs, referrers, links and the visit log."""

from __future__ import annotations

import re
import secrets
import string as _string
from datetime import datetime
from typing import Any

from aiohttp import web

from tracker import audit
from tracker.clicks import queries as click_queries
from tracker.clicks.links import CODE_RE, LinkEntry
from tracker.errors import Conflict
from tracker.formats import SLUG_RE, rfc3339
from tracker.identity import email_hash
from tracker.programs import queries
from tracker.programs.validation import (
    SettingsInvalid,
    check_destination,
    default_destination,
    normalise_domain,
    validate_settings,
)
from tracker.signing import program_signing_secret
from tracker.web import keys
from tracker.web.api.common import (
    ALL_ROLES,
    decode_cursor,
    encode_cursor,
    id_cursor,
    limit_param,
    opaque_id,
    page,
    parse_time,
    principal,
    program_by_slug,
    query_param,
    required_string,
    requires,
    string,
    time_param,
)
from tracker.web.api.errors import ApiError, invalid, not_found, read_json

EMAIL_MAX = 320
_CODE_ALPHABET = _string.ascii_letters + _string.digits
READ_ROLES = tuple(ALL_ROLES)


def _program_json(p: queries.Program, request: web.Request | None = None) -> dict[str, Any]:
    extra: dict[str, Any] = {}
    if request is not None and principal(request).role == "admin":
        # Admins see the secret the merchant signs this program's conversions with.
        extra["signing_secret"] = program_signing_secret(
            request.config_dict[keys.SETTINGS].secret_key, p.slug)
    return extra | {
        "id": p.id,
        "slug": p.slug,
        "name": p.name,
        "destination_domains": p.destination_domains,
        "settings": p.settings,
        "created_at": rfc3339(p.created_at),
    }


def _referrer_json(r: queries.Referrer) -> dict[str, Any]:
    return {
        "id": r.id,
        "program": r.program,
        "external_id": r.external_id,
        "has_email": r.has_email,
        "created_at": rfc3339(r.created_at),
    }


def _link_json(link: queries.Link, base_url: str) -> dict[str, Any]:
    return {
        "id": link.id,
        "program": link.program,
        "referrer": link.referrer,
        "code": link.code,
        "url": f"{base_url}/r/{link.code}",
        "destination": link.destination,
        "enabled": link.enabled,
        "created_at": rfc3339(link.created_at),
    }


async def _referrer_filter(request: web.Request, program: queries.Program) -> int | None:
    """The id of the `referrer` query parameter (an external id), if given; 404 if unknown."""
    external_id = query_param(request, "referrer", max_len=128)
    if external_id is None:
        return None
    return (await queries.get_referrer(request.config_dict[keys.POOL], program.id,
                                       external_id)).id


def _domains(body: dict[str, Any]) -> list[str]:
    raw = body.get("destination_domains")
    if not isinstance(raw, list) or not raw or len(raw) > 100:
        raise invalid("destination_domains must be a non-empty list of hostnames",
                      "destination_domains")
    try:
        return sorted({normalise_domain(d) for d in raw})
    except SettingsInvalid as exc:
        raise invalid(str(exc), exc.field) from None


# -- programs ----------------------------------------------------------------------------------


@requires("admin")
async def create_program(request: web.Request) -> web.Response:
    body = await read_json(request)
    slug = required_string(body, "slug", max_len=63, pattern=SLUG_RE)
    name = required_string(body, "name", max_len=200)
    domains = _domains(body)
    try:
        settings = validate_settings(body.get("settings"), domains)
    except SettingsInvalid as exc:
        raise invalid(str(exc), exc.field) from None
    pool = request.config_dict[keys.POOL]
    async with pool.acquire() as conn, conn.transaction():
        program = await queries.create_program(conn, slug, name, domains, settings)
        await audit.record(
            conn, actor=principal(request).actor, action="program.create", object_type="program",
            object_id=slug, program_id=program.id,
        )
    return web.json_response(_program_json(program, request), status=201)


@requires("admin")
async def update_program(request: web.Request) -> web.Response:
    body = await read_json(request)
    program = await program_by_slug(request, request.match_info["slug"])
    name = string(body, "name", required=False) or program.name
    domains = _domains(body) if "destination_domains" in body else program.destination_domains
    raw_settings = body.get("settings")
    if raw_settings is not None and not isinstance(raw_settings, dict):
        raise invalid("settings must be an object", "settings")
    try:
        settings = validate_settings({**program.settings, **(raw_settings or {})}, domains)
    except SettingsInvalid as exc:
        raise invalid(str(exc), exc.field) from None
    async with request.config_dict[keys.POOL].acquire() as conn, conn.transaction():
        updated = await queries.update_program(conn, program.id, name, domains, settings)
        await audit.record(
            conn, actor=principal(request).actor, action="program.update", object_type="program",
            object_id=program.slug, program_id=program.id, details={"fields": sorted(body)},
        )
    return web.json_response(_program_json(updated, request))


@requires(*READ_ROLES)
async def get_program(request: web.Request) -> web.Response:
    program = await program_by_slug(request, request.match_info["slug"])
    return web.json_response(_program_json(program, request))


@requires(*READ_ROLES)
async def list_programs(request: web.Request) -> web.Response:
    limit = limit_param(request)
    items = await queries.list_programs(request.config_dict[keys.POOL], id_cursor(request), limit)
    nxt = encode_cursor(items[-1].id) if items else None
    return page([_program_json(p) for p in items], limit, nxt)


# -- referrers ---------------------------------------------------------------------------------


@requires("integration")
async def create_referrer(request: web.Request) -> web.Response:
    body = await read_json(request)
    program = await program_by_slug(request, string(body, "program", max_len=63))
    external_id = opaque_id(body, "external_id")
    assert external_id is not None  # noqa: S101 (required)
    email = string(body, "email", required=False, max_len=EMAIL_MAX)
    if email is not None and "@" not in email:
        raise invalid("email is not an email address", "email")
    digest = email_hash(request.config_dict[keys.SETTINGS].secret_key, email) if email else None
    async with request.config_dict[keys.POOL].acquire() as conn, conn.transaction():
        referrer, created = await queries.upsert_referrer(conn, program, external_id, digest)
    return web.json_response(_referrer_json(referrer), status=201 if created else 200)


@requires("integration", "viewer")
async def list_referrers(request: web.Request) -> web.Response:
    program = await program_by_slug(request, query_param(request, "program"))
    limit = limit_param(request)
    items = await queries.list_referrers(
        request.config_dict[keys.POOL], program.id, id_cursor(request), limit
    )
    nxt = encode_cursor(items[-1].id) if items else None
    return page([_referrer_json(r) for r in items], limit, nxt)


# -- links -------------------------------------------------------------------------------------


def _new_code() -> str:
    return "".join(secrets.choice(_CODE_ALPHABET) for _ in range(8))


@requires("integration")
async def create_link(request: web.Request) -> web.Response:
    body = await read_json(request)
    program = await program_by_slug(request, string(body, "program", max_len=63))
    referrer_id = opaque_id(body, "referrer")
    assert referrer_id is not None  # noqa: S101 (required)
    code = string(body, "code", required=False, max_len=64)
    if code is not None and not CODE_RE.match(code):
        raise invalid("code may hold only letters, digits, '-' and '_' (at most 64)", "code")
    destination = string(body, "destination", required=False, max_len=2048)
    if destination is None:
        destination = default_destination(program.destination_domains, program.settings)
    try:
        check_destination(destination, program.destination_domains)
    except SettingsInvalid as exc:
        raise invalid(str(exc), exc.field) from None
    pool = request.config_dict[keys.POOL]
    async with pool.acquire() as conn:
        referrer = await queries.get_referrer(conn, program.id, referrer_id)
        for attempt in range(5):
            try:
                async with conn.transaction():
                    link = await queries.create_link(
                        conn, program.id, referrer.id, code or _new_code(), destination
                    )
                    await audit.record(
                        conn, actor=principal(request).actor, action="link.create",
                        object_type="link", object_id=link.code, program_id=program.id,
                    )
                break
            except Conflict:
                if code is not None or attempt == 4:
                    raise
    _cache_link(request, link, program)
    base_url = request.config_dict[keys.SETTINGS].base_url
    return web.json_response(_link_json(link, base_url), status=201)


def _cache_link(request: web.Request, link: queries.Link, program: queries.Program) -> None:
    """This worker knows the link at once; the others learn it from the notification."""
    fallback = program.settings.get("fallback_url")
    request.config_dict[keys.LINKS].put(
        LinkEntry.build(
            code=link.code, program_id=link.program_id, link_id=link.id,
            referrer_id=link.referrer_id, destination=link.destination, enabled=link.enabled,
            fallback_url=fallback if isinstance(fallback, str) else None,
            browser_page=program.settings.get("fingerprint") == "browser",
        )
    )


@requires("integration")
async def update_link(request: web.Request) -> web.Response:
    body = await read_json(request)
    code = request.match_info["code"]
    enabled = body.get("enabled")
    if enabled is not None and not isinstance(enabled, bool):
        raise invalid("enabled must be true or false", "enabled")
    destination = string(body, "destination", required=False, max_len=2048)
    pool = request.config_dict[keys.POOL]
    async with pool.acquire() as conn, conn.transaction():
        link = await queries.get_link(conn, code)
        program = await queries.get_program(conn, link.program)
        if destination is not None:
            try:
                check_destination(destination, program.destination_domains)
            except SettingsInvalid as exc:
                raise invalid(str(exc), exc.field) from None
        link = await queries.update_link(conn, code, enabled=enabled, destination=destination)
        await audit.record(
            conn, actor=principal(request).actor, action="link.update", object_type="link",
            object_id=code, program_id=link.program_id, details={"fields": sorted(body)},
        )
    _cache_link(request, link, program)
    return web.json_response(_link_json(link, request.config_dict[keys.SETTINGS].base_url))


@requires("integration", "viewer")
async def get_link(request: web.Request) -> web.Response:
    link = await queries.get_link(request.config_dict[keys.POOL], request.match_info["code"])
    return web.json_response(_link_json(link, request.config_dict[keys.SETTINGS].base_url))


@requires("integration", "viewer")
async def list_links(request: web.Request) -> web.Response:
    program = await program_by_slug(request, query_param(request, "program"))
    pool = request.config_dict[keys.POOL]
    referrer_id = await _referrer_filter(request, program)
    limit = limit_param(request)
    items = await queries.list_links(pool, program.id, referrer_id, id_cursor(request), limit)
    nxt = encode_cursor(items[-1].id) if items else None
    base = request.config_dict[keys.SETTINGS].base_url
    return page([_link_json(link, base) for link in items], limit, nxt)


# -- the visit log -----------------------------------------------------------------------------


def _click_json(c: click_queries.Click) -> dict[str, Any]:
    return {
        "click_id": c.click_id,
        "ts": rfc3339(c.ts),
        "code": c.code,
        "referrer": c.referrer,
        "visitor_id": c.visitor_id,
        "ip": c.ip,
        "country": c.country,
        "asn": c.asn,
        "ua": {"browser": c.ua_browser, "os": c.ua_os, "device": c.ua_device},
        "fingerprint": c.fingerprint.hex() if c.fingerprint else None,
        "flags": {
            "bot": c.is_bot,
            "duplicate": c.is_duplicate,
            "anonymous": c.is_anonymous,
            "hosting": c.is_hosting,
        },
        "bot_rule": c.bot_rule,
    }


@requires("viewer", "finance")
async def list_clicks(request: web.Request) -> web.Response:
    program = await program_by_slug(request, query_param(request, "program"))
    pool = request.config_dict[keys.POOL]
    referrer_id = await _referrer_filter(request, program)
    link_id = None
    code = query_param(request, "code", max_len=64)
    if code is not None:
        link = await queries.get_link(pool, code)
        if link.program_id != program.id:
            raise not_found("link")
        link_id = link.id
    since = time_param(request, "since")
    after: tuple[datetime, str] | None = None
    parts = decode_cursor(request, 2)
    if parts is not None:
        try:
            after = (parse_time(parts[0], "cursor"), parts[1])
        except ApiError:
            raise invalid("cursor is not valid", "cursor") from None
        if not re.fullmatch(r"[0-9a-f-]{36}", parts[1]):
            raise invalid("cursor is not valid", "cursor")
    limit = limit_param(request)
    items = await click_queries.list_clicks(
        pool,
        program_id=program.id, referrer_id=referrer_id, link_id=link_id, since=since,
        after=after, limit=limit,
    )
    nxt = encode_cursor(items[-1].ts.isoformat(), items[-1].click_id) if items else None
    return page([_click_json(c) for c in items], limit, nxt)


def add_routes(app: web.Application) -> None:
    r = app.router
    r.add_post("/programs", create_program)
    r.add_get("/programs", list_programs)
    r.add_get("/programs/{slug}", get_program)
    r.add_patch("/programs/{slug}", update_program)
    r.add_post("/referrers", create_referrer)
    r.add_get("/referrers", list_referrers)
    r.add_post("/links", create_link)
    r.add_get("/links", list_links)
    r.add_get("/links/{code}", get_link)
    r.add_patch("/links/{code}", update_link)
    r.add_get("/clicks", list_clicks)

