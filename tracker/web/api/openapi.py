"""The OpenAPI 3.1 document served at /api/v1/openapi.json: the full reference for /api."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from attribution.models import MODELS
from tracker.formats import CONVERSION_TYPES, CREDITED_TYPES
from tracker.scoring.queries import BREAKDOWN_DIMENSIONS
from tracker.web.api import API_PREFIX
from tracker.web.api.errors import json_errors

_ERROR = {"$ref": "#/components/responses/Error"}
# Every operation that reads or writes the database: while none can be reached (a restart, a
# failover, an unreachable read replica for a report) the answer is 503 with Retry-After,
# never a half-applied change; retry the same request (with the same event_id).
_UNAVAILABLE = {"$ref": "#/components/responses/Unavailable"}
_SLUG = {"type": "string", "pattern": "^[a-z0-9][a-z0-9_-]{0,62}$", "description": "program slug"}
_ID = {"type": "string", "minLength": 1, "maxLength": 128}
_CHANNEL = {"type": "string", "pattern": "^[a-z0-9][a-z0-9_-]{0,31}$"}


# What each stage of GET /api/v1/reports/funnel counts (tracker/asks/funnel.py says the same).
_FUNNEL_DEFINITIONS = (
    "Each stage counts what happened in [since, until) by its own time. asked: asks sent to "
    "the merchant's messaging (by sent_at). shared: shares from the share page or POST "
    "/api/v1/shares (by occurred_at). clicks: clicks that count (no bots, no duplicates); "
    "unique_visitors: their distinct visitors. signups, trials, purchases, renewals: "
    "conversions by stored attribution credit (a conversion two referrers share counts half "
    "for each). retained_90d: a referred customer is retained at 90 days when they made a "
    "purchase or renewal 90 days or more after their first purchase; counted by the credit of "
    "that first purchase, at its time (so only first purchases at least 90 days old can "
    "count). refunds: refunds and chargebacks of credited conversions. Groups: referrer (an "
    "ask's customer is its referrer); channel: a share's channel, a click's link's channel "
    "(the share page tags one link per channel), a conversion's: the channel of the link of "
    "the referrer's last click among its touchpoints (asks have no channel: asked is null in "
    "channel rows, counted in the total); trigger: the trigger type of the share's ask, else "
    "of the referrer's latest ask sent before the share, click or conversion and at most 30 "
    "days before it (the breakdown's rule; null: none). "
    "total: the whole program (unique_visitors distinct over it)."
)


def _list_of(ref: str) -> dict[str, Any]:
    return {
        "type": "object",
        "required": ["items", "next"],
        "properties": {
            "items": {"type": "array", "items": {"$ref": f"#/components/schemas/{ref}"}},
            "next": {"type": ["string", "null"], "description": "cursor of the next page"},
        },
    }


def _op(summary: str, roles: str, *, body: str | None = None, ok: int = 200,
        answer: dict[str, Any] | None = None, params: list[dict[str, Any]] | None = None,
        public: bool = False, also: dict[int, str] | None = None) -> dict[str, Any]:
    """One operation; `also` names other success statuses that answer the same schema."""
    content = {"application/json": {"schema": answer or {}}}
    op: dict[str, Any] = {
        "summary": summary,
        "description": f"Roles: {roles}.",
        "responses": {
            str(ok): {"description": "OK", "content": content},
            **{str(s): {"description": d, "content": content} for s, d in (also or {}).items()},
            **{str(s): _ERROR for s in (400, 401, 403, 404, 409, 413, 415, 422)},
            "503": _UNAVAILABLE,
        },
    }
    if public:
        op["security"] = []
    if params:
        op["parameters"] = params
    if body:
        op["requestBody"] = {
            "required": True,
            "content": {"application/json": {"schema": {"$ref": f"#/components/schemas/{body}"}}},
        }
    return op


def _q(name: str, description: str, schema: dict[str, Any] | None = None,
       required: bool = False) -> dict[str, Any]:
    return {"name": name, "in": "query", "required": required, "description": description,
            "schema": schema or {"type": "string"}}


def _path(name: str) -> dict[str, Any]:
    return {"name": name, "in": "path", "required": True, "schema": {"type": "string"}}


def _with_csv(op: dict[str, Any]) -> dict[str, Any]:
    """`op` whose success may also be answered as CSV (`Accept: text/csv`)."""
    op["responses"]["200"]["content"] = {**op["responses"]["200"]["content"],
                                         "text/csv": {"schema": {"type": "string"}}}
    return op


_PAGING = [
    _q("limit", "page size (default 100)", {"type": "integer", "minimum": 1, "maximum": 1000}),
    _q("cursor", "the `next` value of the previous page"),
]

SCHEMAS: dict[str, Any] = {
    "Error": {
        "type": "object", "required": ["error"],
        "properties": {"error": {"type": "object", "required": ["code", "message"], "properties": {
            "code": {"type": "string"}, "message": {"type": "string"},
            "field": {"type": "string"}}}},
    },
    "ProgramSettings": {
        "type": "object",
        "description": "Every key is checked at every level: an unknown one is refused (422 "
                       "naming it and the closest known key). Defaults are filled in.",
        "properties": {
            "attribution_model": {"enum": list(MODELS)},
            "attribution_window_days": {"type": "integer", "minimum": 1, "maximum": 365},
            "time_decay_half_life_days": {"type": "number", "minimum": 0.01, "maximum": 365},
            "hold_days": {"type": "integer", "minimum": 0, "maximum": 365},
            "review_at": {"type": "number", "minimum": 0, "maximum": 1},
            "reject_at": {"type": "number", "minimum": 0, "maximum": 1},
            "fingerprint": {"enum": ["headers", "browser"]},
            "fallback_url": {"type": ["string", "null"], "description": "where disabled links go "
                             "instead of a 404; must be on the program's domains (stored with "
                             "its host in A-label form, as browsers read it)"},
            "default_destination": {"type": ["string", "null"]},
            "reward": {"type": "object", "additionalProperties": False, "properties": {
                "currency": {"type": "string", "pattern": "^[A-Z]{3}$"},
                "rules": {"type": "array", "items": {"$ref": "#/components/schemas/RewardRule"}},
                "variants": {"type": "array", "minItems": 1, "items": {
                    "type": "object", "additionalProperties": False, "required": ["name"],
                    "description": "an experiment arm; a referrer keeps its variant",
                    "properties": {
                        "name": {"type": "string", "minLength": 1, "maxLength": 64},
                        "weight": {"type": "number", "exclusiveMinimum": 0, "maximum": 1000000},
                        "rules": {"type": "array",
                                  "items": {"$ref": "#/components/schemas/RewardRule"}}}}},
            }},
            "reject_action": {"enum": ["reject", "flag"]},
            "webhook_url": {"type": ["string", "null"], "description": "receives signed "
                            "reward.approved and reward.paid events (POST, JSON, retried). "
                            "Must be a public address: loopback, private, link-local (cloud "
                            "metadata) and local names are refused here and at every delivery "
                            "(the name is resolved each time) unless the server runs with "
                            "REFGUARD_WEBHOOK_ALLOW_PRIVATE=1. Credentials in it (user:pass@) "
                            "are shown as ***@; sending that back keeps the stored ones"},
            "four_eyes_above": {"type": ["integer", "null"], "minimum": 0,
                                "description": "two finance approvals above this amount"},
            "adaptive_hold": {"type": ["object", "null"], "additionalProperties": False,
                              "properties": {
                                  k: {"type": "integer", "minimum": 0}
                                  for k in ("risk_extra_days", "clean_after", "clean_hold_days")}},
            "asks": {"type": "object", "additionalProperties": False,
                     "description": "when to ask a happy customer to refer (the asks job; "
                                    "GET /api/v1/asks). Asks reach the merchant's messaging "
                                    "only as the webhook referral.ask: without webhook_url "
                                    "every ask is suppressed (no_webhook_url)",
                     "properties": {
                "rules": {"type": "array", "items": {
                    "type": "object", "additionalProperties": False, "required": ["on"],
                    "properties": {"on": {"type": "string", "pattern": "^[a-z0-9_.-]{1,64}$"},
                                   "min_score": {"type": ["number", "null"]},
                                   "nth": {"type": ["integer", "null"], "minimum": 1}}}},
                "within_hours": {"type": ["integer", "null"], "minimum": 0, "maximum": 8760},
                "top_share": {"type": ["number", "null"], "minimum": 0, "maximum": 1},
                "cooldown_days": {"type": ["integer", "null"], "minimum": 0, "maximum": 3650},
                "max_per_customer": {"type": ["integer", "null"], "minimum": 0}}},
            "share": {"type": "object", "additionalProperties": False, "properties": {
                "message": {"type": ["string", "null"], "maxLength": 2000,
                            "description": "with {name}, {reward} and {link}"},
                "channels": {"type": ["array", "null"], "maxItems": 50, "items": {
                    "type": "string", "pattern": "^[a-z0-9_.-]{1,64}$"}}}},
            "timezone": {"type": "string", "description": "IANA name, for reports"},
        },
        "additionalProperties": False,
    },
    "RewardRule": {
        "type": "object", "required": ["beneficiary", "on"], "additionalProperties": False,
        "description": "exactly one of flat or percent",
        "properties": {
            "beneficiary": {"enum": ["referrer", "referee"]},
            "on": {"enum": list(CREDITED_TYPES)},
            "flat": {"type": "integer", "minimum": 0},
            "percent": {"type": "number", "minimum": 0, "maximum": 100},
            "tiers": {"type": "array", "items": {
                "type": "object", "required": ["after"], "additionalProperties": False,
                "properties": {
                    "after": {"type": "integer", "minimum": 1,
                              "description": "approved referrals after which this rate"},
                    "flat": {"type": "integer", "minimum": 0},
                    "percent": {"type": "number", "minimum": 0, "maximum": 100}}}},
            "cap_per_day": {"type": ["integer", "null"], "minimum": 0,
                            "description": "per referrer, minor units"},
            "cap_per_month": {"type": ["integer", "null"], "minimum": 0},
            "first_only": {"type": "boolean",
                           "description": "the customer's first conversion only"},
            "months": {"type": ["integer", "null"], "minimum": 1,
                       "description": "recurring: within N months of the first"},
            "kind": {"enum": ["cash", "credit", "coupon"],
                     "description": "what is given (default cash, paid out in payout "
                                    "batches); credit: store credit the merchant applies, never "
                                    "paid out; coupon: one code of `pool` on approval"},
            "pool": {"type": "string", "pattern": "^[a-z0-9][a-z0-9_-]{0,63}$",
                     "description": "a coupon rule's pool of codes (required with kind "
                                    "coupon, refused with the others)"},
        },
    },
    "CouponUpload": {
        "type": "object", "required": ["pool", "codes"],
        "properties": {
            "pool": {"type": "string", "pattern": "^[a-z0-9][a-z0-9_-]{0,63}$"},
            "codes": {"type": "array", "minItems": 1, "maxItems": 10000,
                      "items": {"type": "string", "minLength": 1, "maxLength": 64}},
        },
    },
    "CouponUploaded": {
        "type": "object", "required": ["program", "pool", "added", "already"],
        "properties": {
            "program": {"type": "string"}, "pool": {"type": "string"},
            "added": {"type": "integer"},
            "already": {"type": "integer", "description": "codes the pool had already"},
            "available": {"type": "integer"}, "assigned": {"type": "integer"},
        },
    },
    "CouponCounts": {
        "type": "object", "required": ["program", "items"],
        "properties": {
            "program": {"type": "string"},
            "items": {"type": "array", "items": {
                "type": "object", "required": ["pool", "available", "assigned"],
                "properties": {"pool": {"type": "string"}, "available": {"type": "integer"},
                               "assigned": {"type": "integer"}}}},
        },
    },
    "Reward": {
        "type": "object",
        "required": ["id", "program", "referrer", "beneficiary", "conversion", "event_id",
                     "amount", "currency", "status", "risk_score", "reasons", "hold_until",
                     "created_at", "decided_by", "decided_at"],
        "properties": {
            "id": {"type": "integer"}, "program": {"type": "string"},
            "referrer": {"type": "string", "description": "the referrer's external_id"},
            "beneficiary": {"enum": ["referrer", "referee"]},
            "payee": {"type": "string", "description": "who is paid (external id)"},
            "referrer_name": {"type": ["string", "null"],
                              "description": "the referrer's display name (list only)"},
            "customer_name": {"type": ["string", "null"],
                              "description": "the converting customer's display name (list "
                                             "only)"},
            "conversion": {"type": "integer"}, "event_id": {"type": "string"},
            "amount": {"type": "integer", "description": "minor units"},
            "currency": {"type": "string"},
            "status": {"enum": ["pending", "flagged", "approved", "rejected", "paid",
                                "reversed"]},
            "risk_score": {"type": ["number", "null"]},
            "reasons": {"type": "array", "items": {"type": "object"}},
            "hold_until": {"type": "string", "format": "date-time"},
            "created_at": {"type": "string", "format": "date-time"},
            "flagged_at": {"type": ["string", "null"], "format": "date-time"},
            "decided_by": {"type": ["string", "null"]},
            "decided_at": {"type": ["string", "null"], "format": "date-time"},
            "decision_reason": {"type": ["string", "null"]},
            "batch_id": {"type": ["string", "null"]},
            "paid_at": {"type": ["string", "null"], "format": "date-time"},
            "calculation": {"type": "object", "description": "rule, rate, tier, credit, caps"},
            "kind": {"enum": ["cash", "credit", "coupon"],
                     "description": "cash is paid out in payout batches; credit (store credit) "
                                    "and coupon rewards are the merchant's to give, never "
                                    "paid out"},
            "coupon_code": {"type": ["string", "null"],
                            "description": "a coupon reward's code once approved (finance and "
                                           "admin only)"},
            "variant": {"type": ["string", "null"],
                        "description": "the reward variant whose rules made it (incentive "
                                       "experiments); null under the plain reward.rules"},
            "approvals": {"type": "integer"}, "approvals_needed": {"type": "integer"},
        },
    },
    "Ask": {
        "type": "object",
        "required": ["id", "program", "customer", "trigger", "status", "reason", "deadline",
                     "sent_at", "share_url"],
        "properties": {
            "id": {"type": "integer", "description": "the ask_id of its referral.ask"},
            "program": {"type": "string"},
            "customer": {"type": "string", "description": "the customer id (as a referrer, "
                                                          "its external_id)"},
            "trigger": {"type": "object", "required": ["type", "score", "occurred_at"],
                        "properties": {
                            "type": {"type": "string", "description": "the event's type, or "
                                                                      "purchase"},
                            "score": {"type": ["number", "null"]},
                            "occurred_at": {"type": "string", "format": "date-time"}}},
            "status": {"enum": ["queued", "sent", "shared", "clicked", "converted", "expired",
                                "suppressed"],
                       "description": "queued: its referral.ask waits for delivery; sent: "
                                      "delivered; shared / clicked / converted: after it was "
                                      "sent, the referrer shared (a share with this ask_id, or "
                                      "any after sent_at), a person (not a bot) clicked one "
                                      "of their links, a conversion was credited to them"},
            "reason": {"type": ["string", "null"], "enum": [
                None, "late", "no_candidate_scores", "no_webhook_url", "fraud_flag",
                "rejected_reward", "reversed_reward", "flagged_reward", "not_top_share",
                "cooldown", "cap",
                "past_deadline", "undelivered", "customer_erased"],
                       "description": "why expired or suppressed: late (taken up after the "
                                      "deadline), no_candidate_scores (no candidate model "
                                      "before the deadline), no_webhook_url (the program has "
                                      "no webhook to hand it to), fraud_flag / "
                                      "rejected_reward / reversed_reward / flagged_reward, "
                                      "not_top_share "
                                      "(percentile below 1 - top_share, or not scored), "
                                      "cooldown, cap (max_per_customer), past_deadline (the "
                                      "webhook was due only after the deadline), undelivered "
                                      "(the receiver did not take it before the deadline), "
                                      "customer_erased (the customer was erased before it "
                                      "was sent)"},
            "deadline": {"type": "string", "format": "date-time",
                         "description": "the trigger's occurred_at + within_hours"},
            "sent_at": {"type": ["string", "null"], "format": "date-time"},
            "share_url": {"type": ["string", "null"],
                          "description": "the customer's share page (null when they were not "
                                         "asked)"},
            "created_at": {"type": "string", "format": "date-time"},
        },
    },
    "RewardDetail": {
        "allOf": [{"$ref": "#/components/schemas/Reward"}, {
            "type": "object",
            "required": ["conversion_detail", "touchpoints", "credits", "graph", "rings",
                         "approvals", "history"],
            "properties": {
                "conversion_detail": {"type": "object"},
                "touchpoints": {"type": "array", "items": {"type": "object"}},
                "credits": {"type": "array", "items": {"type": "object"}},
                "graph": {"type": "object", "required": ["nodes", "edges"], "properties": {
                    "nodes": {"type": "array", "items": {"type": "object"}},
                    "edges": {"type": "array", "items": {"type": "object"}}}},
                "rings": {"type": "array", "items": {"type": "object"}},
                "approvals": {"type": "array", "items": {"type": "object"}},
                "history": {"type": "array", "items": {"type": "object"}},
            }}],
    },
    "Decision": {
        "type": "object", "required": ["reason"],
        "properties": {
            "reason": {"type": "string", "minLength": 1, "maxLength": 1000},
            "expected_status": {"enum": ["pending", "flagged", "approved", "rejected", "paid",
                                         "reversed"],
                                "description": "the status the decider saw: if the reward has "
                                               "another one now (someone decided it meanwhile) "
                                               "the answer is 409, never an overturn of a "
                                               "decision the decider did not see"},
        },
    },
    "PayoutLine": {
        "type": "object",
        "required": ["program", "beneficiary", "amount", "currency", "reward_ids"],
        "properties": {
            "program": {"type": "string"}, "beneficiary": {"type": "string"},
            "amount": {"type": "integer", "description": "paid, minor units"},
            "currency": {"type": "string"},
            "reward_ids": {"type": "array", "items": {"type": "integer"}},
        },
    },
    "PayoutBatch": {
        "type": "object", "required": ["batch_id", "created_at", "created_by", "lines", "totals"],
        "properties": {
            "batch_id": {"type": "string", "format": "uuid"},
            "created_at": {"type": "string", "format": "date-time"},
            "created_by": {"type": "string", "description": "the actor who exported it"},
            "lines": {"description": "in a list: how many lines (payees); for one batch: its "
                                     "lines",
                      "oneOf": [{"type": "integer"}, {"type": "array", "items": {
                          "$ref": "#/components/schemas/PayoutLine"}}]},
            "totals": {"type": "object", "additionalProperties": {"type": "integer"},
                       "description": "{currency: amount paid}"},
        },
    },
    "DecisionsRow": {
        "type": "object",
        "required": ["flagged", "rejected", "held", "awaiting", "decided", "overturned",
                     "overturn_rate", "money"],
        "properties": {
            "code": {"type": "string", "description": "a fraud reason code (`none`: held "
                                                      "rewards without reasons)"},
            "flagged": {"type": "integer", "description": "rewards carrying the code that "
                                                          "clearance flagged for finance"},
            "rejected": {"type": "integer", "description": "rewards carrying it that "
                                                           "clearance rejected automatically"},
            "held": {"type": "integer", "description": "flagged + rejected"},
            "awaiting": {"type": "integer", "description": "flagged ones still waiting for "
                                                           "finance"},
            "decided": {"type": "integer", "description": "held - awaiting"},
            "overturned": {"type": "integer", "description": (
                "held rewards finance approved at least once (a completed approval by a "
                "person in the audit log), whatever happened after")},
            "overturn_rate": {"type": ["number", "null"],
                              "description": "overturned / decided; null when none is decided"},
            "money": {"type": "object", "required": ["held", "overturned"], "properties": {
                k: {"type": "object", "additionalProperties": {"type": "integer"}}
                for k in ("held", "overturned")},
                "description": "per currency of the held rewards, minor units: the held "
                               "rewards' amounts and the overturned ones'"},
        },
    },
    "DecisionsReport": {
        "type": "object", "required": ["program", "reasons", "total"],
        "properties": {
            "program": {"type": "string"},
            "reasons": {"type": "array",
                        "items": {"$ref": "#/components/schemas/DecisionsRow"}},
            "total": {"$ref": "#/components/schemas/DecisionsRow"},
        },
    },
    "ProgramCreate": {
        "type": "object", "required": ["slug", "name", "destination_domains"],
        "properties": {
            "slug": {"type": "string", "pattern": "^[a-z0-9][a-z0-9_-]{0,62}$"},
            "name": {"type": "string", "minLength": 1, "maxLength": 200},
            "destination_domains": {"type": "array", "minItems": 1, "items": {"type": "string"}},
            "settings": {"$ref": "#/components/schemas/ProgramSettings"},
        },
    },
    "ProgramUpdate": {
        "type": "object",
        "properties": {
            "name": {"type": "string", "minLength": 1, "maxLength": 200},
            "destination_domains": {"type": "array", "minItems": 1, "items": {"type": "string"}},
            "settings": {"$ref": "#/components/schemas/ProgramSettings"},
        },
    },
    "Program": {
        "type": "object", "required": ["id", "slug", "name", "destination_domains", "settings"],
        "properties": {
            "id": {"type": "integer"}, "slug": {"type": "string"}, "name": {"type": "string"},
            "destination_domains": {"type": "array", "items": {"type": "string"},
                                    "description": "A-label form (xn--...), as browsers "
                                                   "resolve them (UTS #46 non-transitional)"},
            "settings": {"$ref": "#/components/schemas/ProgramSettings"},
            "created_at": {"type": "string", "format": "date-time"},
            "signing_secret": {"type": "string", "description": "admins only: the current "
                               "secret conversions and events are signed with, and webhooks "
                               "are signed with"},
            "previous_signing_secret_until": {
                "type": ["string", "null"], "format": "date-time",
                "description": "admins only: after a rotation, until when the previous secret "
                               "is still accepted on incoming signatures"},
        },
    },
    "SecretRotate": {
        "type": "object", "additionalProperties": False,
        "properties": {"overlap_hours": {
            "type": "number", "minimum": 0, "maximum": 168,
            "description": "how long the previous secret stays accepted (default 24; 0: at "
                           "once, for a leaked secret)"}},
    },
    "SecretRotation": {
        "type": "object",
        "required": ["program", "signing_secret", "previous_signing_secret_until"],
        "properties": {
            "program": {"type": "string"},
            "signing_secret": {"type": "string", "description": "the new secret"},
            "previous_signing_secret_until": {"type": ["string", "null"],
                                              "format": "date-time"},
        },
    },
    "ReferrerCreate": {
        "type": "object", "required": ["program", "external_id"],
        "properties": {
            "program": _SLUG,
            "external_id": {"type": "string", "minLength": 1, "maxLength": 128},
            "email": {"type": "string", "maxLength": 320,
                      "description": "stored only as a keyed hash"},
            "name": {"type": "string", "minLength": 1, "maxLength": 200,
                     "description": "display name, printable; given again it replaces the "
                                    "stored one; erasure removes it"},
            "kind": {"enum": ["customer", "non_buyer"],
                     "description": "the advocate kind, set explicitly (given again it replaces "
                                    "the stored one); absent: derived from the data"},
        },
    },
    "Referrer": {
        "type": "object", "required": ["id", "program", "external_id"],
        "properties": {
            "id": {"type": "integer"}, "program": {"type": "string"},
            "external_id": {"type": "string"}, "has_email": {"type": "boolean"},
            "name": {"type": ["string", "null"], "description": "display name"},
            "variant": {"type": ["string", "null"],
                        "description": "the reward variant (settings.reward.variants) assigned "
                                       "when first seen; it never changes. null outside an "
                                       "experiment"},
            "kind": {"enum": ["customer", "non_buyer"],
                     "description": "advocate kind: `customer` when the referrer has purchases "
                                    "of its own (a purchase or renewal whose customer_id is its "
                                    "external_id), else `non_buyer` (content sharer, affiliate, "
                                    "employee); a kind set explicitly wins (`kind_set`)"},
            "kind_set": {"type": "boolean",
                         "description": "true: `kind` was set by the merchant, not derived"},
            "created_at": {"type": "string", "format": "date-time"},
            "share_url": {"type": "string", "description": (
                "the referrer's share page (GET /s/{token}, public, the token signed per "
                "referrer): their link, the pre-written message of settings.share and a "
                "button per channel, each recording a share on the channel's own link")},
        },
    },
    "LinkCreate": {
        "type": "object", "required": ["program", "referrer"],
        "properties": {
            "program": _SLUG,
            "referrer": {**_ID, "description": "the referrer's external_id"},
            "destination": {"type": "string", "minLength": 1, "maxLength": 2048,
                            "description": "on the program's domains"},
            "code": {"type": "string", "pattern": "^[A-Za-z0-9_-]{1,64}$"},
            "channel": {**_CHANNEL, "description": "the channel the link is shared on (email, "
                        "sms, whatsapp, x, ...): clicks through it count under it"},
            "campaign": {"type": "string", "minLength": 1, "maxLength": 128,
                         "description": "printable text naming a campaign"},
        },
    },
    "LinkUpdate": {
        "type": "object",
        "properties": {"enabled": {"type": "boolean"}, "destination": {
            "type": "string", "minLength": 1, "maxLength": 2048}},
    },
    "Link": {
        "type": "object", "required": ["code", "url", "destination", "enabled"],
        "properties": {
            "id": {"type": "integer"}, "program": {"type": "string"},
            "referrer": {"type": "string"}, "code": {"type": "string"},
            "url": {"type": "string"}, "destination": {"type": "string"},
            "enabled": {"type": "boolean"},
            "channel": {"type": ["string", "null"]}, "campaign": {"type": ["string", "null"]},
            "created_at": {"type": "string", "format": "date-time"},
        },
    },
    "ConversionCreate": {
        "type": "object", "required": ["program", "event_id", "type", "customer_id"],
        "additionalProperties": False,
        "properties": {
            "program": _SLUG,
            "event_id": {"type": "string", "minLength": 1, "maxLength": 128},
            "type": {"enum": list(CONVERSION_TYPES)},
            "customer_id": {"type": "string", "minLength": 1, "maxLength": 128},
            "email": {"type": "string", "description": "stored only as a keyed hash"},
            "amount": {"type": "integer", "minimum": 0, "description": "minor units"},
            "currency": {"type": "string", "pattern": "^[A-Z]{3}$",
                         "description": "of the amount; default the program's reward currency"},
            "occurred_at": {"type": "string", "format": "date-time",
                            "description": "default now; at most 5 minutes ahead"},
            "click_id": {"type": "string", "format": "uuid", "description": "the rg_cid"},
            "visitor_id": {"type": "string", "maxLength": 64},
            "referral_code": {"type": "string", "description": "a link code typed by hand"},
            "ip": {"type": "string"}, "user_agent": {"type": "string"},
            "original_event_id": {"type": "string", "description": (
                "for refund/chargeback, optional: the event reversed. It must be a stored "
                "purchase (or other non-reversal conversion) of the same customer_id, in the "
                "same currency, and the amount no more than what earlier refunds and "
                "chargebacks left of it: 422 otherwise. Without it the refund reverses the "
                "customer's latest purchase, renewal or trial with an amount at or before its "
                "occurred_at (preferring one in its currency with at least its amount left), "
                "checked the same way; with none such it is stored naming no purchase")},
            "customer_name": {"type": "string", "minLength": 1, "maxLength": 200,
                              "description": "the customer's display name, printable; the "
                                             "latest conversion's is kept; part of the body "
                                             "(another name under the same event_id is 409)"},
        },
    },
    "Conversion": {
        "type": "object", "required": ["id", "program", "event_id", "type", "customer_id"],
        "properties": {
            "id": {"type": "integer"}, "program": {"type": "string"},
            "event_id": {"type": "string"}, "type": {"type": "string"},
            "customer_id": {"type": "string"}, "amount": {"type": ["integer", "null"]},
            "currency": {"type": ["string", "null"]},
            "occurred_at": {"type": "string", "format": "date-time"},
            "received_at": {"type": "string", "format": "date-time"},
        },
    },
    "EventCreate": {
        "type": "object", "additionalProperties": False,
        "required": ["program", "event_id", "customer_id", "type", "occurred_at"],
        "properties": {
            "program": _SLUG,
            "event_id": {**_ID, "description": "idempotency key within the program"},
            "customer_id": {**_ID, "description": "the merchant's customer id (a referrer's "
                            "external_id is the same id space)"},
            "type": {"type": "string", "pattern": "^[a-z0-9][a-z0-9_.-]{0,63}$",
                     "not": {"enum": list(CONVERSION_TYPES)},
                     "description": "the merchant's word: nps, review, milestone, "
                                    "support_resolved, ...; the conversion types are refused "
                                    "(report those to /conversions)"},
            "occurred_at": {"type": "string", "format": "date-time",
                            "description": "RFC 3339 with an offset; from 2000 to at most 5 "
                                           "minutes ahead"},
            "score": {"type": ["number", "null"], "minimum": -1e9, "maximum": 1e9,
                      "description": "where the type has one (NPS 0-10, stars 1-5)"},
            "properties": {"type": ["object", "null"], "description": (
                "free data: at most 4096 bytes as compact JSON, nested at most 4 levels (the "
                "object itself is the first), keys of 1 to 64 characters, no NUL in text, "
                "finite numbers")},
        },
    },
    "Event": {
        "type": "object",
        "required": ["id", "program", "event_id", "customer_id", "type", "occurred_at",
                     "score", "properties", "received_at"],
        "properties": {
            "id": {"type": "integer"}, "program": {"type": "string"},
            "event_id": {"type": "string"}, "customer_id": {"type": "string"},
            "type": {"type": "string"},
            "occurred_at": {"type": "string", "format": "date-time"},
            "score": {"type": ["number", "null"]}, "properties": {"type": "object"},
            "received_at": {"type": "string", "format": "date-time"},
        },
    },
    "ShareCreate": {
        "type": "object", "additionalProperties": False,
        "required": ["program", "referrer", "channel"],
        "properties": {
            "program": _SLUG,
            "referrer": {**_ID, "description": "the referrer's external_id"},
            "channel": _CHANNEL,
            "occurred_at": {"type": "string", "format": "date-time",
                            "description": "default now; from 2000 to at most 5 minutes "
                                           "ahead"},
            "ask_id": {"type": "integer", "minimum": 1, "maximum": 2**63 - 1,
                       "description": "the ask this share answers: an ask of the program "
                                      "made to this referrer (404 unknown, 422 another "
                                      "customer's)"},
        },
    },
    "Share": {
        "type": "object",
        "required": ["id", "program", "referrer", "channel", "ask_id", "occurred_at",
                     "source", "created_at"],
        "properties": {
            "id": {"type": "integer"}, "program": {"type": "string"},
            "referrer": {"type": "string"}, "channel": {"type": "string"},
            "ask_id": {"type": ["integer", "null"]},
            "occurred_at": {"type": "string", "format": "date-time"},
            "source": {"enum": ["page", "api"]},
            "created_at": {"type": "string", "format": "date-time"},
        },
    },
    "AttributionRow": {
        "type": "object", "required": ["referrer", "conversions", "value"],
        "properties": {"referrer": {"type": "string"}, "conversions": {"type": "number"},
                       "value": {"type": "number"},
                       "model": {"type": "string", "description": "when all models are listed"}},
    },
    "AttributionReport": {
        "type": "object", "required": ["program", "model", "rows"],
        "properties": {
            "program": {"type": "string"}, "model": {"type": ["string", "null"]},
            "rows": {"type": "array", "items": {"$ref": "#/components/schemas/AttributionRow"}},
            "models": {"type": "object", "additionalProperties": {
                "type": "array", "items": {"$ref": "#/components/schemas/AttributionRow"}}},
        },
    },
    "FunnelReport": {
        "type": "object", "required": ["program", "by", "rows", "total"],
        "description": _FUNNEL_DEFINITIONS,
        "properties": {
            "program": {"type": "string"},
            "by": {"enum": ["referrer", "channel", "trigger"]},
            "since": {"type": ["string", "null"], "format": "date-time"},
            "until": {"type": ["string", "null"], "format": "date-time"},
            "rows": {"type": "array", "items": {"$ref": "#/components/schemas/FunnelRow"}},
            "total": {"$ref": "#/components/schemas/FunnelRow"}},
    },
    "FunnelRow": {
        "type": "object",
        "description": "one group (named by the key `by` names: `referrer`, `channel` or "
                       "`trigger`; null: no channel, or no ask before) or the total",
        "properties": {
            **{k: {"type": ["integer", "null"]} for k in ("asked", "shared", "clicks",
                                                          "unique_visitors", "refunds")},
            **{k: {"type": "number"} for k in ("signups", "trials", "purchases",
                                               "retained_90d", "renewals")},
            "rates": {"type": "object", "description": (
                "per stage from shared on: that stage / the stage before it (shared / asked, "
                "clicks / shared, unique_visitors / clicks, signups / unique_visitors, "
                "trials / signups, purchases / trials, retained_90d / purchases); null when "
                "the stage before is 0 or null"),
                "additionalProperties": {"type": ["number", "null"]}},
        },
    },
    "CandidatesReport": {
        "type": "object", "required": ["program", "top", "model", "items"],
        "properties": {
            "program": {"type": "string"}, "top": {"type": "number"},
            "model": {"type": ["object", "null"],
                      "required": ["kind", "trained_on", "auc_holdout", "as_of"],
                      "properties": {
                          "kind": {"enum": ["model", "heuristic"]},
                          "trained_on": {"type": "integer", "description": (
                              "customers with a known outcome it learnt from")},
                          "auc_holdout": {"type": ["number", "null"]},
                          "as_of": {"type": "string", "format": "date-time"},
                          "positives": {"type": ["integer", "null"]},
                          "why": {"type": ["string", "null"], "description": (
                              "why the heuristic stands in (null for the model)")}}},
            "items": {"type": "array", "items": {
                "type": "object", "required": ["customer", "score", "percentile", "reasons"],
                "properties": {
                    "customer": {"type": "string"},
                    "score": {"type": "number", "minimum": 0, "maximum": 1},
                    "percentile": {"type": "number", "minimum": 0, "maximum": 1,
                                   "description": "share of scored customers at or below"},
                    "reasons": {"type": "array", "items": {
                        "type": "object", "required": ["feature", "value", "effect"],
                        "properties": {
                            "feature": {"type": "string"},
                            "value": {"type": ["number", "null"]},
                            "effect": {"type": "number", "description": (
                                "> 0 raised the score, < 0 lowered it")}}}}}}},
        },
    },
    "Flag": {
        "type": "object",
        "required": ["id", "program", "kind", "score", "reasons", "members", "evidence"],
        "properties": {
            "id": {"type": "integer"}, "program": {"type": "string"}, "kind": {"type": "string"},
            "score": {"type": "number", "minimum": 0, "maximum": 1},
            "conversion": {"type": ["integer", "null"]},
            "reasons": {"type": "array", "items": {
                "type": "object", "required": ["code", "message", "value", "threshold"]}},
            "members": {"type": "array", "items": {
                "type": "object", "required": ["type", "id"],
                "properties": {"type": {"enum": ["referrer", "customer", "ip", "device",
                                                 "visitor"]}, "id": {"type": "string"}}}},
            "evidence": {"type": "object"},
        },
    },
    "Token": {
        "type": "object",
        "required": ["id", "name", "role", "person", "created_at", "revoked_at"],
        "description": "an API token, never its secret",
        "properties": {
            "id": {"type": "integer"}, "name": {"type": "string"},
            "role": {"enum": ["admin", "integration", "finance", "viewer"]},
            "person": {"type": ["string", "null"],
                       "description": "the person holding it (four-eyes counts people)"},
            "created_at": {"type": "string", "format": "date-time"},
            "revoked_at": {"type": ["string", "null"], "format": "date-time"},
        },
    },
    "Click": {
        "type": "object",
        "required": ["click_id", "ts", "code", "referrer", "visitor_id", "ip", "country", "asn",
                     "ua", "fingerprint", "flags", "bot_rule"],
        "properties": {
            "click_id": {"type": "string", "format": "uuid"},
            "ts": {"type": "string", "format": "date-time"},
            "code": {"type": "string"}, "referrer": {"type": "string"},
            "visitor_id": {"type": ["string", "null"]},
            "ip": {"type": ["string", "null"], "description": (
                "the client address; past the retention age its network (e.g. 81.0.1.0/24); "
                "null once the customer was erased")},
            "country": {"type": ["string", "null"]}, "asn": {"type": ["integer", "null"]},
            "ua": {"type": "object", "properties": {
                "browser": {"type": ["string", "null"]}, "os": {"type": ["string", "null"]},
                "device": {"type": ["string", "null"]}}},
            "fingerprint": {"type": ["string", "null"], "description": "hex"},
            "flags": {"type": "object", "required": ["bot", "duplicate", "anonymous", "hosting"],
                      "properties": {k: {"type": "boolean"} for k in
                                     ("bot", "duplicate", "anonymous", "hosting")}},
            "bot_rule": {"type": ["string", "null"]},
        },
    },
}

_RATE = {"type": ["number", "null"], "minimum": 0, "maximum": 1}
_CI = {"type": ["array", "null"], "items": {"type": "number"}, "minItems": 2, "maxItems": 2,
       "description": "[low, high] at the report's confidence; null when undefined"}
SCHEMAS["ExperimentsReport"] = {
    "type": "object",
    "required": ["program", "level", "test", "intervals", "currencies", "variants",
                 "comparisons", "winner"],
    "properties": {
        "program": {"type": "string"},
        "level": {"type": "number", "description": "significance level of the test (0.05)"},
        "test": {"type": "object", "description": "the test used: metric, method, level, "
                 "correction (holm with more than two variants, else none), and its wording"},
        "intervals": {"type": "object", "description": "how the intervals are made"},
        "currencies": {"type": "array", "items": {"type": "string"}},
        "variants": {"type": "array", "items": {
            "type": "object",
            "required": ["name", "weight", "active", "referrers", "shares", "clicks",
                         "referred_customers", "converting_referrers", "conversion_rate",
                         "conversion_rate_ci", "customers_per_click", "rewards",
                         "fraud_flagged_rewards", "fraud_rate", "fraud_rate_ci", "money"],
            "properties": {
                "name": {"type": "string"},
                "weight": {"type": ["number", "null"],
                           "description": "null: no longer in the settings (its referrers "
                                          "keep it; their new rewards follow reward.rules)"},
                "active": {"type": "boolean"},
                "referrers": {"type": "integer"}, "shares": {"type": "integer"},
                "clicks": {"type": "integer", "description": "not bots, not duplicates"},
                "referred_customers": {"type": "integer"},
                "converting_referrers": {"type": "integer"},
                "conversion_rate": _RATE, "conversion_rate_ci": _CI,
                "customers_per_click": {"type": ["number", "null"], "minimum": 0},
                "rewards": {"type": "integer"},
                "fraud_flagged_rewards": {"type": "integer"},
                "fraud_rate": _RATE, "fraud_rate_ci": _CI,
                "money": {"type": "object", "description": "per currency", "additionalProperties": {
                    "type": "object",
                    "properties": {
                        "revenue": {"type": "integer", "description": "minor units"},
                        "incentive_cost": {"type": "integer"},
                        "incentive_cost_referrer": {"type": "integer"},
                        "incentive_cost_referee": {"type": "integer"},
                        "roi": {"type": ["number", "null"]},
                        "revenue_per_referrer": {"type": ["number", "null"]},
                        "cost_per_referrer": {"type": ["number", "null"]},
                        "revenue_per_referrer_ci": _CI, "cost_per_referrer_ci": _CI,
                        "roi_ci": _CI}}},
            }}},
        "comparisons": {"type": "array", "items": {
            "type": "object", "required": ["a", "b", "p_value", "p_adjusted", "significant"],
            "properties": {"a": {"type": "string"}, "b": {"type": "string"},
                           "p_value": {"type": "number"}, "p_adjusted": {"type": "number"},
                           "significant": {"type": "boolean"}}}},
        "winner": {"type": ["string", "null"],
                   "description": "null unless one variant's conversion rate is significantly "
                                  "above every other's"},
    },
}
EXPERIMENTS_SUMMARY = (
    "Incentive experiments (settings.reward.variants), per variant over the referrers assigned "
    "to it (the unit randomised): referrers, shares, clicks (not bots, not duplicates), "
    "referred_customers = distinct customers of its referrers' credited conversions; "
    "converting_referrers = referrers with at least one; conversion_rate = converting_referrers "
    "/ referrers; customers_per_click; fraud_rate = rewards flagged or rejected / rewards. Per "
    "currency: revenue = credited purchases and renewals at their credit, net of refunds and "
    "chargebacks; incentive_cost = rewards approved or paid (a reversed reward costs nothing: "
    "its clawback settles it), split by beneficiary; roi = (revenue - incentive_cost) / "
    "incentive_cost (null when the cost is 0). A conversion with a reward flagged or rejected "
    "as fraud counts for nothing (customer, revenue, cost). Test: conversion rates of each pair "
    "of variants by Fisher's exact test, two-sided, at level 0.05; with more than two variants "
    "the p-values are adjusted by Holm's step-down method (family-wise error at most 0.05). "
    "winner: the variant above every other with all its comparisons significant, else null. "
    "Intervals at 95%: Clopper-Pearson exact for rates; percentile bootstrap over the "
    "variant's referrers (1000 resamples, seeded: reproducible; beyond 2,000 referrers with "
    "money, drawn from the bootstrap's normal limit) for revenue and cost per referrer and "
    "ROI")

# -- what works (issue 16): the economics and the breakdown -------------------------------------

_MONEY_BY_CURRENCY = {"type": "object", "description": "ISO 4217 code -> minor units",
                      "additionalProperties": {"type": "integer"}}
_RATIO_BY_CURRENCY = {"type": "object", "description": "ISO 4217 code -> ratio (null: 0 below)",
                      "additionalProperties": {"type": ["number", "null"]}}
_FRESHNESS = {
    "cached": {"type": "boolean", "description": "true: the reports job's copy of this default "
               "view (no window, currency, type or min_visitors), at most 15 minutes old"},
    "computed_at": {"type": "string", "format": "date-time"},
}
# The funnel's default views (each split, no since or until), the experiments and the
# attribution reports are served from the reports job's copy too (tracker.jobs.FUNNEL,
# EXPERIMENTS, tracker.scoring.economics.ATTRIBUTION).
for _name, _view in (("FunnelReport", "no since or until, by any split"),
                     ("ExperimentsReport", "the report has no parameters"),
                     ("AttributionReport", "every model; the report has no window")):
    SCHEMAS[_name]["required"] = [*SCHEMAS[_name]["required"], "cached", "computed_at"]
    SCHEMAS[_name]["properties"] |= {
        "cached": {"type": "boolean", "description": "true: the reports job's copy of the "
                   f"default view ({_view}), at most 15 minutes old; false: computed now"},
        "computed_at": {"type": "string", "format": "date-time"}}
_COST_SIDE = {
    "type": "object", "required": ["granted", "clawed_back", "net", "open"],
    "properties": {
        "granted": {"type": "integer", "description": "rewards approved or paid, and rewards "
                    "reversed after a clawback took back what they had earned"},
        "clawed_back": {"type": "integer", "description": "what clawbacks took back (positive)"},
        "net": {"type": "integer", "description": "granted - clawed_back: the incentive cost"},
        "open": {"type": "integer", "description": "pending or flagged rewards: no cost yet"},
    },
}
_LTV = {"type": "object", "description": "per currency (the customer's first payment's): "
        "customers whose first payment is at least N days before as_of, and `value`, their "
        "average net revenue (minor units) within N days of it; absent until the data reaches",
        "additionalProperties": {
            "type": "object", "required": ["customers", "value"],
            "properties": {"customers": {"type": "integer"},
                           "value": {"type": ["number", "null"]}}}}
ECONOMICS_DEFINITIONS = (
    "Definitions. A *paying conversion* is a purchase or renewal with an amount and a currency; "
    "its *net* is its amount less the refunds and chargebacks naming it (original_event_id, given "
    "or found among the customer's earlier purchases when it was stored; one without an amount "
    "takes back all of it; one naming no purchase (its customer had none before it) is netted at "
    "its own time). A *customer* has a paying conversion; their *first payment* is the earliest "
    "(its currency is the customer's). A customer is *referred* when a conversion of theirs at or "
    "before the first payment carries attribution credit; their *referrer* has the largest credit "
    "on the earliest such conversion. The window [since, until) selects money by the paying "
    "conversion's time, rewards by their conversion's, customers by their first payment; refunds, "
    "chargebacks and clawbacks count with the conversion they undo, whenever they came (cohort "
    "accounting). referred_customers: referred customers with the first payment in the window. "
    "referred_revenue: gross, refunds, chargebacks and net of the referred customers' paying "
    "conversions in the window, per currency. incentive_cost per currency and beneficiary side "
    "(referrer, referee, total): granted (rewards approved or paid, and those reversed after "
    "being granted), clawed_back, net = granted - clawed_back, open (pending or flagged). roi = "
    "(referred_revenue.net - incentive_cost.total.net) / incentive_cost.total.net per currency, "
    "null when the cost is 0. cost_per_referred_customer = incentive_cost.total.net / referred "
    "customers whose first payment was in that currency. fraud_prevented: count and money of "
    "rejected and of reversed rewards. customers.referred / customers.other: customers (first "
    "payment in the window), revenue (their paying conversions in the window), "
    "revenue_per_customer = net / customers of that currency, retention_90d = customers who paid "
    "again 90 days or more after the first payment / customers whose first payment is at least 90 "
    "days before as_of (the latest conversion of the program: how far the data reaches), ltv_90d "
    "and ltv_365d. by_referrer_kind splits the referred by their referrer's advocate kind "
    "(customer: has purchases of its own, or set so; non_buyer). viral, per calendar month "
    "(program settings.timezone) of first payments in the window: referred_customers, referrers "
    "(distinct referrers of them), per_referrer = referred_customers / referrers (referred "
    "customers per referring customer), customers_before (first payment before the month) and "
    "per_customer = referred_customers / customers_before (the viral coefficient per customer of "
    "the program). by_month, per calendar month (program settings.timezone) of the conversions "
    "the money belongs to, months with neither referred money nor rewards left out: "
    "referred_revenue (net), incentive_cost (total net) and roi per currency, as this report over "
    "that month alone gives them (the months sum to the totals). `currency` keeps that currency's "
    "money and the customers whose first payment was in it. Ratios are rounded to 6 places, money "
    "averages to 2. The default view (no since, until or currency) is served from the reports "
    "job's copy while it is under 15 minutes old (`cached`, `computed_at`).")
BREAKDOWN_DEFINITIONS = (
    "Per group of one or two click dimensions (`by`, comma-separated): clicks (counted: not "
    "bot, not duplicate) and unique_visitors (distinct rg_vid) in [since, until); conversions: "
    "attributed conversions of `type` (default purchase) that occurred in the window, each in "
    "the group of its last touch (its click; a typed code has no click, so null click "
    "dimensions); conversion_rate = conversions / unique_visitors (null when 0); revenue: their "
    "net amounts (less refunds and chargebacks) per currency; small: unique_visitors below "
    "min_visitors (default 30), too few to trust the rate. Dimensions: weekday (ISO, 1 = "
    "Monday) and hour (0-23) of the click in the program's settings.timezone (UTC when unset); "
    "country, device, os, browser of the click; channel and campaign of its link; "
    "referrer_kind (customer or non_buyer advocate); trigger: the type of the ask (asks sent "
    "to the referrer) last sent before the click, within 30 days, null when none. `total` "
    "counts every group once (unique_visitors: distinct over all clicks). The default view of "
    "each single dimension and of weekday,hour (no since, until, type or min_visitors) is "
    "served from the reports job's copy while it is under 15 minutes old (`cached`, "
    "`computed_at`).")
SCHEMAS.update({
    "EconomicsReport": {
        "type": "object",
        "required": ["program", "since", "until", "currency", "as_of", "referred_customers",
                     "referred_revenue", "incentive_cost", "roi", "cost_per_referred_customer",
                     "fraud_prevented", "customers", "by_referrer_kind", "viral",
                     "by_month"],
        "description": ECONOMICS_DEFINITIONS,
        "properties": {
            "program": {"type": "string"}, **_FRESHNESS,
            "since": {"type": ["string", "null"], "format": "date-time"},
            "until": {"type": ["string", "null"], "format": "date-time"},
            "currency": {"type": ["string", "null"]},
            "as_of": {"type": ["string", "null"], "format": "date-time",
                      "description": "the program's latest conversion"},
            "referred_customers": {"type": "integer"},
            "referred_revenue": {"type": "object", "additionalProperties": {
                "$ref": "#/components/schemas/EconomicsMoney"}},
            "incentive_cost": {"type": "object", "additionalProperties": {
                "type": "object", "required": ["referrer", "referee", "total"],
                "properties": {"referrer": _COST_SIDE, "referee": _COST_SIDE,
                               "total": _COST_SIDE}}},
            "roi": _RATIO_BY_CURRENCY,
            "cost_per_referred_customer": _RATIO_BY_CURRENCY,
            "fraud_prevented": {"type": "object", "required": ["rejected", "reversed"],
                                "additionalProperties": {
                                    "type": "object", "required": ["count", "money"],
                                    "properties": {"count": {"type": "integer"},
                                                   "money": _MONEY_BY_CURRENCY}}},
            "customers": {"type": "object", "required": ["referred", "other"],
                          "additionalProperties": {
                              "$ref": "#/components/schemas/EconomicsCustomers"}},
            "by_referrer_kind": {"type": "object", "additionalProperties": {
                "type": "object",
                "required": ["referred_customers", "revenue", "incentive_cost", "roi"],
                "properties": {"referred_customers": {"type": "integer"},
                               "revenue": _MONEY_BY_CURRENCY,
                               "incentive_cost": _MONEY_BY_CURRENCY,
                               "roi": _RATIO_BY_CURRENCY}}},
            "viral": {"type": "array", "items": {
                "type": "object",
                "required": ["month", "referred_customers", "referrers", "per_referrer",
                             "customers_before", "per_customer"],
                "properties": {
                    "month": {"type": "string", "pattern": "^[0-9]{4}-[0-9]{2}$"},
                    "referred_customers": {"type": "integer"},
                    "referrers": {"type": "integer"},
                    "per_referrer": {"type": ["number", "null"]},
                    "customers_before": {"type": "integer"},
                    "per_customer": {"type": ["number", "null"]}}}},
            "by_month": {"type": "array", "items": {
                "type": "object",
                "required": ["month", "referred_revenue", "incentive_cost", "roi"],
                "properties": {
                    "month": {"type": "string", "pattern": "^[0-9]{4}-[0-9]{2}$"},
                    "referred_revenue": _MONEY_BY_CURRENCY,
                    "incentive_cost": _MONEY_BY_CURRENCY,
                    "roi": _RATIO_BY_CURRENCY}}},
        },
    },
    "EconomicsMoney": {
        "type": "object", "required": ["gross", "refunds", "chargebacks", "net"],
        "properties": {k: {"type": "integer"} for k in
                       ("gross", "refunds", "chargebacks", "net")},
    },
    "EconomicsCustomers": {
        "type": "object",
        "required": ["customers", "customers_by_currency", "revenue", "revenue_per_customer",
                     "retention_90d", "ltv_90d", "ltv_365d"],
        "properties": {
            "customers": {"type": "integer"},
            "customers_by_currency": {"type": "object",
                                      "additionalProperties": {"type": "integer"}},
            "revenue": {"type": "object", "additionalProperties": {
                "$ref": "#/components/schemas/EconomicsMoney"}},
            "revenue_per_customer": _RATIO_BY_CURRENCY,
            "retention_90d": {"type": "object", "required": ["eligible", "retained", "rate"],
                              "properties": {"eligible": {"type": "integer"},
                                             "retained": {"type": "integer"},
                                             "rate": {"type": ["number", "null"]}}},
            "ltv_90d": _LTV,
            "ltv_365d": _LTV,
        },
    },
    "BreakdownRow": {
        "type": "object",
        "required": ["clicks", "unique_visitors", "conversions", "conversion_rate", "revenue",
                     "small"],
        "properties": {
            "key": {"type": "object", "description": "dimension -> value (null: unknown)"},
            "clicks": {"type": "integer"},
            "unique_visitors": {"type": "integer"},
            "conversions": {"type": "integer"},
            "conversion_rate": {"type": ["number", "null"]},
            "revenue": _MONEY_BY_CURRENCY,
            "small": {"type": "boolean"},
        },
    },
    "BreakdownReport": {
        "type": "object",
        "required": ["program", "by", "type", "timezone", "since", "until", "min_visitors",
                     "groups", "total"],
        "description": BREAKDOWN_DEFINITIONS,
        "properties": {
            "program": {"type": "string"}, **_FRESHNESS,
            "by": {"type": "array", "items": {"type": "string"}},
            "type": {"type": "string"},
            "timezone": {"type": "string"},
            "since": {"type": ["string", "null"], "format": "date-time"},
            "until": {"type": ["string", "null"], "format": "date-time"},
            "min_visitors": {"type": "integer"},
            "groups": {"type": "array", "items": {"$ref": "#/components/schemas/BreakdownRow"}},
            "total": {"$ref": "#/components/schemas/BreakdownRow"},
        },
    },
})


_WINDOW_PARAMS = [
    _q("since", "from this time (RFC 3339, inclusive)", {"type": "string", "format": "date-time"}),
    _q("until", "to this time (RFC 3339, exclusive; after since)",
       {"type": "string", "format": "date-time"}),
]
_DIMENSION = "(" + "|".join(BREAKDOWN_DIMENSIONS) + ")"
_BY_PATTERN = f"^{_DIMENSION}(,{_DIMENSION})?$"


def document() -> dict[str, Any]:
    program_q = _q("program", "program slug", _SLUG, required=True)
    any_program_q = _q("program", "program slug (absent or empty: every program)",
                       {**_SLUG, "pattern": "^([a-z0-9][a-z0-9_-]{0,62})?$"})
    return {
        "openapi": "3.1.0",
        "info": {"title": "refguard", "version": "1",
                 "description": "Referral fraud and attribution server. Authenticate with "
                 "`Authorization: Bearer <token>` (`refguard token create`). Errors are "
                 '`{"error": {"code", "message"}}`. Lists answer `{"items", "next"}`.'},
        "security": [{"bearer": []}],
        # Full paths, as integrators and DESIGN.md write them (/api/v1/rewards/{reward_id});
        # no `servers`: the default, this server's root, is right.
        "paths": {API_PREFIX + path: item for path, item in {
            "/programs": {
                "post": _op("Create a program", "admin", body="ProgramCreate", ok=201,
                            answer={"$ref": "#/components/schemas/Program"}),
                "get": _op("List programs", "all", answer=_list_of("Program"), params=_PAGING),
            },
            "/programs/{slug}": {
                "parameters": [_path("slug")],
                "get": _op("One program", "all", answer={"$ref": "#/components/schemas/Program"}),
                "patch": _op("Change a program. Settings are merged key by key at the top "
                             "level (a stored key refguard no longer knows is dropped by sending "
                             "it as null). Removing a destination domain that enabled links "
                             "still lead to is refused with 409 (`field`: destination_domains, "
                             "`links_by_domain`: {domain: enabled links}): nothing is disabled "
                             "behind your back; disable or re-point those links first",
                             "admin", body="ProgramUpdate",
                             answer={"$ref": "#/components/schemas/Program"}),
            },
            "/programs/{slug}/secret/rotate": {
                "parameters": [_path("slug")],
                "post": {**_op("Rotate the program's signing secret: the new one is answered "
                               "once (admins see it in GET /programs/{slug} too); the previous "
                               "one is still accepted on signed conversions and events for "
                               "overlap_hours (default 24). Webhooks are signed with the new "
                               "one at once", "admin",
                               answer={"$ref": "#/components/schemas/SecretRotation"}),
                         "requestBody": {"required": False, "content": {"application/json": {
                             "schema": {"$ref": "#/components/schemas/SecretRotate"}}}}},
            },
            "/programs/{slug}/coupons": {
                "parameters": [_path("slug")],
                "post": _op("Upload coupon codes to a pool (at most 10,000 a call, each 1 to 64 "
                            "printable characters); codes the pool has already are ignored. A "
                            "`coupon` reward rule draws one code of its pool when a reward is "
                            "approved", "admin, integration", body="CouponUpload",
                            answer={"$ref": "#/components/schemas/CouponUploaded"}),
                "get": _op("Coupon codes per pool: how many are available and assigned "
                           "(never the codes)", "admin, integration, finance, viewer",
                           answer={"$ref": "#/components/schemas/CouponCounts"},
                           params=[_q("pool", "only this pool (absent or empty: every "
                                              "pool)",
                                      {"type": "string",
                                       "pattern": "^([a-z0-9][a-z0-9_-]{0,63})?$"})]),
            },
            "/referrers": {
                "post": _op("Create (or fetch) a referrer: 201 created, 200 existed",
                            "admin, integration", body="ReferrerCreate", ok=201,
                            answer={"$ref": "#/components/schemas/Referrer"},
                            also={200: "the referrer existed already"}),
                "get": _op("List a program's referrers", "admin, integration, viewer",
                           answer=_list_of("Referrer"), params=[program_q, *_PAGING]),
            },
            "/links": {
                "post": _op("Create a referral link", "admin, integration", body="LinkCreate",
                            ok=201, answer={"$ref": "#/components/schemas/Link"}),
                "get": _op("List a program's links", "admin, integration, viewer",
                           answer=_list_of("Link"),
                           params=[program_q, _q("referrer", "referrer external_id"),
                                   *_PAGING]),
            },
            "/links/{code}": {
                "parameters": [_path("code")],
                "get": _op("One link", "admin, integration, viewer",
                           answer={"$ref": "#/components/schemas/Link"}),
                "patch": _op("Enable, disable or re-point a link", "admin, integration",
                             body="LinkUpdate", answer={"$ref": "#/components/schemas/Link"}),
            },
            "/conversions": {
                "post": {
                    **_op("Report a conversion (idempotent on program + event_id: 201 first, "
                          "200 for the same body again, 409 for another body)",
                          "admin, integration; or no token and a signature header",
                          body="ConversionCreate", ok=201,
                          answer={"$ref": "#/components/schemas/Conversion"},
                          also={200: "the same event again: the first answer"}),
                    "security": [{"bearer": []}, {"signature": []}],
                    "parameters": [{
                        "name": "X-Refguard-Signature", "in": "header", "required": False,
                        "schema": {"type": "string"},
                        "description": "t=<unix seconds>,v1=<hex HMAC-SHA256(program signing "
                                       "secret, '<t>.<raw body>')>; 5 minute tolerance",
                    }],
                },
            },
            "/events": {
                "post": {
                    **_op("Report a customer's moment (an NPS answer, a review, a milestone, a "
                          "resolved support ticket): what the asks job takes up. Idempotent on "
                          "program + event_id as conversions: 201 first, 200 for the same "
                          "body again, 409 for another body",
                          "admin, integration; or no token and a signature header",
                          body="EventCreate", ok=201,
                          answer={"$ref": "#/components/schemas/Event"},
                          also={200: "the same event again: the first answer"}),
                    "security": [{"bearer": []}, {"signature": []}],
                    "parameters": [{
                        "name": "X-Refguard-Signature", "in": "header", "required": False,
                        "schema": {"type": "string"},
                        "description": "as for /conversions: t=<unix seconds>,v1=<hex "
                                       "HMAC-SHA256(program signing secret, '<t>.<raw "
                                       "body>')>; 5 minute tolerance",
                    }],
                },
            },
            "/shares": {
                "post": _op("Report a share the referrer made outside the share page (each "
                            "call is one share). 404 for an unknown program, referrer or ask; "
                            "422 (field ask_id) for an ask made to another customer",
                            "admin, integration", body="ShareCreate", ok=201,
                            answer={"$ref": "#/components/schemas/Share"}),
            },
            "/clicks": {
                "get": _op("The visit log, ascending by ts (HEAD requests are not stored)",
                           "admin, viewer, finance", answer=_list_of("Click"),
                           params=[program_q, _q("referrer", "referrer external_id"),
                                   _q("code", "link code"),
                                   _q("since", "RFC 3339 timestamp",
                                      {"type": "string", "format": "date-time"}), *_PAGING]),
            },
            "/reports/attribution": {
                "get": _op("Credited conversions and value per referrer, per model (all models "
                           "side by side when model is omitted; Markov and Shapley give the "
                           "program-level allocation)", "admin, viewer, finance",
                           answer={"$ref": "#/components/schemas/AttributionReport"},
                           params=[program_q, _q("model", "one model",
                                                 {"enum": list(MODELS)})]),
            },
            "/reports/funnel": {
                "get": _op("The funnel: asked, shared, clicks, unique visitors, signups, "
                           "trials, purchases, retained at 90 days (and renewals, refunds), "
                           "with the rate between stages, per referrer, channel or trigger "
                           "and in total (definitions: the FunnelReport schema)",
                           "admin, viewer, finance",
                           answer={"$ref": "#/components/schemas/FunnelReport"},
                           params=[program_q,
                                   _q("by", "group by (default referrer)",
                                      {"enum": ["referrer", "channel", "trigger"]}),
                                   _q("since", "from this time (RFC 3339), inclusive",
                                      {"type": "string", "format": "date-time"}),
                                   _q("until", "to this time (RFC 3339), exclusive",
                                      {"type": "string", "format": "date-time"})]),
            },
            "/reports/decisions": {
                "get": _op("Finance's decisions on the fraud engine's verdicts, per reason "
                           "code: a reward carries a code when its stored reasons name it "
                           "(several codes: it counts under each; `total` counts it once). "
                           "flagged = rewards clearance flagged; rejected = rewards clearance "
                           "rejected automatically; held = flagged + rejected; awaiting = "
                           "flagged ones still undecided; decided = held - awaiting; "
                           "overturned = held rewards finance approved at least once (an "
                           "overturn of the engine); overturn_rate = overturned / decided "
                           "(null when 0); money per currency: held and overturned amounts",
                           "admin, finance, viewer",
                           answer={"$ref": "#/components/schemas/DecisionsReport"},
                           params=[program_q]),
            },
            "/reports/candidates": {
                "get": _op("Referral candidates: the customers most likely to refer a customer "
                           "who converts and is not fraud, best score first, down to the `top` "
                           "share (percentile >= 1 - top). `model.kind` is `model` (calibrated "
                           "logistic regression on the program's own history; `auc_holdout` on "
                           "a held-out quarter) or `heuristic` (too little history: `why` says "
                           "what is missing). Never a customer with fraud flags or a flagged, "
                           "rejected or reversed reward. Before the first fit (the candidates "
                           "job, `refguard candidates refresh`): `model` null, `items` empty",
                           "admin, viewer, finance",
                           answer={"$ref": "#/components/schemas/CandidatesReport"},
                           params=[program_q, _q("top", "share of the scored customers, in "
                                                 "(0, 1]; default 0.2",
                                                 {"type": "number", "exclusiveMinimum": 0,
                                                  "maximum": 1})]),
            },
            "/reports/experiments": {
                "get": _op(EXPERIMENTS_SUMMARY, "admin, viewer, finance",
                           answer={"$ref": "#/components/schemas/ExperimentsReport"},
                           params=[program_q]),
            },
            "/reports/economics": {
                "get": _op("Does the program pay off: referred customers, referred revenue net "
                           "of refunds and chargebacks, incentive cost by side with clawbacks "
                           "netted, ROI, cost per referred customer, fraud prevented, referred "
                           "vs other customers (revenue, 90-day retention, LTV over 90 and 365 "
                           "days), the viral coefficient by month; money per currency. "
                           + ECONOMICS_DEFINITIONS, "admin, viewer, finance",
                           answer={"$ref": "#/components/schemas/EconomicsReport"},
                           params=[program_q, *_WINDOW_PARAMS,
                                   _q("currency", "only this currency's money, and customers "
                                                  "whose first payment was in it",
                                      {"type": "string", "pattern": "^[A-Z]{3}$"})]),
            },
            "/reports/breakdown": {
                "get": _op("What brings referrals that convert: clicks, unique visitors, "
                           "conversions, conversion rate and revenue per group of one or two "
                           "dimensions. " + BREAKDOWN_DEFINITIONS, "admin, viewer, finance",
                           answer={"$ref": "#/components/schemas/BreakdownReport"},
                           params=[program_q,
                                   _q("by", "one or two dimensions, comma-separated: "
                                      + ", ".join(BREAKDOWN_DIMENSIONS),
                                      {"type": "string", "pattern": _BY_PATTERN},
                                      required=True),
                                   _q("type", "the conversions counted (default purchase)",
                                      {"enum": list(CREDITED_TYPES)}),
                                   _q("min_visitors", "groups with fewer unique visitors are "
                                                      "marked small (default 30)",
                                      {"type": "integer", "minimum": 0, "maximum": 9999999}),
                                   *_WINDOW_PARAMS]),
            },
            "/payouts": {
                "get": _op("Payout batches, newest first (`lines`: how many payees each paid)",
                           "admin, finance", answer=_list_of("PayoutBatch"),
                           params=[{**any_program_q, "description": (
                               "only batches that paid someone of this program (totals stay "
                               "the whole batch's); absent or empty: every batch")},
                                   *_PAGING]),
            },
            "/payouts/{batch_id}": {
                "parameters": [_path("batch_id")],
                "get": _with_csv(_op(
                    "One payout batch with its lines; with `Accept: text/csv` its CSV "
                    "(batch_id,beneficiary,amount,currency,reward_ids,program; reward ids "
                    "separated by `;`; a text cell that a spreadsheet would run as a formula "
                    "starts with `'`); with `format=paypal` or `format=wise` (CSV whatever "
                    "the Accept header) the file to upload to PayPal Payouts Web or Wise "
                    "batch payments (amounts in major units; the recipient is the payee id: "
                    "README, Payouts); 422 when the batch does not fit the format (PayPal: one "
                    "currency per file, use `currency`)", "admin, finance",
                    answer={"$ref": "#/components/schemas/PayoutBatch"},
                    params=[_q("format", "the file's format (default: JSON, or `csv` with "
                                         "`Accept: text/csv`)",
                               {"type": "string", "enum": ["csv", "paypal", "wise"]}),
                            _q("currency", "only the lines in this currency (files only)",
                               {"type": "string", "pattern": "^[A-Z]{3}$"})])),
            },
            "/fraud/flags": {
                "get": _op("Flags of the latest fraud scan: rings, self-referrals, risky "
                           "conversions, unusual referrers (anomaly: a watch list that "
                           "decides no reward); each with reasons (value and threshold), "
                           "members and evidence", "admin, finance, viewer",
                           answer=_list_of("Flag"),
                           params=[any_program_q,
                                   _q("kind", "flags of this kind or carrying a "
                                                 "reason with this code: ring, dense_block, "
                                                 "referral_cycle, collusion_pool, sleeper_cell, "
                                                 "self_referral, anomaly, "
                                                 "fast_conversion, ..."),
                                   *_PAGING]),
            },
            "/rewards": {
                "get": _op("Rewards, by status, program and referrer", "admin, finance, viewer",
                           answer=_list_of("Reward"),
                           params=[_q("status", "reward status", {"enum": [
                               "pending", "flagged", "approved", "rejected", "paid",
                               "reversed"]}), any_program_q,
                                   _q("referrer", "referrer external_id"), *_PAGING]),
            },
            "/rewards/{reward_id}": {
                "parameters": [_path("reward_id")],
                "get": _op("One reward with its evidence: reasons, touchpoints, credits, the "
                           "graph around the referrer, rings, approvals and history",
                           "admin, finance, viewer",
                           answer={"$ref": "#/components/schemas/RewardDetail"}),
            },
            "/rewards/{reward_id}/approve": {
                "parameters": [_path("reward_id")],
                "post": _op("Approve a flagged reward, or overturn a rejection: approve a "
                            "rejected one (a rejection made by a person only by another "
                            "person; an automatic one by anyone in finance). 409 from any "
                            "other status, or when expected_status differs; 202 when a second "
                            "finance user must still approve (four-eyes above the program's "
                            "four_eyes_above, overturns too)", "admin, finance",
                            body="Decision", answer={"$ref": "#/components/schemas/Reward"},
                            also={202: "approval recorded; a second finance user must "
                                       "approve too (four-eyes)"}),
            },
            "/rewards/{reward_id}/reject": {
                "parameters": [_path("reward_id")],
                "post": _op("Reject a flagged or pending reward, or overturn an approval: "
                            "reject an approved one not yet paid (a negative `reversal` ledger "
                            "entry undoes what it earned). 409 otherwise (a paid reward is "
                            "reversed only by a refund or chargeback)",
                            "admin, finance", body="Decision",
                            answer={"$ref": "#/components/schemas/Reward"}),
            },
            "/asks": {
                "get": _op("Asks: customers asked to refer at a moment of delight (the asks "
                           "job; the ask reaches the merchant's messaging as the signed "
                           "webhook referral.ask, never after its deadline). `status` is the "
                           "ask's own (queued until delivered, then sent; expired; suppressed) "
                           "or, for a sent one, how far it went: shared, clicked, converted",
                           "admin, finance, viewer", answer=_list_of("Ask"),
                           params=[_q("status", "ask status", {"enum": [
                               "queued", "sent", "shared", "clicked", "converted", "expired",
                               "suppressed"]}), any_program_q, *_PAGING]),
            },
            "/customers/{customer_id}": {
                "parameters": [_path("customer_id")],
                "delete": _op("Erase a customer's personal data (email hash, IPs, user agents, "
                              "referers, browser signals, visitor links, events, candidate "
                              "score; the score in their asks, a queued ask is suppressed); "
                              "amounts, rewards, shares and the ledger stay. While a reward "
                              "resting on the customer is undecided, the keyed email hash "
                              "and visitor links are kept until it is (`kept`). 404 when "
                              "nothing is known of the customer",
                              "admin, integration", params=[program_q],
                              answer={"type": "object", "required": ["program", "customer",
                                                                     "erased"]}),
            },
            "/tokens": {
                "get": _op("API tokens, revoked ones included (never their secrets)", "admin",
                           answer=_list_of("Token"), params=_PAGING),
            },
            "/tokens/{token_id}/revoke": {
                "parameters": [_path("token_id")],
                "post": _op("Revoke a token: it stops working at once on every worker and its "
                            "review-page sessions end (a token revoked already is answered as "
                            "it is; 409 for the token making the request)", "admin",
                            answer={"$ref": "#/components/schemas/Token"}),
            },
            "/openapi.json": {
                "get": _op("This document", "public", public=True),
            },
        }.items()},
        "components": {
            "securitySchemes": {
                "bearer": {"type": "http", "scheme": "bearer"},
                "signature": {"type": "apiKey", "in": "header", "name": "X-Refguard-Signature"},
            },
            "schemas": SCHEMAS,
            "responses": {
                "Error": {"description": "Error", "content": {
                    "application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}},
                "Unavailable": {
                    "description": "The database (or, for a report, the read replica) cannot "
                                   "be reached: nothing was changed; retry after Retry-After "
                                   "seconds",
                    "headers": {"Retry-After": {"schema": {"type": "integer"},
                                                "description": "seconds to wait"}},
                    "content": {"application/json": {
                        "schema": {"$ref": "#/components/schemas/Error"}}}},
            },
        },
    }


@json_errors
async def serve(request: web.Request) -> web.Response:
    return web.json_response(document())


def add_routes(app: web.Application) -> None:
    app.router.add_get("/openapi.json", serve)
