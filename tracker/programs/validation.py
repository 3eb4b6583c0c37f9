"""Program settings and destination rules (no open redirects)."""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import urlsplit

from attribution.models import MODELS
from tracker.formats import CREDITED_TYPES

DEFAULT_SETTINGS: dict[str, Any] = {
    "attribution_model": "last_touch",
    "attribution_window_days": 30,
    "hold_days": 30,
    "review_at": 0.5,
    "reject_at": 0.9,
    "fingerprint": "headers",
    "reward": {"currency": "USD", "rules": []},
    # Risk at or above reject_at: "reject", or "flag" to leave even those to finance.
    "reject_action": "reject",
    # Above this amount (minor units) two different finance users must approve; null: off.
    "four_eyes_above": None,
    # Risk-adaptive holds (null: off): a risk at or above review_at adds risk_extra_days to
    # the hold; a referrer with clean_after approved rewards and none rejected or reversed
    # waits only clean_hold_days.
    "adaptive_hold": None,
    # Where reward.approved and reward.paid events are POSTed (signed); null: nowhere.
    "webhook_url": None,
}
ADAPTIVE_HOLD = {"risk_extra_days": 30, "clean_after": 20, "clean_hold_days": 7}
_LABEL = r"[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?"
_HOSTNAME = re.compile(rf"^(?=.{{1,253}}$){_LABEL}(\.{_LABEL})*$")
_CURRENCY = re.compile(r"^[A-Z]{3}$")


class SettingsInvalid(ValueError):
    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field


def normalise_domain(value: object) -> str:
    if not isinstance(value, str):
        raise SettingsInvalid("destination_domains", "each domain must be a string")
    domain = value.strip().lower().rstrip(".")
    try:
        domain = domain.encode("idna").decode("ascii")
    except UnicodeError:
        raise SettingsInvalid("destination_domains", f"{value!r} is not a hostname") from None
    if not _HOSTNAME.match(domain):
        raise SettingsInvalid("destination_domains", f"{value!r} is not a hostname")
    return domain


def host_allowed(host: str, domains: list[str]) -> bool:
    """A destination host is allowed if it is a listed domain or a subdomain of one."""
    host = host.lower().rstrip(".")
    return any(host == d or host.endswith("." + d) for d in domains)


def check_destination(url: str, domains: list[str], field: str = "destination") -> str:
    """The destination if it is an absolute http(s) URL on the program's domains."""
    if len(url) > 2048 or not url.isprintable() or any(c.isspace() for c in url):
        raise SettingsInvalid(field, "the URL is too long or contains spaces or control characters")
    try:
        parts = urlsplit(url)
        host = parts.hostname
        _ = parts.port  # raises on a bad port
    except ValueError:
        raise SettingsInvalid(field, "not a valid URL") from None
    if parts.scheme not in ("http", "https") or not host:
        raise SettingsInvalid(field, "must be an absolute http(s) URL")
    if parts.username is not None or parts.password is not None or "\\" in url:
        raise SettingsInvalid(field, "must not carry credentials or backslashes")
    try:
        host_ascii = host.encode("idna").decode("ascii")
    except UnicodeError:
        raise SettingsInvalid(field, "the host is not a valid hostname") from None
    if not host_allowed(host_ascii, domains):
        raise SettingsInvalid(
            field, f"the host {host!r} is not one of the program's destination domains"
        )
    return url


def _number(settings: dict[str, Any], key: str, lo: float, hi: float, *, integer: bool) -> None:
    value = settings[key]
    ok_type = isinstance(value, int) if integer else isinstance(value, int | float)
    if isinstance(value, bool) or not ok_type or not lo <= value <= hi:
        kind = "an integer" if integer else "a number"
        raise SettingsInvalid(key, f"{key} must be {kind} between {lo:g} and {hi:g}")


def _reward(reward: object) -> None:
    if not isinstance(reward, dict):
        raise SettingsInvalid("reward", "reward must be an object")
    currency = reward.get("currency", "USD")
    if not isinstance(currency, str) or not _CURRENCY.match(currency):
        raise SettingsInvalid("reward", "reward.currency must be an ISO 4217 code like USD")
    rules = reward.get("rules", [])
    if not isinstance(rules, list):
        raise SettingsInvalid("reward", "reward.rules must be a list")
    for i, rule in enumerate(rules):
        where = f"reward.rules[{i}]"
        if not isinstance(rule, dict):
            raise SettingsInvalid("reward", f"{where} must be an object")
        if rule.get("beneficiary") not in ("referrer", "referee"):
            raise SettingsInvalid("reward", f"{where}.beneficiary must be referrer or referee")
        if rule.get("on") not in CREDITED_TYPES:
            raise SettingsInvalid("reward", f"{where}.on must be one of signup, trial, purchase, "
                                            "renewal")
        _rate(rule, where)
        tiers = rule.get("tiers", [])
        if not isinstance(tiers, list):
            raise SettingsInvalid("reward", f"{where}.tiers must be a list")
        for j, tier in enumerate(tiers):
            if not isinstance(tier, dict):
                raise SettingsInvalid("reward", f"{where}.tiers[{j}] must be an object")
            _rate(tier, f"{where}.tiers[{j}]")
            if ("flat" in tier) != ("flat" in rule):
                raise SettingsInvalid("reward", f"{where}.tiers[{j}] must be "
                                      f"{'flat' if 'flat' in rule else 'percent'} like its rule")
            _int(tier.get("after"), f"{where}.tiers[{j}].after", 1, 10**9)
        for key in ("cap_per_day", "cap_per_month"):
            if rule.get(key) is not None:
                _int(rule[key], f"{where}.{key}", 0, 10**12)
        if rule.get("months") is not None:
            _int(rule["months"], f"{where}.months", 1, 1200)
        if not isinstance(rule.get("first_only", False), bool):
            raise SettingsInvalid("reward", f"{where}.first_only must be true or false")


def _rate(rule: dict[str, Any], where: str) -> None:
    has_flat, has_percent = "flat" in rule, "percent" in rule
    if has_flat == has_percent:
        raise SettingsInvalid("reward", f"{where} needs exactly one of flat or percent")
    if has_flat:
        _int(rule["flat"], f"{where}.flat", 0, 10**12)
    if has_percent and (isinstance(rule["percent"], bool)
                        or not isinstance(rule["percent"], int | float)
                        or not 0 <= rule["percent"] <= 100):
        raise SettingsInvalid("reward", f"{where}.percent must be between 0 and 100")


def _int(value: object, where: str, lo: int, hi: int, field: str = "reward") -> None:
    if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
        raise SettingsInvalid(field, f"{where} must be an integer between {lo} and {hi}")


def _webhook_url(raw: object) -> None:
    if raw is None or raw == "":
        return
    if not isinstance(raw, str) or len(raw) > 2048 or not raw.isprintable():
        raise SettingsInvalid("webhook_url", "webhook_url must be an http(s) URL")
    try:
        parts = urlsplit(raw)
        _ = parts.port
    except ValueError:
        raise SettingsInvalid("webhook_url", "webhook_url is not a valid URL") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise SettingsInvalid("webhook_url", "webhook_url must be an absolute http(s) URL")


def _adaptive_hold(raw: object) -> None:
    if raw is None:
        return
    if not isinstance(raw, dict):
        raise SettingsInvalid("adaptive_hold", "adaptive_hold must be an object or null")
    unknown = sorted(set(raw) - set(ADAPTIVE_HOLD))
    if unknown:
        raise SettingsInvalid("adaptive_hold", f"adaptive_hold has no setting {unknown[0]!r}")
    for key, value in {**ADAPTIVE_HOLD, **raw}.items():
        _int(value, f"adaptive_hold.{key}", 0, 10**6, "adaptive_hold")


def validate_settings(raw: object, domains: list[str]) -> dict[str, Any]:
    """Settings with defaults filled in; unknown keys are kept for later features."""
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise SettingsInvalid("settings", "settings must be an object")
    settings = {**DEFAULT_SETTINGS, **raw}
    if settings["attribution_model"] not in MODELS:
        raise SettingsInvalid(
            "attribution_model", f"attribution_model must be one of {', '.join(MODELS)}"
        )
    _number(settings, "attribution_window_days", 1, 365, integer=True)
    _number(settings, "hold_days", 0, 365, integer=True)
    _number(settings, "review_at", 0, 1, integer=False)
    _number(settings, "reject_at", 0, 1, integer=False)
    if settings["review_at"] > settings["reject_at"]:
        raise SettingsInvalid("review_at", "review_at must not exceed reject_at")
    if "time_decay_half_life_days" in settings:
        _number(settings, "time_decay_half_life_days", 0.01, 365, integer=False)
    if settings["fingerprint"] not in ("headers", "browser"):
        raise SettingsInvalid("fingerprint", "fingerprint must be headers or browser")
    _reward(settings["reward"])
    if settings.get("four_eyes_above") is not None:
        _int(settings["four_eyes_above"], "four_eyes_above", 0, 10**12, "four_eyes_above")
    if settings["reject_action"] not in ("reject", "flag"):
        raise SettingsInvalid("reject_action", "reject_action must be reject or flag")
    _adaptive_hold(settings.get("adaptive_hold"))
    _webhook_url(settings.get("webhook_url"))
    for key in ("fallback_url", "default_destination"):
        if settings.get(key) is not None:
            if not isinstance(settings[key], str):
                raise SettingsInvalid(key, f"{key} must be a URL")
            check_destination(settings[key], domains, key)
    return settings


def default_destination(domains: list[str], settings: dict[str, Any]) -> str:
    configured = settings.get("default_destination")
    if isinstance(configured, str):
        return configured
    return f"https://{domains[0]}/"
