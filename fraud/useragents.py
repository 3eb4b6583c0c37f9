"""User-agent parsing with the maintained uap-core rules (`ua-parser`), cached by UA string."""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

from ua_parser import parse

_MOBILE_OS = frozenset({"iOS", "Android", "Windows Phone", "BlackBerry OS", "KaiOS", "Tizen",
                        "HarmonyOS", "Symbian OS", "Firefox OS"})


@dataclass(frozen=True, slots=True)
class DeviceInfo:
    browser: str | None
    browser_version: str | None
    os: str | None
    device: str | None
    mobile: bool
    spider: bool


UNKNOWN = DeviceInfo(None, None, None, None, False, False)


def _family(value: str | None) -> str | None:
    return value if value and value != "Other" else None


def _parseable(text: str) -> str:
    """`text` as the parser can read it. A header with bytes that are not UTF-8 arrives with
    them as lone surrogates (surrogateescape, as the redirect journals it), which the parser's
    regex engine refuses with UnicodeEncodeError: they are read as U+FFFD instead, as the click
    stores its user agent (tracker.formats.clean_text). Any other text is read as it is."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        try:
            return text.encode("utf-8", "surrogateescape").decode("utf-8", "replace")
        except UnicodeEncodeError:  # (a surrogate no byte gave: not from the wire)
            return text.encode("utf-8", "replace").decode("utf-8")
    return text


@lru_cache(maxsize=65536)
def parse_user_agent(user_agent: str) -> DeviceInfo:
    """Browser, OS and device family of a UA string; `spider` is uap-core's crawler class."""
    if not user_agent:
        return UNKNOWN
    result = parse(_parseable(user_agent[:1024]))
    ua, os_, device = result.user_agent, result.os, result.device
    browser = _family(ua.family if ua else None)
    version = ua.major if ua and ua.major else None
    os_family = _family(os_.family if os_ else None)
    device_family = _family(device.family if device else None)
    spider = device_family == "Spider"
    mobile = not spider and ("Mobi" in user_agent or (
        os_family in _MOBILE_OS and "iPad" not in user_agent and "Tablet" not in user_agent))
    return DeviceInfo(browser, version, os_family, device_family, mobile, spider)
