"""Fraud signals, each a reason with its measured value, its threshold and its weight.

Input is plain data (`ConversionFacts`, `ReferrerFacts`, `ProgramContext`); output is lists of
`Reason`s: a conversion's own (`conversion_reasons`), a referrer's as a whole
(`referrer_reasons`), a shared device's (`shared_device_reasons`). fraud.assess puts them
together with rings, anomaly scores and the finance model into a conversion's risk.
"""

from __future__ import annotations

import math
import warnings
from collections import Counter, defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl

import numpy as np
from scipy import stats

from geo.reader import ip_prefix

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
                "threshold": self.threshold, "weight": self.weight}


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
    headerless: bool = False  # no Accept-Language: every browser sends one on a navigation


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
    amount: int = 0

    @property
    def delay(self) -> float | None:
        """Seconds from the last attributed click to the conversion."""
        return self.at - self.touches[-1].at if self.touches else None


@dataclass(frozen=True, slots=True)
class ReferrerFacts:
    """What is known of a referrer's own activity (the referrer is a customer too)."""

    external_id: str
    email_hash: bytes | None = None
    visitors: frozenset[str] = frozenset()
    devices: frozenset[str] = frozenset()
    ips: frozenset[str] = frozenset()


def conversion_reasons(conv: ConversionFacts, referrers: Mapping[str, ReferrerFacts]
                       ) -> list[Reason]:
    """The reasons to doubt one conversion on its own facts: who it shares an identity with,
    and how its attributed clicks came."""
    return identity_reasons(conv, referrers) + touch_reasons(conv)


def identity_reasons(conv: ConversionFacts, referrers: Mapping[str, ReferrerFacts]
                     ) -> list[Reason]:
    """The referee is (or lives with) a credited referrer: a shared identifier, or a shared
    network."""
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
        elif ({ip_prefix(i) for i in conv.ips} & {ip_prefix(i) for i in ref.ips}):
            reasons.append(Reason(
                "shared_network", f"referee and referrer {ref_id} use the same network "
                "(IPv4 /24, IPv6 /48)",
                "same /24", "different networks", 0.4))
    return reasons


def touch_reasons(conv: ConversionFacts) -> list[Reason]:
    """What the attributed clicks say: injected, from a bot, from a hosting or anonymous IP,
    paid traffic, or from another country than the conversion."""
    if not conv.touches:
        return []
    reasons: list[Reason] = []
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
    return reasons


KS_MIN_CONVERSIONS = 10
KS_P_VALUE = 1e-3
REFUND_RATE = 0.3
REFUND_MIN_CONVERSIONS = 5
REFEREES_PER_DEVICE = 3
VELOCITY_MIN = 5  # conversions in one day before a burst can count as one
VELOCITY_FACTOR = 5.0  # times the referrer's usual daily rate
PEAK_FACTOR = 3.0  # times the best day of the program's busier referrers (90th percentile)
DAY = 86400.0
SPAM_MIN_CLICKS = 100
HOSTING_SHARE = 0.5  # of a referrer's conversions through hosting/anonymous IPs
HOSTING_MIN_CONVERSIONS = 3
HEADERLESS_SHARE = 0.5  # of a referrer's conversions through visits without Accept-Language
HEADERLESS_MIN_CONVERSIONS = 5
# Above this share of the program's conversions, the data just lacks the header (an import
# that never had it): the signal then says nothing.
HEADERLESS_PROGRAM_MAX = 0.1
# Click spam converts little by design: a few late conversions are enough for the test when
# the conversion rate is already far under the program's.
SPAM_MIN_CONVERSIONS = 5
OTHERS_SAMPLE = 5_000  # delays the program's distribution is estimated from
SPAM_RATE_FACTOR = 0.2  # a conversion rate under a fifth of the program's


@dataclass(frozen=True, slots=True)
class ProgramContext:
    """What a scan knows of the whole program beyond the conversions at hand.

    A full scan has every conversion and needs only the first two. An incremental scan has a
    window (each referrer's latest conversions) and brings the rest as aggregates: the
    program's delays (a sample), its conversions per click, and each referrer's totals.
    """

    reversed_ids: frozenset[int] = frozenset()  # conversions refunded or charged back
    referrer_clicks: Mapping[str, int] = field(default_factory=dict)
    background_delays: np.ndarray | None = None
    program_rate: float | None = None  # credited conversions per counted click
    history: Mapping[str, tuple[int, float]] = field(default_factory=dict)  # (n, first at)
    # The program's share of headerless conversions, as the latest full scan measured it
    # (incremental scans see a window, too little to tell what the program's data holds).
    headerless_share: float | None = None


def referrer_reasons(conversions: Sequence[ConversionFacts],
                     context: ProgramContext = ProgramContext()) -> dict[str, list[Reason]]:
    """Reasons that concern a referrer as a whole, to be added to each of their conversions.

    - delay_distribution: their click-to-conversion delays are shorter than the rest of the
      program's (one-sided two-sample Kolmogorov-Smirnov test);
    - click_spam: many clicks, a conversion rate far under the program's, and delays longer
      than the program's (clicks fired at people who were going to convert anyway);
    - velocity: a day with far more conversions than the referrer's usual daily rate, and far
      more than the best day of the program's busier referrers;
    - refund_rate: a large share of their conversions was refunded or charged back;
    - hosting_share: most of their conversions came through clicks from hosting or anonymous
      IPs (a click farm with real browsers: one such conversion alone is a VPN user);
    - headerless_share: most of their conversions came through visits without the
      Accept-Language header every browser sends, where the program's visits have it
      (automation with a browser's user agent).

    The program's delays are the other referrers' among `conversions` unless the context
    brings them; conversion rates need the context's click counts.
    """
    tally = _tally(conversions, context.reversed_ids)
    # Each referrer's conversions and first conversion, over their whole history if known.
    totals = {ref: context.history.get(ref, (n, min(tally.times[ref])))
              for ref, n in tally.counts.items()}
    program_rate = context.program_rate
    if program_rate is None and context.referrer_clicks:
        program_rate = sum(tally.counts.values()) / max(sum(context.referrer_clicks.values()), 1)
    out: dict[str, list[Reason]] = defaultdict(list)
    for found in (_delay_reasons(tally, context, totals, program_rate),
                  _velocity_reasons(tally, totals), _refund_reasons(tally),
                  _hosting_reasons(tally), _headerless_reasons(tally, context)):
        for ref, reason in found.items():
            out[ref].append(reason)
    return dict(out)


@dataclass(slots=True)
class _Tally:
    """The conversions at hand, counted per credited referrer."""

    delays: dict[str, list[float]] = field(default_factory=lambda: defaultdict(list))
    times: dict[str, list[float]] = field(default_factory=lambda: defaultdict(list))
    counts: Counter[str] = field(default_factory=Counter)
    refunds: Counter[str] = field(default_factory=Counter)
    hosted: Counter[str] = field(default_factory=Counter)  # through hosting/anonymous IPs
    headerless: Counter[str] = field(default_factory=Counter)
    touched_by: Counter[str] = field(default_factory=Counter)  # conversions with clicks
    touched: int = 0  # the program's conversions with clicks
    headerless_in_program: int = 0


def _tally(conversions: Sequence[ConversionFacts], reversed_ids: frozenset[int]) -> _Tally:
    tally = _Tally()
    for conv in conversions:
        delay = conv.delay
        from_hosting = any(t.anonymous or t.hosting for t in conv.touches)
        no_header = is_headerless(conv)
        tally.touched += bool(conv.touches)
        tally.headerless_in_program += no_header
        for ref in conv.referrers:
            tally.counts[ref] += 1
            tally.times[ref].append(conv.at)
            if conv.conversion_id in reversed_ids:
                tally.refunds[ref] += 1
            if from_hosting:
                tally.hosted[ref] += 1
            if no_header:
                tally.headerless[ref] += 1
            if conv.touches:
                tally.touched_by[ref] += 1
            if delay is not None:
                tally.delays[ref].append(max(delay, 0.0))
    return tally


def _delay_sample(delays: Mapping[str, list[float]]) -> tuple[np.ndarray, np.ndarray]:
    """Every delay at hand and whose it is; above OTHERS_SAMPLE, a fixed random sample of
    them: as good for the test, and each referrer's comparison costs the sample's size, not
    the program's."""
    everyone = np.array([d for ds in delays.values() for d in ds])
    owner = np.array([ref for ref, ds in delays.items() for _ in ds], dtype=object)
    if len(everyone) > OTHERS_SAMPLE:
        keep = np.random.default_rng(0).choice(len(everyone), OTHERS_SAMPLE, replace=False)
        everyone, owner = everyone[keep], owner[keep]
    return everyone, owner


def _delay_reasons(tally: _Tally, context: ProgramContext,
                   totals: Mapping[str, tuple[int, float]], program_rate: float | None
                   ) -> dict[str, Reason]:
    """delay_distribution, or else click_spam: a referrer's delays against the program's."""
    everyone, owner = _delay_sample(tally.delays)
    out: dict[str, Reason] = {}
    for ref, own in tally.delays.items():
        others = (context.background_delays if context.background_delays is not None
                  else everyone[owner != ref])
        if len(own) < SPAM_MIN_CONVERSIONS or len(others) < KS_MIN_CONVERSIONS:
            continue
        reason = _faster_reason(ref, own, others)
        if reason is None:
            reason = _click_spam_reason(
                ref, own, others, conversions=totals[ref][0],
                n_clicks=context.referrer_clicks.get(ref, 0), program_rate=program_rate)
        if reason is not None:
            out[ref] = reason
    return out


def _faster_reason(ref: str, own: list[float], others: np.ndarray) -> Reason | None:
    faster = _ks(own, others, "greater") if len(own) >= KS_MIN_CONVERSIONS else None
    if faster is None or not faster.pvalue < KS_P_VALUE:  # a NaN p-value says nothing
        return None
    return Reason(
        "delay_distribution",
        f"{ref}'s visitors convert faster than the program's (median "
        f"{_median(own):.0f} s against {float(np.median(others)):.0f} s)",
        round(float(faster.statistic), 4), f"p < {KS_P_VALUE:g}", 0.5)


def _click_spam_reason(ref: str, own: list[float], others: np.ndarray, *, conversions: int,
                       n_clicks: int, program_rate: float | None) -> Reason | None:
    if not program_rate or n_clicks < SPAM_MIN_CLICKS:
        return None
    rate = conversions / n_clicks
    slower = _ks(own, others, "less")
    if not (rate < SPAM_RATE_FACTOR * program_rate and slower.pvalue < KS_P_VALUE):
        return None
    return Reason(
        "click_spam",
        f"{ref}'s {n_clicks} clicks converted at {rate:.1%} against the program's "
        f"{program_rate:.1%}, and later than usual (median {_median(own) / 3600:.0f} h "
        f"against {float(np.median(others)) / 3600:.0f} h): clicks fired at people who "
        "were converting anyway", round(rate, 4),
        round(SPAM_RATE_FACTOR * program_rate, 4), 0.6)


def _velocity_reasons(tally: _Tally, totals: Mapping[str, tuple[int, float]]
                      ) -> dict[str, Reason]:
    bursts = {ref: _burst(sorted(ts), *totals[ref]) for ref, ts in tally.times.items()}
    typical = float(np.percentile([peak for peak, _ in bursts.values()], 90)) if bursts else 0.0
    out: dict[str, Reason] = {}
    for ref, (peak, usual) in bursts.items():
        limit = max(VELOCITY_MIN, VELOCITY_FACTOR * usual, PEAK_FACTOR * typical)
        if peak >= limit:
            out[ref] = Reason(
                "velocity", f"{ref} had {peak} conversions within one day, against a usual "
                f"{usual:.1f} a day (the program's busiest referrers' best day: {typical:.0f})",
                peak, round(limit, 2), 0.4)
    return out


def _refund_reasons(tally: _Tally) -> dict[str, Reason]:
    out: dict[str, Reason] = {}
    for ref, n in tally.counts.items():
        rate = tally.refunds[ref] / n
        if n >= REFUND_MIN_CONVERSIONS and rate >= REFUND_RATE:
            out[ref] = Reason("refund_rate", f"{rate:.0%} of {ref}'s conversions were "
                              "refunded or charged back", round(rate, 4), REFUND_RATE, 0.4)
    return out


def _hosting_reasons(tally: _Tally) -> dict[str, Reason]:
    out: dict[str, Reason] = {}
    for ref, n in tally.counts.items():
        hosted = tally.hosted[ref]
        share = hosted / n
        if hosted >= HOSTING_MIN_CONVERSIONS and share >= HOSTING_SHARE:
            out[ref] = Reason(
                "hosting_share", f"{hosted} of {ref}'s {n} conversions came through clicks "
                "from hosting or anonymous IPs (a click farm)", round(share, 4), HOSTING_SHARE,
                0.5)
    return out


def _headerless_reasons(tally: _Tally, context: ProgramContext) -> dict[str, Reason]:
    out: dict[str, Reason] = {}
    for ref, n in tally.counts.items():
        headerless = tally.headerless[ref]
        if headerless < HEADERLESS_MIN_CONVERSIONS:
            continue
        if context.headerless_share is not None:
            rest = context.headerless_share
        else:  # the program's share without this referrer's own conversions
            others = tally.touched - tally.touched_by[ref]
            rest = (max(tally.headerless_in_program - headerless, 0) / others if others > 0
                    else 1.0)
        share = headerless / n
        if share >= HEADERLESS_SHARE and rest <= HEADERLESS_PROGRAM_MAX:
            out[ref] = Reason(
                "headerless_share", f"{headerless} of {ref}'s {n} conversions came through "
                "visits without the Accept-Language header every browser sends (the rest of the "
                f"program: {rest:.0%}): automation posing as a browser", round(share, 4),
                HEADERLESS_SHARE, 0.5)
    return out


def is_headerless(conv: ConversionFacts) -> bool:
    """Every click that led to the conversion came without Accept-Language."""
    return bool(conv.touches) and all(t.headerless for t in conv.touches)


def headerless_share(conversions: Sequence[ConversionFacts]) -> float | None:
    """The share of touched conversions that are headerless (None: no touched conversion)."""
    touched = [c for c in conversions if c.touches]
    return sum(map(is_headerless, touched)) / len(touched) if touched else None


def _ks(own: Sequence[float], others: Sequence[float] | np.ndarray, alternative: str
        ) -> Any:
    """Two-sample Kolmogorov-Smirnov; the asymptotic p-value once the samples are large (the
    exact one is slow there, and scipy warns when it gives up on it)."""
    method = "exact" if len(own) * len(others) <= 10_000 else "asymp"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return stats.ks_2samp(own, others, alternative=alternative, method=method)


def _burst(ts: list[float], total: int, first: float) -> tuple[int, float]:
    """The most conversions within any 24 hours, and the daily rate outside that day over the
    referrer's whole history (`total` conversions since `first`; at least a week, so a new
    referrer's first day is not its own baseline)."""
    peak, lo = 0, 0
    for hi, t in enumerate(ts):
        while t - ts[lo] > DAY:
            lo += 1
        peak = max(peak, hi - lo + 1)
    span = (ts[-1] - min(first, ts[0])) / DAY - 1
    return peak, (total - peak) / max(span, 7.0)


def shared_device_reasons(conversions: Sequence[ConversionFacts]) -> dict[int, Reason]:
    """Conversions whose customer uses a device that several customers referred by the same
    referrer use: one person making accounts for their own link. A device whose customers
    came through different people's links is a common phone model behind one campus or
    carrier network (the fingerprint includes the network), not one person's device."""
    customers_of: dict[tuple[str, str], set[str]] = defaultdict(set)
    for conv in conversions:
        for device in conv.devices:
            for ref in conv.referrers:
                customers_of[(device, ref)].add(conv.customer)
    out: dict[int, Reason] = {}
    for conv in conversions:
        crowded = max((len(customers_of[(d, r)]) for d in conv.devices for r in conv.referrers),
                      default=0)
        if crowded >= REFEREES_PER_DEVICE:
            out[conv.conversion_id] = Reason(
                "many_referees_one_device",
                f"{crowded} customers referred by the same referrer use this customer's device",
                crowded, REFEREES_PER_DEVICE, 0.6)
    return out


def features(conv: ConversionFacts, referrer_conversions: Mapping[str, int],
             referrer_clicks: Mapping[str, int]) -> list[float]:
    """The anomaly detectors' view of a conversion (see fraud.anomaly.FEATURES)."""
    delay = conv.delay
    ref_conv = max((referrer_conversions.get(r, 0) for r in conv.referrers), default=0)
    ref_rate = max((referrer_conversions.get(r, 0) / max(referrer_clicks.get(r, 0), 1)
                    for r in conv.referrers), default=0.0)
    return [
        math.log1p(max(delay, 0.0)) if delay is not None else 0.0,
        float(len(conv.touches)),
        float(len({t.ip for t in conv.touches if t.ip})),
        float(sum(t.is_bot for t in conv.touches)),
        float(sum(t.anonymous or t.hosting for t in conv.touches)),
        math.log1p(conv.amount),
        math.log1p(ref_conv),
        min(ref_rate, 1.0),
    ]


def _median(values: Sequence[float]) -> float:
    ordered = sorted(values)
    mid = len(ordered) // 2
    return ordered[mid] if len(ordered) % 2 else (ordered[mid - 1] + ordered[mid]) / 2
