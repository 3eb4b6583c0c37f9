"""Finance API: rewards, their evidence, approve and reject (DESIGN section 5)."""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from dataclasses import fields, is_dataclass
from datetime import datetime
from typing import Any

from aiohttp import web

from tracker.finance.clearance import STATUSES
from tracker.finance.evidence import Reason, RewardDetail, get_reward, list_rewards, reward_detail
from tracker.finance.ledger import decide
from tracker.formats import rfc3339
from tracker.programs.queries import reward_names
from tracker.web import keys
from tracker.web.api.common import (
    choice_param,
    encode_cursor,
    id_cursor,
    limit_param,
    page,
    principal,
    program_by_slug,
    query_param,
    requires,
)
from tracker.web.api.errors import conflict, invalid, not_found, read_json

REASON_MAX = 1000


def as_json(value: object) -> Any:
    """Evidence (tracker.finance.evidence) as the API answers it: a dataclass as an object of
    its fields (their names are the keys), a reward's detail flat beside the reward, a reason as
    the scan stored it; RFC 3339 times, ids as text, bytes as hex."""
    if isinstance(value, RewardDetail):
        return {**as_json(value.reward), **{f.name: as_json(getattr(value, f.name))
                                            for f in fields(value) if f.name != "reward"}}
    if isinstance(value, Reason):
        return as_json(value.stored)
    if is_dataclass(value) and not isinstance(value, type):
        return {f.name: as_json(getattr(value, f.name)) for f in fields(value)}
    if isinstance(value, datetime):
        return rfc3339(value)
    if isinstance(value, uuid.UUID):
        return str(value)
    if isinstance(value, bytes):
        return value.hex()
    if isinstance(value, Mapping):
        return {k: as_json(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [as_json(v) for v in value]
    return value


def _for_role(request: web.Request, answer: dict[str, Any]) -> dict[str, Any]:
    """A reward's JSON as the caller may see it: a coupon's code only for finance and admins
    (it is a voucher worth money)."""
    if principal(request).role not in ("finance", "admin"):
        answer.pop("coupon_code", None)
    return answer


def _reward_id(request: web.Request) -> int:
    raw = request.match_info["reward_id"]
    if not (raw.isascii() and raw.isdigit()) or len(raw) > 18:
        raise not_found("reward")
    return int(raw)


@requires("finance", "viewer")
async def list_(request: web.Request) -> web.Response:
    status = choice_param(request, "status", STATUSES)
    limit = limit_param(request)
    program = query_param(request, "program", max_len=63)
    if program is not None:
        await program_by_slug(request, program)  # an unknown program is a 404, not no rewards
    rewards = await list_rewards(
        request.config_dict[keys.POOL], status=status, program=program,
        referrer=query_param(request, "referrer", max_len=128),
        after=id_cursor(request), limit=limit)
    names = await reward_names(request.config_dict[keys.POOL], [r.id for r in rewards])
    items = [_for_role(request, as_json(r)) | dict(zip(("referrer_name", "customer_name"),
                                   names.get(r.id, (None, None)), strict=True))
             for r in rewards]
    return page(items, limit, encode_cursor(rewards[-1].id) if rewards else None)


@requires("finance", "viewer")
async def get(request: web.Request) -> web.Response:
    async with request.config_dict[keys.POOL].acquire() as conn:
        detail = await reward_detail(conn, _reward_id(request))
    if detail is None:
        raise not_found("reward")
    return web.json_response(_for_role(request, as_json(detail)))


async def _decide(request: web.Request, action: str) -> web.Response:
    reward_id = _reward_id(request)
    body = await read_json(request)
    reason = body.get("reason")
    if not isinstance(reason, str) or not reason.strip():
        raise invalid("reason is required: say why", "reason")
    if len(reason) > REASON_MAX or not reason.isprintable():
        raise invalid(f"reason must be printable text of at most {REASON_MAX} characters",
                      "reason")
    expected = body.get("expected_status")
    if expected is not None and expected not in STATUSES:
        raise invalid(f"expected_status must be one of {', '.join(STATUSES)}",
                      "expected_status")
    who = principal(request)
    async with request.config_dict[keys.POOL].acquire() as conn:
        decision = await decide(conn, reward_id, action, who.actor, reason.strip(),
                                person=who.identity, expected_status=expected)
        reward = await get_reward(conn, reward_id)
    if reward is None:  # pragma: no cover (it was just decided)
        raise conflict("the reward disappeared")
    answer = _for_role(request, as_json(reward))
    if decision.needed == 2 and decision.approvals < decision.needed:  # awaits a second person
        answer["approvals"] = decision.approvals
        answer["approvals_needed"] = decision.needed
        return web.json_response(answer, status=202)
    return web.json_response(answer)


@requires("finance")
async def approve(request: web.Request) -> web.Response:
    return await _decide(request, "approve")


@requires("finance")
async def reject(request: web.Request) -> web.Response:
    return await _decide(request, "reject")


def add_routes(app: web.Application) -> None:
    app.router.add_get("/rewards", list_)
    app.router.add_get("/rewards/{reward_id}", get)
    app.router.add_post("/rewards/{reward_id}/approve", approve)
    app.router.add_post("/rewards/{reward_id}/reject", reject)
