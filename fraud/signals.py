"""Per-conversion fraud signals, each a reason with its measured value and its threshold.

Input is plain data (`ConversionFacts`); output is a list of `Reason`s and a risk score in
[0, 1] that combines them as independent pieces of evidence: risk = 1 - prod(1 - weight).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from urllib.parse import parse_qsl

PAID_CLICK_IDS = ("gclid", "gbraid", "wbraid", "fbclid", "msclkid", "ttclid", "twclid",
                  "li_fat_id", "dclid")
INJECTION_SECONDS = 10.0


@dataclass(frozen=True, slots=True)
class Reason:
    code: str
    message: str
    value: object
    threshold: object
    weight: float

    def as_dict(self) -> dict[str, object]:
        return {"code": self.code, "message": self.message, "value": self.value,
                "threshold": self.threshold}


@dataclass(frozen=True, slots=True)
class ClickFacts:
    click_id: str
    at: float  # unix seconds
    referrer: str  # external id
    visitor: str | None
    ip: str | None
    device: str | None  # fingerprint hex
    is_bot: bool = False
    bot_rule: str | None = None
    anonymous: bool = False
    hosting: bool = False
    country: str | None = None
    query: str | None = None


@dataclass(frozen=True, slots=True)
class ConversionFacts:
    conversion_id: int
    customer: str
    at: float
    referrers: tuple[str, ...]  # credited referrers (external ids)
    email_hash: bytes | None = None
    ip: str | None = None
    country: str | None = None
    touches: tuple[ClickFacts, ...] = ()  # the attributed clicks, in time order
    visitors: frozenset[str] = frozenset()
    devices: frozenset[str] = frozenset()
    ips: frozenset[str] = frozenset()


@dataclass(frozen=True, slots=True)
class ReferrerFacts:
    """What is known of a referrer's own activity (the referrer is a customer too)."""

    external_id: str
    email_hash: bytes | None = None
    visitors: frozenset[str] = frozenset()
    devices: frozenset[str] = frozenset()
    ips: frozenset[str] = frozenset()


@dataclass(frozen=True, slots=True)
class Assessment:
    conversion_id: int
    score: float
    reasons: tuple[Reason, ...] = field(default_factory=tuple)


def combine(reasons: Iterable[Reason]) -> float:
    keep = 1.0
    for reason in reasons:
        keep *= 1.0 - min(max(reason.weight, 0.0), 1.0)
    return round(1.0 - keep, 6)


def _prefix24(ip: str) -> str:
    return ip.rsplit(".", 1)[0] if "." in ip else ip.rsplit(":", 5)[0]


def assess(conv: ConversionFacts, referrers: dict[str, ReferrerFacts]) -> Assessment:
    """The reasons to doubt one conversion, and its risk."""
    reasons: list[Reason] = []
    for ref_id in conv.referrers:
        ref = referrers.get(ref_id, ReferrerFacts(ref_id))
        shared: list[str] = []
        if conv.customer == ref.external_id:
            shared.append("customer id")
        if conv.email_hash is not None and conv.email_hash == ref.email_hash:
            shared.append("email")
        if conv.visitors & ref.visitors:
            shared.append("visitor")
        if conv.devices & ref.devices:
            shared.append("device")
        if conv.ips & ref.ips:
            shared.append("IP address")
        if shared:
            reasons.append(Reason(
                "self_referral",
                f"the referee shares {', '.join(shared)} with referrer {ref_id}'s own activity",
                shared, "any shared identifier", 0.95))
        elif ({_prefix24(i) for i in conv.ips} & {_prefix24(i) for i in ref.ips}):
            reasons.append(Reason(
                "shared_network", f"referee and referrer {ref_id} use the same /24 network",
                "same /24", "different networks", 0.4))
    if conv.touches:
        last = conv.touches[-1]
        delay = conv.at - last.at
        if 0 <= delay < INJECTION_SECONDS:
            reasons.append(Reason(
                "fast_conversion",
                f"converted {delay:.1f} s after the click (click injection is seconds)",
                round(delay, 3), INJECTION_SECONDS, 0.7))
        bots = [t for t in conv.touches if t.is_bot]
        if bots:
            reasons.append(Reason("bot_click", "an attributed click came from a bot or script",
                                  bots[-1].bot_rule, "no bot rule", 0.8))
        if any(t.anonymous or t.hosting for t in conv.touches):
            kinds = sorted({"hosting" if t.hosting else "anonymous" for t in conv.touches
                            if t.anonymous or t.hosting})
            reasons.append(Reason("anonymous_ip",
                                  f"an attributed click came from a {'/'.join(kinds)} IP",
                                  kinds, "a residential IP", 0.35))
        paid = sorted({k for t in conv.touches if t.query
                       for k, _v in parse_qsl(t.query) if k.lower() in PAID_CLICK_IDS})
        if paid:
            reasons.append(Reason("paid_click_id",
                                  "the landing carried an ad click id (paid traffic bidding on "
                                  "the brand, not a referral)", paid, "none", 0.5))
        countries = {t.country for t in conv.touches if t.country}
        if conv.country and countries and conv.country not in countries:
            reasons.append(Reason("country_mismatch",
                                  f"clicked from {'/'.join(sorted(countries))}, converted from "
                                  f"{conv.country}", conv.country, sorted(countries), 0.2))
    return Assessment(conv.conversion_id, combine(reasons), tuple(reasons))
