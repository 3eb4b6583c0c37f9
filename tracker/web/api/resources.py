"""Programs, referrers, links and the visit log."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Any

import asyncpg
from aiohttp import web

from tracker import audit
from tracker.asks.sharing import share_url
from tracker.clicks import queries as click_queries
from tracker.clicks.links import CODE_RE, LinkEntry
from tracker.errors import Conflict
from tracker.formats import CHANNEL_RE, SLUG_RE, rfc3339
from tracker.identity import email_hash
from tracker.programs import queries
from tracker.programs.signing_secrets import (
    MAX_OVERLAP,
    ROTATION_OVERLAP,
    current_secret,
    new_seed,
)
from tracker.programs.validation import (
    KNOWN_KEYS,
    SettingsInvalid,
    check_destination,
    default_destination,
    host_allowed,
    normalise_domain,
    redact_url,
    url_host,
    validate_settings,
)
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
READ_ROLES = tuple(ALL_ROLES)


def _program_json(p: queries.Program, request: web.Request | None = None) -> dict[str, Any]:
    extra: dict[str, Any] = {}
    if request is not None and principal(request).role == "admin":
        # Admins see the secret the merchant signs this program's conversions with (the
        # current one; a rotation's previous one is only said to be accepted until when).
        extra["signing_secret"] = current_secret(
            request.config_dict[keys.SETTINGS].secret_key, p)
        until = p.previous_signing_until
        extra["previous_signing_secret_until"] = (
            rfc3339(until) if until is not None and until > datetime.now(UTC) else None)
    return extra | {
        "id": p.id,
        "slug": p.slug,
        "name": p.name,
        "destination_domains": p.destination_domains,
        "settings": _shown_settings(p.settings),
        "created_at": rfc3339(p.created_at),
    }


def _shown_settings(settings: dict[str, Any]) -> dict[str, Any]:
    """Settings as answered: a webhook URL's credentials (user:pass@) are never shown."""
    url = settings.get("webhook_url")
    if isinstance(url, str) and url:
        return settings | {"webhook_url": redact_url(url)}
    return settings


def _referrer_json(r: queries.Referrer, request: web.Request) -> dict[str, Any]:
    settings = request.config_dict[keys.SETTINGS]
    return {
        "id": r.id,
        "program": r.program,
        "external_id": r.external_id,
        "has_email": r.has_email,
        "name": r.name,
        "variant": r.variant,  # the reward variant (incentive experiment), null outside one
        "kind": r.kind,
        "kind_set": r.kind_set,
        "created_at": rfc3339(r.created_at),
        "share_url": share_url(settings.secret_key, settings.base_url, r.program_id, r.id),
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
        "channel": link.channel,
        "campaign": link.campaign,
        "created_at": rfc3339(link.created_at),
    }


def display_name(body: dict[str, Any], key: str) -> str | None:
    """A person's optional display name: 1 to NAME_MAX printable characters (surrounding
    spaces dropped), or 422 naming `key`."""
    value = body.get(key)
    if value is None:
        return None
    text = value.strip() if isinstance(value, str) else ""
    if not text or len(text) > queries.NAME_MAX or not text.isprintable():
        raise invalid(f"{key} must be 1 to {queries.NAME_MAX} printable characters", key)
    return text


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
    allow_private = request.config_dict[keys.SETTINGS].webhook_allow_private
    try:
        settings = validate_settings(body.get("settings"), domains,
                                     allow_private_webhooks=allow_private)
    except SettingsInvalid as exc:
        raise invalid(str(exc), exc.field) from None
    pool = request.config_dict[keys.POOL]
    async with pool.acquire() as conn, conn.transaction():
        program = await queries.create_program(conn, slug, name, domains, settings,
                                               signing_seed=new_seed())
        await audit.record(
            conn, actor=principal(request).actor, action="program.create", object_type="program",
            object_id=slug, program_id=program.id,
        )
    return web.json_response(_program_json(program, request), status=201)


def _merged_settings(stored: dict[str, Any], patch: dict[str, Any]) -> dict[str, Any]:
    """A PATCH's settings over the stored ones (top-level keys replace). A webhook URL sent back
    as it was shown (credentials redacted) keeps the stored one. A key stored before settings
    were checked, and now unknown, is dropped by sending it as null; until then it is named."""
    merged = {**stored, **patch}
    for key, value in patch.items():
        if value is None and key not in KNOWN_KEYS[""]:
            del merged[key]
    stored_url, sent_url = stored.get("webhook_url"), patch.get("webhook_url")
    if isinstance(stored_url, str) and sent_url == redact_url(stored_url):
        merged["webhook_url"] = stored_url
    for key in merged:
        if key not in KNOWN_KEYS[""] and key not in patch:
            raise invalid(f"the stored setting {key!r} is not a setting refguard knows (it was "
                          f'kept before settings were checked); send {{"settings": {{"{key}": '
                          "null}} to remove it", key)
    return merged


async def _domains_in_use(conn: asyncpg.Connection, program: queries.Program,
                          domains: list[str]) -> None:
    """409 if enabled links lead to a domain this change removes: the redirect would keep
    sending visitors there (only destinations stored for a link are ever used)."""
    if set(domains) >= set(program.destination_domains):
        return
    stranded: dict[str, int] = {}
    for destination, count in await queries.enabled_link_destinations(conn, program.id):
        host = url_host(destination)
        if host is not None and host_allowed(host, domains):
            continue
        where = next((d for d in program.destination_domains
                      if host is not None and host_allowed(host, [d])), host or destination)
        stranded[where] = stranded.get(where, 0) + count
    if stranded:
        listed = ", ".join(f"{d!r} ({n} enabled link{'s' if n != 1 else ''})"
                           for d, n in sorted(stranded.items()))
        raise ApiError(409, "conflict",
                       f"destination_domains: enabled links still lead to {listed}; disable "
                       "them or point them at a remaining domain (PATCH /api/v1/links/{code}) "
                       "before removing it", field="destination_domains",
                       links_by_domain=stranded)


@requires("admin")
async def update_program(request: web.Request) -> web.Response:
    body = await read_json(request)
    await program_by_slug(request, request.match_info["slug"])  # 404 before 422
    domains = _domains(body) if "destination_domains" in body else None
    raw_settings = body.get("settings")
    if raw_settings is not None and not isinstance(raw_settings, dict):
        raise invalid("settings must be an object", "settings")
    if "name" in body and body["name"] is None:  # a program always has a name
        raise invalid("name must be a string; leave it out to keep the name", "name")
    name = string(body, "name", required=False)
    allow_private = request.config_dict[keys.SETTINGS].webhook_allow_private
    async with request.config_dict[keys.POOL].acquire() as conn, conn.transaction():
        # Locked: links created meanwhile are checked against the domains this change leaves.
        program = await queries.get_program(conn, request.match_info["slug"], lock="update")
        domains = program.destination_domains if domains is None else domains
        try:
            settings = validate_settings(_merged_settings(program.settings, raw_settings or {}),
                                         domains, allow_private_webhooks=allow_private)
        except SettingsInvalid as exc:
            raise invalid(str(exc), exc.field) from None
        await _domains_in_use(conn, program, domains)
        updated = await queries.update_program(conn, program.id, name or program.name, domains,
                                               settings)
        await audit.record(
            conn, actor=principal(request).actor, action="program.update", object_type="program",
            object_id=program.slug, program_id=program.id, details={"fields": sorted(body)},
        )
    return web.json_response(_program_json(updated, request))


@requires("admin")
async def rotate_secret(request: web.Request) -> web.Response:
    """A new signing secret, answered once; the previous one is still accepted on incoming
    signatures for `overlap_hours` (default 24; 0 ends it at once, for a leaked secret)."""
    body = await read_json(request) if request.body_exists else {}
    for key in body:
        if key != "overlap_hours":
            raise invalid(f"unknown field {key!r}; the only one is 'overlap_hours'", key)
    hours = body.get("overlap_hours", ROTATION_OVERLAP.total_seconds() / 3600)
    max_hours = MAX_OVERLAP.total_seconds() / 3600
    if isinstance(hours, bool) or not isinstance(hours, int | float) \
            or not 0 <= hours <= max_hours:
        raise invalid(f"overlap_hours must be a number of hours between 0 and {max_hours:g}",
                      "overlap_hours")
    program = await program_by_slug(request, request.match_info["slug"])
    async with request.config_dict[keys.POOL].acquire() as conn, conn.transaction():
        rotated = await queries.rotate_signing_seed(conn, program.id, new_seed(),
                                                    float(hours) * 3600)
        await audit.record(
            conn, actor=principal(request).actor, action="program.secret_rotate",
            object_type="program", object_id=program.slug, program_id=program.id,
            details={"overlap_hours": hours},
        )
    until = rotated.previous_signing_until
    return web.json_response({
        "program": rotated.slug,
        "signing_secret": current_secret(request.config_dict[keys.SETTINGS].secret_key, rotated),
        "previous_signing_secret_until": rfc3339(until) if until is not None else None,
    })


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
    name = display_name(body, "name")
    kind = body.get("kind")
    if kind is not None and kind not in queries.REFERRER_KINDS:
        raise invalid(f"kind must be one of {', '.join(queries.REFERRER_KINDS)} "
                      "(or absent: derived from the referrer's own purchases)", "kind")
    digest = email_hash(request.config_dict[keys.SETTINGS].secret_key, email) if email else None
    async with request.config_dict[keys.POOL].acquire() as conn, conn.transaction():
        referrer, created = await queries.upsert_referrer(conn, program, external_id, digest,
                                                          name, kind=kind)
    return web.json_response(_referrer_json(referrer, request), status=201 if created else 200)


@requires("integration", "viewer")
async def list_referrers(request: web.Request) -> web.Response:
    program = await program_by_slug(request, query_param(request, "program"))
    limit = limit_param(request)
    items = await queries.list_referrers(
        request.config_dict[keys.POOL], program.id, id_cursor(request), limit
    )
    nxt = encode_cursor(items[-1].id) if items else None
    return page([_referrer_json(r, request) for r in items], limit, nxt)


# -- links -------------------------------------------------------------------------------------


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
    destination = _destination(destination, program)
    channel = string(body, "channel", required=False, max_len=32, pattern=CHANNEL_RE)
    campaign = string(body, "campaign", required=False, max_len=128)
    if campaign is not None and not campaign.isprintable():
        raise invalid("campaign must be 1 to 128 printable characters", "campaign")
    pool = request.config_dict[keys.POOL]
    async with pool.acquire() as conn:
        referrer = await queries.get_referrer(conn, program.id, referrer_id)
        for attempt in range(5):
            try:
                async with conn.transaction():
                    # Against the domains as they are when the link is stored (a change of
                    # them waits for this lock, then counts this link).
                    locked = await queries.get_program(conn, program.slug, lock="key share")
                    if locked.destination_domains != program.destination_domains:
                        destination = _destination(destination, locked)
                    link = await queries.create_link(
                        conn, program.id, referrer.id, code or queries.new_code(), destination,
                        channel=channel, campaign=campaign,
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


def _destination(url: str, program: queries.Program) -> str:
    """The destination as it is stored (host in A-label form), or 422."""
    try:
        return check_destination(url, program.destination_domains)
    except SettingsInvalid as exc:
        raise invalid(str(exc), exc.field) from None


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
        program = await queries.get_program(conn, link.program, lock="key share")
        if destination is not None:
            destination = _destination(destination, program)
        elif enabled and not link.enabled:
            # Re-enabling a link whose domain left the program would reopen the redirect.
            try:
                check_destination(link.destination, program.destination_domains)
            except SettingsInvalid as exc:
                raise invalid(f"{exc}; give the link a destination on them to enable it",
                              "enabled") from None
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
    r.add_post("/programs/{slug}/secret/rotate", rotate_secret)
    r.add_post("/referrers", create_referrer)
    r.add_get("/referrers", list_referrers)
    r.add_post("/links", create_link)
    r.add_get("/links", list_links)
    r.add_get("/links/{code}", get_link)
    r.add_patch("/links/{code}", update_link)
    r.add_get("/clicks", list_clicks)

