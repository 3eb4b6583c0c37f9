"""Program settings, destination rules (no open redirects) and webhook targets.

Hosts are read as browsers read them (the WHATWG URL standard: percent-decoded, then UTS #46
non-transitional mapping, IDNA 2008 labels): `claßic.com` is `xn--claic-nqa.com` to a browser,
not `classic.com` as Python's own IDNA 2003 codec says. Domains and destinations are stored and
compared in that A-label form.

Settings are checked key by key at every level: an unknown key is refused with the closest
known one, so a typo never makes a program that silently ignores what it was asked to do.
"""

from __future__ import annotations

import difflib
import ipaddress
import math
import re
import socket
import zoneinfo
from collections.abc import Mapping
from typing import Any
from urllib.parse import unquote, urlsplit

import idna

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

# Every settings key known at each level (DESIGN.md section 5, README "Program settings").
# "[]" marks the objects inside a list. A key outside these is refused.
_RULE_KEYS = frozenset({"beneficiary", "on", "flat", "percent", "tiers", "cap_per_day",
                        "cap_per_month", "months", "first_only", "kind", "pool"})
REWARD_KINDS = ("cash", "credit", "coupon")
_POOL = re.compile(r"^[a-z0-9][a-z0-9_-]{0,63}$")
KNOWN_KEYS: dict[str, frozenset[str]] = {
    "": frozenset({
        "attribution_model", "attribution_window_days", "time_decay_half_life_days",
        "hold_days", "review_at", "reject_at", "reject_action", "fingerprint", "reward",
        "four_eyes_above", "adaptive_hold", "webhook_url", "fallback_url", "default_destination",
        "asks", "share", "timezone"}),
    "reward": frozenset({"currency", "rules", "variants"}),
    "reward.rules[]": _RULE_KEYS,
    "reward.rules[].tiers[]": frozenset({"after", "flat", "percent"}),
    "reward.variants[]": frozenset({"name", "weight", "rules"}),
    "reward.variants[].rules[]": _RULE_KEYS,
    "reward.variants[].rules[].tiers[]": frozenset({"after", "flat", "percent"}),
    "adaptive_hold": frozenset(ADAPTIVE_HOLD),
    "asks": frozenset({"rules", "within_hours", "top_share", "cooldown_days",
                       "max_per_customer"}),
    "asks.rules[]": frozenset({"on", "min_score", "nth"}),
    "share": frozenset({"message", "channels"}),
    "share.channels[]": frozenset({"name", "message"}),
}
# The share page's buttons (tracker.asks.sharing gives each its target), in page order;
# `share.channels` chooses among them (default: all).
SHARE_CHANNELS = ("copy", "share_sheet", "email", "sms", "whatsapp", "x", "linkedin",
                  "facebook")
SHARE_MESSAGE_MAX = 2000

_LABEL = r"[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?"
_HOSTNAME = re.compile(rf"^(?=.{{1,253}}$){_LABEL}(\.{_LABEL})*$")
_CURRENCY = re.compile(r"^[A-Z]{3}$")
# Code points the URL standard forbids in a domain (after percent-decoding).
_FORBIDDEN_IN_HOST = frozenset("\x00\t\n\r #%/:<>?@[\\]^|\x7f") | frozenset(map(chr, range(32)))
# A last label like this makes a browser read the host as an IPv4 address (0x7f.1, 2130706433).
_NUMERIC_LABEL = re.compile(r"^(0x[0-9a-f]*|[0-9]+)$")
# Names that never leave the machine or the site (RFC 6761, RFC 6762, RFC 8375, ICANN .internal).
_LOCAL_SUFFIXES = ("localhost", "local", "internal", "home.arpa", "localdomain")
_NAT64 = ipaddress.ip_network("64:ff9b::/96")

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


class SettingsInvalid(ValueError):
    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field


# -- hosts -------------------------------------------------------------------------------------


def ascii_host(raw: str) -> str:
    """The host as a browser resolves it, in A-label form: percent-decoded, mapped by UTS #46
    (non-transitional: `ß` stays `ß` and becomes `xn--...`, never `ss`), lowercase, without a
    trailing dot. Raises ValueError for a host no browser would accept."""
    host = unquote(raw, errors="strict")
    if host.startswith("[") and host.endswith("]"):
        return "[" + ipaddress.IPv6Address(host[1:-1]).compressed + "]"
    try:
        mapped = idna.uts46_remap(host, std3_rules=False, transitional=False)
    except (idna.IDNAError, UnicodeError) as exc:
        raise ValueError(f"not a hostname ({exc})") from None
    labels = mapped[:-1].split(".") if mapped.endswith(".") else mapped.split(".")
    out = []
    for label in labels:
        if not label:
            raise ValueError("a hostname has an empty label")
        if label.isascii() and not label.startswith("xn--"):
            if _FORBIDDEN_IN_HOST.intersection(label):
                raise ValueError("a hostname holds a character browsers refuse")
            out.append(label)
            continue
        try:
            out.append(idna.alabel(label).decode("ascii"))
        except (idna.IDNAError, UnicodeError) as exc:
            raise ValueError(f"not a hostname ({exc})") from None
    return ".".join(out)


def _raw_host(netloc: str) -> str:
    """The host of a netloc exactly as written: urlsplit's `hostname` lowercases it with Python's
    rules; UTS #46 alone decides how a browser maps it."""
    hostport = netloc.rpartition("@")[2]
    if hostport.startswith("["):
        return hostport[: hostport.find("]") + 1]
    return hostport.partition(":")[0]


def normalise_domain(value: object) -> str:
    if not isinstance(value, str):
        raise SettingsInvalid("destination_domains", "each domain must be a string")
    try:
        domain = ascii_host(value.strip())
    except ValueError:
        raise SettingsInvalid("destination_domains", f"{value!r} is not a hostname") from None
    if not _HOSTNAME.match(domain):
        raise SettingsInvalid("destination_domains", f"{value!r} is not a hostname")
    return domain


def host_allowed(host: str, domains: list[str]) -> bool:
    """A destination host (A-label form) is allowed if it is a listed domain or a subdomain of
    one."""
    host = host.lower().rstrip(".")
    return any(host == d or host.endswith("." + d) for d in domains)


def url_host(url: str) -> str | None:
    """The A-label host of an absolute URL, or None when it has none a browser would accept."""
    try:
        parts = urlsplit(url)
        return ascii_host(_raw_host(parts.netloc)) if parts.netloc else None
    except ValueError:
        return None


def check_destination(url: str, domains: list[str], field: str = "destination") -> str:
    """The destination, its host in A-label form, if it is an absolute http(s) URL on the
    program's domains. Store what this returns: it is what browsers will be sent to."""
    if len(url) > 2048 or not url.isprintable() or any(c.isspace() for c in url):
        raise SettingsInvalid(field, "the URL is too long or contains spaces or control characters")
    try:
        parts = urlsplit(url)
        _ = parts.port  # raises on a bad port
    except ValueError:
        raise SettingsInvalid(field, "not a valid URL") from None
    if parts.scheme not in ("http", "https") or not parts.netloc \
            or not url.lower().startswith(parts.scheme + "://"):
        raise SettingsInvalid(field, "must be an absolute http(s) URL")
    if "@" in parts.netloc or "\\" in url:
        raise SettingsInvalid(field, "must not carry credentials or backslashes")
    raw_host = _raw_host(parts.netloc)
    try:
        host = ascii_host(raw_host)
    except ValueError:
        raise SettingsInvalid(field, "the host is not a valid hostname") from None
    if not host_allowed(host, domains):
        shown = host if host == raw_host.lower() else f"{raw_host} (to browsers: {host})"
        raise SettingsInvalid(
            field, f"the host {shown!r} is not one of the program's destination domains"
        )
    port = parts.netloc[len(raw_host):]
    rest = url[len(parts.scheme) + 3 + len(parts.netloc):]
    return f"{parts.scheme}://{host}{port}{rest}"


# -- webhook targets ---------------------------------------------------------------------------


def address_is_public(ip: IPAddress) -> bool:
    """Whether an address is on the public internet: not private, loopback, link-local (cloud
    metadata at 169.254.169.254), multicast, reserved, unspecified or shared (CGNAT), also when
    it hides in an IPv4-mapped, NAT64, 6to4 or Teredo IPv6 address."""
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return address_is_public(ip.ipv4_mapped)
        if ip in _NAT64:
            return address_is_public(ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF))
        if ip.sixtofour is not None and not address_is_public(ip.sixtofour):
            return False
        if ip.teredo is not None and not address_is_public(ip.teredo[1]):
            return False
    return ip.is_global and not (ip.is_private or ip.is_loopback or ip.is_link_local
                                 or ip.is_multicast or ip.is_reserved or ip.is_unspecified)


def literal_address(host: str) -> IPAddress | None:
    """The address a host names without DNS, as browsers and getaddrinfo read it: dotted quads,
    IPv6 in brackets, and the old IPv4 forms (`127.1`, `0x7f.0.0.1`, `2130706433`)."""
    bare = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    try:
        return ipaddress.ip_address(bare)
    except ValueError:
        pass
    if _NUMERIC_LABEL.match(bare.rsplit(".", 1)[-1]):
        try:
            return ipaddress.IPv4Address(socket.inet_aton(bare))
        except OSError:
            return None
    return None


def private_target(host: str) -> str | None:
    """What is not public about a webhook host (A-label form) that can be told without DNS, or
    None. (Delivery resolves the name and checks every address again.)"""
    name = host.lower().rstrip(".")
    if any(name == s or name.endswith("." + s) for s in _LOCAL_SUFFIXES):
        return f"the local name {name!r}"
    ip = literal_address(name)
    if ip is not None and not address_is_public(ip):
        return f"the non-public address {ip}"
    return None


def redact_url(url: str) -> str:
    """The URL with any credentials (`user:pass@`) replaced by `***`, for logs and answers."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "(an invalid URL)"
    if "@" not in parts.netloc:
        return url
    rest = url[url.find(parts.netloc) + len(parts.netloc):]
    return f"{parts.scheme}://***@{parts.netloc.rpartition('@')[2]}{rest}"


def _webhook_url(raw: object, allow_private: bool) -> None:
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
    try:
        host = ascii_host(_raw_host(parts.netloc))
    except ValueError:
        raise SettingsInvalid("webhook_url", "webhook_url's host is not a valid hostname") from None
    problem = None if allow_private else private_target(host)
    if problem is not None:
        raise SettingsInvalid(
            "webhook_url", f"webhook_url points at {problem}: webhooks go only to public "
            "addresses unless the server runs with REFGUARD_WEBHOOK_ALLOW_PRIVATE=1")


# -- settings ----------------------------------------------------------------------------------


def _check_keys(obj: Mapping[str, Any], level: str, where: str) -> None:
    """Refuse a key unknown at this level, naming the closest known one."""
    known = KNOWN_KEYS[level]
    for key in obj:
        if key in known:
            continue
        path = f"{where}.{key}" if where else str(key)
        close = difflib.get_close_matches(str(key), sorted(known), n=1)
        if close:
            hint = f"did you mean {close[0]!r}?"
        elif level == "reward" and key in CREDITED_TYPES:
            hint = ('rewards are rules in reward.rules, e.g. {"rules": [{"beneficiary": '
                    f'"referrer", "on": "{key}", "flat": 2000}}]}}')
        else:
            hint = f"known here: {', '.join(sorted(known))}"
        raise SettingsInvalid(path, f"unknown setting {path!r}; {hint}")


def _number(settings: dict[str, Any], key: str, lo: float, hi: float, *, integer: bool) -> None:
    value = settings[key]
    ok_type = isinstance(value, int) if integer else isinstance(value, int | float)
    if isinstance(value, bool) or not ok_type or not lo <= value <= hi:
        kind = "an integer" if integer else "a number"
        raise SettingsInvalid(key, f"{key} must be {kind} between {lo:g} and {hi:g}")


def _reward(reward: object) -> None:
    if not isinstance(reward, dict):
        raise SettingsInvalid("reward", "reward must be an object")
    _check_keys(reward, "reward", "reward")
    currency = reward.get("currency", "USD")
    if not isinstance(currency, str) or not _CURRENCY.match(currency):
        raise SettingsInvalid("reward", "reward.currency must be an ISO 4217 code like USD")
    _rules(reward.get("rules", []), "reward.rules", "reward.rules[]")
    if "variants" not in reward:
        return
    variants = reward["variants"]
    if not isinstance(variants, list) or not variants:
        raise SettingsInvalid("reward", "reward.variants must be a non-empty list")
    names = set()
    for i, variant in enumerate(variants):
        where = f"reward.variants[{i}]"
        if not isinstance(variant, dict):
            raise SettingsInvalid("reward", f"{where} must be an object")
        _check_keys(variant, "reward.variants[]", where)
        name = variant.get("name")
        if not isinstance(name, str) or not 1 <= len(name) <= 64 or name in names:
            raise SettingsInvalid("reward", f"{where}.name must be a unique name (1 to 64 "
                                  "characters)")
        names.add(name)
        weight = variant.get("weight", 1)
        if isinstance(weight, bool) or not isinstance(weight, int | float) \
                or not 0 < weight <= 10**6 or not math.isfinite(weight):
            raise SettingsInvalid("reward", f"{where}.weight must be a positive number")
        _rules(variant.get("rules", []), f"{where}.rules", "reward.variants[].rules[]")


def _rules(rules: object, where_list: str, level: str) -> None:
    if not isinstance(rules, list):
        raise SettingsInvalid("reward", f"{where_list} must be a list")
    for i, rule in enumerate(rules):
        where = f"{where_list}[{i}]"
        if not isinstance(rule, dict):
            raise SettingsInvalid("reward", f"{where} must be an object")
        _check_keys(rule, level, where)
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
            _check_keys(tier, level + ".tiers[]", f"{where}.tiers[{j}]")
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
        _kind(rule, where)


def _kind(rule: dict[str, Any], where: str) -> None:
    """`kind` (cash, credit or coupon) and a coupon rule's `pool`."""
    kind = rule.get("kind", "cash")
    if kind not in REWARD_KINDS:
        raise SettingsInvalid("reward", f"{where}.kind must be one of {', '.join(REWARD_KINDS)}")
    pool = rule.get("pool")
    if kind == "coupon":
        if not isinstance(pool, str) or not _POOL.match(pool):
            raise SettingsInvalid("reward", f"{where}.pool must name the coupon pool: a slug of "
                                  "a-z, 0-9, '_' or '-' (1 to 64 characters)")
    elif pool is not None:
        raise SettingsInvalid("reward", f"{where}.pool is only for a coupon rule (kind coupon)")


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


def _real(value: object, where: str, lo: float, hi: float, field: str) -> None:
    if isinstance(value, bool) or not isinstance(value, int | float) or not lo <= value <= hi:
        raise SettingsInvalid(field, f"{where} must be a number between {lo:g} and {hi:g}")


def _adaptive_hold(raw: object) -> None:
    if raw is None:
        return
    if not isinstance(raw, dict):
        raise SettingsInvalid("adaptive_hold", "adaptive_hold must be an object or null")
    _check_keys(raw, "adaptive_hold", "adaptive_hold")
    for key, value in {**ADAPTIVE_HOLD, **raw}.items():
        _int(value, f"adaptive_hold.{key}", 0, 10**6, "adaptive_hold")


def _word(value: object, where: str, field: str) -> None:
    if not isinstance(value, str) or not re.fullmatch(r"[a-z0-9_.-]{1,64}", value):
        raise SettingsInvalid(field, f"{where} must be a word of a-z, 0-9, '_', '.' or '-'")


def _asks(raw: object) -> None:
    """`asks` (DESIGN.md section 5): when a happy customer is asked to refer."""
    if not isinstance(raw, dict):
        raise SettingsInvalid("asks", "asks must be an object")
    _check_keys(raw, "asks", "asks")
    rules = raw.get("rules", [])
    if not isinstance(rules, list):
        raise SettingsInvalid("asks", "asks.rules must be a list")
    for i, rule in enumerate(rules):
        where = f"asks.rules[{i}]"
        if not isinstance(rule, dict):
            raise SettingsInvalid("asks", f"{where} must be an object")
        _check_keys(rule, "asks.rules[]", where)
        _word(rule.get("on"), f"{where}.on", "asks")
        if rule.get("min_score") is not None:
            _real(rule["min_score"], f"{where}.min_score", -1e9, 1e9, "asks")
        if rule.get("nth") is not None:
            _int(rule["nth"], f"{where}.nth", 1, 10**6, "asks")
    for key, hi in (("within_hours", 24 * 365), ("cooldown_days", 3650),
                    ("max_per_customer", 10**6)):
        if raw.get(key) is not None:
            _int(raw[key], f"asks.{key}", 0, hi, "asks")
    if raw.get("top_share") is not None:
        _real(raw["top_share"], "asks.top_share", 0, 1, "asks")


def _share(raw: object) -> None:
    """`share` (DESIGN.md section 5): the share page's message and channels. A channel is a
    name of SHARE_CHANNELS or `{"name", "message"}` (that channel's own message template)."""
    if not isinstance(raw, dict):
        raise SettingsInvalid("share", "share must be an object")
    _check_keys(raw, "share", "share")
    _share_message(raw.get("message"), "share.message")
    channels = raw.get("channels")
    if channels is None:
        return
    if not isinstance(channels, list) or len(channels) > 50:
        raise SettingsInvalid("share", "share.channels must be a list of channel names or "
                              '{"name", "message"} objects')
    seen: set[str] = set()
    for i, entry in enumerate(channels):
        where, channel = f"share.channels[{i}]", entry
        if isinstance(entry, dict):
            _check_keys(entry, "share.channels[]", where)
            _share_message(entry.get("message"), f"{where}.message")
            channel, where = entry.get("name"), f"{where}.name"
        if not isinstance(channel, str) or channel not in SHARE_CHANNELS:
            raise SettingsInvalid("share", f"{where} must be one of {', '.join(SHARE_CHANNELS)}")
        if channel in seen:
            raise SettingsInvalid("share", f"{where}: {channel!r} is listed twice")
        seen.add(channel)


def _share_message(message: object, where: str) -> None:
    if message is not None and (not isinstance(message, str)
                                or len(message) > SHARE_MESSAGE_MAX):
        raise SettingsInvalid("share", f"{where} must be a text of at most "
                              f"{SHARE_MESSAGE_MAX} characters")


def _timezone(raw: object) -> None:
    if not isinstance(raw, str) or len(raw) > 64:
        raise SettingsInvalid("timezone", "timezone must be an IANA name like Europe/Paris")
    try:
        zoneinfo.ZoneInfo(raw)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        raise SettingsInvalid("timezone", f"timezone {raw!r} is not an IANA time zone name "
                              "(e.g. Europe/Paris)") from None


def validate_settings(raw: object, domains: list[str], *,
                      allow_private_webhooks: bool = False) -> dict[str, Any]:
    """Settings with defaults filled in; a key unknown at any level is refused (SettingsInvalid
    names it and the closest known one). URLs on the program's domains come back with their
    host in A-label form, as browsers will read them."""
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise SettingsInvalid("settings", "settings must be an object")
    _check_keys(raw, "", "")
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
    _webhook_url(settings.get("webhook_url"), allow_private_webhooks)
    for key in ("fallback_url", "default_destination"):
        if settings.get(key) is not None:
            if not isinstance(settings[key], str):
                raise SettingsInvalid(key, f"{key} must be a URL")
            settings[key] = check_destination(settings[key], domains, key)
    if "asks" in settings:
        _asks(settings["asks"])
    if "share" in settings:
        _share(settings["share"])
    if "timezone" in settings:
        _timezone(settings["timezone"])
    return settings


def default_destination(domains: list[str], settings: dict[str, Any]) -> str:
    configured = settings.get("default_destination")
    if isinstance(configured, str):
        return configured
    return f"https://{domains[0]}/"
