"""A conversion's reasons and risk, put together in one place: an evidence model.

`assess_all` takes the plain facts of a scan (the conversions, their referrers, what is known of
the program, the rings found, the finance model if it is on) and answers each conversion's
`Assessment` with its feature row (what the finance model learns from). Every conversion's
reasons come in one order:

1. its own signals (fraud.signals.conversion_reasons: identity shared with a referrer, ranked
   by strength, and how its clicks came);
2. a ring it belongs to, or else a ring its credited referrer belongs to;
3. its credited referrers' tests against the program's baseline (fraud.signals.
   referrer_findings), weighed where the conversion carries the referrer's anomaly by the
   probability that it is one of the referrer's anomalous conversions rather than a genuine
   referral that looks alike by chance (referrer_mixtures, anomalous_probability);
4. a device several of the same referrer's referees use (fraud.signals.shared_device_reasons);
   a browser cookie behind two or more of them (fraud.signals.shared_cookie_reasons); new
   accounts on the referrer's own browser at home (fraud.signals.own_browser_reasons); one
   browser that never bought before several new customers' first visits on a referrer's
   link (fraud.signals.repeat_lease_reasons); a new account on the link owner's own browser,
   on another day, under a new cookie (fraud.signals.private_window_reasons);
5. the finance model's probability that finance would reject it (fraud.supervised).

Each reason belongs to one family of evidence (FAMILIES). Reasons of one family are
correlated (an IP, its /24 and a fingerprint that includes the network say one thing), so a
family counts once, by its strongest reason; families are independent pieces of evidence and
combine as such: risk = 1 - prod over families (1 - family weight).

Decision rule: a conversion is held (review_at 0.5) only when at least one family is
decisive on its own (DECISIVE); weak hints of several families stay under WEAK_CAP. A risk
reaches rejection only on strong identity evidence (the same customer, mailbox or cookie) or
at least two decisive families; otherwise it is capped at FLAG_CAP, so the most a single
family (the network one, say) can do is flag the reward for finance.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace

import numpy as np

from fraud.cashout import KIND as CASH_OUT
from fraud.cashout import flag_reasons as cash_out_flag_reasons
from fraud.pools import pool_cookie_reasons, pool_flag_reasons
from fraud.rings import WEAK_RING, Ring
from fraud.signals import (
    OTHER_DEVICE,
    ConversionFacts,
    Finding,
    ProgramContext,
    Reason,
    ReferrerFacts,
    amount_shares,
    binom_above,
    conversion_crowds,
    conversion_reasons,
    features,
    first_visits,
    own_browser_reasons,
    private_window_reasons,
    purchases_by_customer,
    referrer_findings,
    repeat_lease_reasons,
    shared_cookie_reasons,
    shared_device_reasons,
    varied_purchases,
)
from fraud.sleepers import flag_reasons as sleeper_flag_reasons
from fraud.sleepers import sleeper_reasons
from fraud.stacking import KIND as DEVICE_STACK
from fraud.stacking import Stacks, device_stacks
from fraud.stacking import flag_reasons as stack_flag_reasons
from fraud.supervised import SupervisedRisk
from fraud.swaps import KIND as CREDIT_SWAP
from fraud.swaps import Swaps, credit_swaps
from fraud.swaps import flag_reasons as swap_flag_reasons

FAMILIES = {
    "identity": "the referee is the referrer (same person)",
    "network": "shared network or devices",
    "click": "how the click came (timing, bots, paid traffic)",
    "population": "the referrer's traffic unlike the program's",
    "money": "how the money was spent or came back (sprees of purchases, chargebacks)",
    "model": "a model of finance's decisions",
}
RING_REFERRER = 0.3  # the weight of "a credited referrer is in a ring": alone, not held
FINANCE_MODEL_AT = 0.8  # the finance model's probability of a rejection, to become a reason
DECISIVE = 0.5  # a family this strong says "hold" on its own
WEAK_CAP = 0.45  # the most a risk reaches when no family is decisive on its own
FLAG_CAP = 0.85  # the most a risk without strong identity or two families reaches
UNCARRIED = 0.1  # a referrer's anomaly on a conversion that does not show it
CORROBORATED = 0.7  # a carried anomaly of a referrer with two or more anomalies


@dataclass(frozen=True, slots=True)
class Assessment:
    conversion_id: int
    score: float
    reasons: tuple[Reason, ...] = field(default_factory=tuple)


@dataclass(frozen=True, slots=True)
class Scored:
    """A conversion's assessment and its feature row (stored: the finance model learns from
    it)."""

    assessment: Assessment
    features: list[float]


def combine(reasons: Iterable[Reason]) -> float:
    """The risk of a conversion's reasons (see the module's decision rule)."""
    return combine_evidence((r.family or r.code, r.weight, r.strong) for r in reasons)


def combine_evidence(items: Iterable[tuple[str, float, bool]]) -> float:
    """(family, weight, strong) items into a risk: a family counts once, families combine
    as independent evidence, and without strong identity or two decisive families the risk
    stays at or under FLAG_CAP."""
    best: dict[str, float] = defaultdict(float)
    strong = False
    for family, weight, is_strong in items:
        w = min(max(weight, 0.0), 1.0)
        best[family] = max(best[family], w)
        strong = strong or (is_strong and w >= DECISIVE)
    keep = 1.0
    for w in best.values():
        keep *= 1.0 - w
    risk = 1.0 - keep
    decisive = sum(1 for w in best.values() if w >= DECISIVE)
    if not strong and decisive < 2:
        risk = min(risk, FLAG_CAP)
    if decisive == 0:  # weak hints of several families do not add up to a hold
        risk = min(risk, WEAK_CAP)
    return round(risk, 6)


def families_of(reasons: Iterable[Reason]) -> list[str]:
    """The families that decided, strongest first, in plain words."""
    best: dict[str, float] = defaultdict(float)
    for r in reasons:
        best[r.family or r.code] = max(best[r.family or r.code], r.weight)
    return [FAMILIES.get(f, f) for f, w in sorted(best.items(), key=lambda kv: -kv[1])
            if w >= DECISIVE]


def decision_reason(reasons: Sequence[Reason], score: float) -> Reason:
    """What decided a held conversion, in plain words: the families that said "hold", and
    whether rejection was open to it (strong identity evidence or two families)."""
    decided = families_of(reasons) or [FAMILIES.get(r.family, r.family) for r in
                                       sorted(reasons, key=lambda r: -r.weight)[:1]]
    strong = any(r.strong and r.weight >= DECISIVE for r in reasons)
    rejectable = strong or len(families_of(reasons)) >= 2
    how = ("strong identity evidence" if strong else "two or more independent families"
           if rejectable else "one family only: at most flagged for review")
    return Reason("decided_by", f"held on {'; '.join(decided)} ({how})", decided,
                  "strong identity or two families to reject", 0.0, "decision",
                  False) if score > 0 else Reason("decided_by", "nothing against it", [],
                                                  "", 0.0, "decision")


def assess(conv: ConversionFacts, referrers: Mapping[str, ReferrerFacts],
           rings: Sequence[Ring] = (), extra: Iterable[Reason] = (),
           holders: Mapping[tuple[str, str], int] | None = None, *,
           visited: Mapping[tuple[str, str], float] | None = None) -> Assessment:
    """One conversion's reasons and risk: its own signals, the rings around it, then `extra`
    (what the program's conversions together say of it)."""
    ring = ring_reason(conv, rings)
    reasons = (*conversion_reasons(conv, referrers, holders, visited),
               *(() if ring is None else (ring,)), *extra)
    return Assessment(conv.conversion_id, combine(reasons), reasons)


def assess_all(conversions: Sequence[ConversionFacts], referrers: Mapping[str, ReferrerFacts],
               context: ProgramContext, rings: Sequence[Ring] = (), *,
               only: Collection[int] | None = None,
               model: SupervisedRisk | None = None,
               holders: Mapping[tuple[str, str], int] | None = None,
               crowds: Collection[tuple[str, str]] | None = None,
               swaps: Swaps | None = None, stacks: Stacks | None = None) -> list[Scored]:
    """Every conversion's assessment (of those in `only`, if given: the others are context).

    `model` is the finance model, used when it is on; `holders` counts the accounts on each
    IP and device (`("ip" | "device", value)`); `crowds`: the conversions'
    `conversion_crowds`, when the caller has them already (computed once otherwise); `swaps`:
    their `fraud.swaps.credit_swaps`, likewise; `stacks`: their `fraud.stacking.device_stacks`,
    likewise.
    """
    wanted = [c for c in conversions if only is None or c.conversion_id in only]
    rings = people_rings(rings, conversions)
    crowds = conversion_crowds(conversions) if crowds is None else crowds
    per_referrer = referrer_findings(conversions, context, crowds=crowds)
    per_device = shared_device_reasons(conversions, crowds)
    per_cookie = shared_cookie_reasons(conversions)
    own_browser = own_browser_reasons(conversions, referrers, holders or {})
    repeat_lease = repeat_lease_reasons(conversions, holders or {})
    private_window = private_window_reasons(conversions, holders or {})
    swapped = (credit_swaps(conversions, referrers) if swaps is None else swaps).reasons
    stacked = (device_stacks(conversions) if stacks is None else stacks).reasons
    visited = first_visits(conversions)
    pooled = pool_cookie_reasons(conversions, rings)
    money = ring_chargeback_reasons(conversions, rings, context.charged_back_ids)
    sleepers = sleeper_reasons(conversions, rings)
    rows = feature_rows(conversions, wanted, context)
    opinions = finance_model_reasons(rows, model)
    carried = carried_by_customer(conversions, per_referrer)
    mixtures = referrer_mixtures(conversions, per_referrer)
    out = []
    for conv, row, opinion in zip(wanted, rows, opinions, strict=True):
        extra = population_reasons(conv, per_referrer, carried, mixtures)
        extra += [r for r in (per_device.get(conv.conversion_id),
                              per_cookie.get(conv.conversion_id),
                              own_browser.get(conv.conversion_id),
                              repeat_lease.get(conv.conversion_id),
                              private_window.get(conv.conversion_id),
                              swapped.get(conv.conversion_id),
                              stacked.get(conv.conversion_id),
                              pooled.get(conv.conversion_id), sleepers.get(conv.conversion_id),
                              money.get(conv.customer), opinion) if r is not None]
        out.append(Scored(assess(conv, referrers, rings, extra, holders,
                                 visited=visited), row))
    return out


MONEY_WEIGHT = 0.5  # money disputed across a group of accounts: a hold for review on its own
RING_CHARGEBACKS = 2  # a group's customers with a purchase charged back, at least
# The share of a program's customers with a chargeback that honest ones reach (friendly fraud,
# disputes): a group's disputed customers are tested against the larger of it and the
# program's own share.
CHARGEBACK_FLOOR = 0.02
RING_CHARGEBACK_P = 0.01  # the level of that test (Bonferroni across the groups)
# Groups bound by timing alone (sleeper cells) are no shared infrastructure: left out.
MONEY_RING_KINDS = frozenset({"ring", "device_farm", "dense_block", "collusion_pool"})


def ring_chargeback_reasons(conversions: Sequence[ConversionFacts], rings: Sequence[Ring],
                            charged_back: Collection[int]) -> dict[str, Reason]:
    """Money that comes back across one operator's accounts: a chargeback is a card's owner
    disputing a payment (a stolen card, most often; a refund is a customer changing their
    mind and says nothing here). One customer with a chargeback is ordinary (friendly fraud,
    a dispute) and says nothing on its own. A group of accounts bound by shared devices or
    addresses (a ring: weak alone, a household shares them too) RING_CHARGEBACKS or more of
    whose customers had purchases charged back, more than the program's customers have
    (binomial against the larger of their share and CHARGEBACK_FLOOR, Bonferroni across the
    groups), is one operator cashing out stolen cards: each of its customers tied to the
    disputed purchases carries it, including purchases not charged back yet (a chargeback
    comes weeks later). Tied: the disputed customers, and those with a conversion on a
    cookie, device or address one of the disputed purchases came from (the operator's). A
    group that also swept in a crowd (a campus, an office, the customers a thief ordered
    as) leaves the crowd out: it shares the group's looser ties, not the cards'. Family
    "money", independent of the network evidence that bound the group, so that both
    together can reject."""
    if not charged_back or not rings:
        return {}
    disputed: set[str] = set()  # customers with a purchase charged back
    customers: set[str] = set()
    marks: dict[str, set[tuple[str, str]]] = defaultdict(set)  # customer -> all theirs
    cards: dict[str, set[tuple[str, str]]] = defaultdict(set)  # their disputed purchases'
    for conv in conversions:
        customers.add(conv.customer)
        mine = _marks(conv)
        marks[conv.customer] |= mine
        if conv.conversion_id in charged_back:
            disputed.add(conv.customer)
            cards[conv.customer] |= mine
    if len(disputed) < RING_CHARGEBACKS:
        return {}
    base = max(len(disputed) / max(len(customers), 1), CHARGEBACK_FLOOR)
    groups = [ring for ring in rings if ring.kind in MONEY_RING_KINDS]
    out: dict[str, Reason] = {}
    for ring in sorted(groups, key=lambda r: -len(r.accounts)):
        people = {person for _kind, person in ring.accounts} & customers
        hit = sorted(people & disputed)
        if (len(hit) < RING_CHARGEBACKS or binom_above(len(hit), len(people), base)
                > RING_CHARGEBACK_P / len(groups)):
            continue
        reason = Reason(
            "ring_chargebacks", f"money: {len(hit)} of the {len(people)} customers of a "
            f"{ring.kind.replace('_', ' ')} bound by shared devices or addresses had purchases "
            f"charged back (the program's customers: {base:.0%} at most counted as ordinary): "
            "one operator cashing out stolen cards", len(hit), RING_CHARGEBACKS, MONEY_WEIGHT,
            "money")
        used: set[tuple[str, str]] = set()
        for person in hit:
            used |= cards[person]
        for person in people:
            if person in disputed or marks[person] & used:
                out.setdefault(person, reason)
    return out


def _marks(conv: ConversionFacts) -> set[tuple[str, str]]:
    """The cookies, devices and addresses a conversion came from, by kind."""
    out = {("visitor", v) for v in conv.visitors} | {("device", d) for d in conv.devices}
    out |= {("ip", ip) for ip in conv.ips}
    if conv.ip:
        out.add(("ip", conv.ip))
    return out


Carried = set[tuple[str, str, str]]  # (customer, referrer, finding code)


def carried_by_customer(conversions: Sequence[ConversionFacts],
                        per_referrer: Mapping[str, list[Finding]]) -> Carried:
    """Which customers carry which of their referrer's anomalies in any of their conversions
    credited to that referrer: a customer whose sign-up was injected was brought by the
    injection, and so was their later purchase."""
    out: Carried = set()
    for conv in conversions:
        for ref in conv.referrers:
            for finding in per_referrer.get(ref, ()):
                if finding.shows(conv):
                    out.add((conv.customer, ref, finding.reason.code))
    return out


EXCESS_SAMPLE = 2_000  # the program's conversions a carrier's base share is measured on
# An anomaly of its referrer that a conversion does not show divides the odds that it is
# one of the anomalous ones by at most 1 / MISSING_LR: the model is a simplification (the
# anomalies are not quite independent), so no single absence is a veto.
MISSING_LR = 0.2
# Findings whose anomaly only some of the anomalous conversions can show, by chance rather than
# by what they are (clicks spoofed from a browser of the converting device's own platform show
# no other device): a conversion that lacks one is not less likely anomalous for it.
ONE_SIDED = frozenset({OTHER_DEVICE})
EM_ROUNDS = 50


@dataclass(frozen=True, slots=True)
class Mixture:
    """A referrer's conversions of one kind as two parts: anomalous (a share `anomalous`,
    showing finding f's anomaly with probability shows[f]) and genuine (showing it as often
    as the program's other conversions: base[f])."""

    anomalous: float
    shows: Mapping[str, float]
    base: Mapping[str, float]
    n: int


Mixtures = dict[tuple[str, bool], Mixture]  # (referrer, purchase?) -> its mixture


def _kind(conv: ConversionFacts) -> bool:
    return conv.amount > 0


def referrer_mixtures(conversions: Sequence[ConversionFacts],
                      per_referrer: Mapping[str, list[Finding]]) -> Mixtures:
    """Each referrer with findings: its conversions of each kind (purchases, other
    conversions such as sign-ups) fitted as a two-part Mixture by expectation-maximisation,
    the genuine part's rates fixed at the program's other conversions' (measured on a sample
    of EXCESS_SAMPLE). A finding every conversion carries (a conversion rate) is about the
    referrer and says nothing of one conversion: it is left out."""
    if not per_referrer:
        return {}
    step = max(1, len(conversions) // EXCESS_SAMPLE)
    sample: dict[bool, list[ConversionFacts]] = defaultdict(list)
    for conv in conversions[::step]:
        sample[_kind(conv)].append(conv)
    mine: dict[tuple[str, bool], list[ConversionFacts]] = defaultdict(list)
    for conv in conversions:
        for ref in conv.referrers:
            if ref in per_referrer:
                mine[(ref, _kind(conv))].append(conv)
    out: Mixtures = {}
    for (ref, kind), own in mine.items():
        others = [c for c in sample[kind] if ref not in c.referrers]
        kept, base = [], []
        for finding in per_referrer[ref]:
            rate = sum(map(finding.carries, others)) / len(others) if others else 1.0
            if rate < 1.0:
                kept.append(finding)
                base.append(rate)
        if not kept:
            continue
        shown = np.array([[f.carries(c) for f in kept] for c in own], dtype=float)
        out[(ref, kind)] = _fit(shown, np.array(base), [f.reason.code for f in kept])
    return out


def _fit(shown: np.ndarray, base: np.ndarray, codes: list[str]) -> Mixture:
    """The two-part mixture of `shown` (a row per conversion, a column per finding: 1 where
    the conversion shows it), the genuine part's rates fixed at `base`: started from the
    largest excess of any finding, then expectation-maximisation. Rates stay within half a
    conversion of 0 and 1 (Laplace), so that nothing is certain on a few conversions."""
    n = len(shown)
    cap = 1.0 - 0.5 / max(n, 1)
    base = np.clip(base, 0.5 / EXCESS_SAMPLE, cap)
    excess = (shown.mean(axis=0) - base) / (1.0 - base)
    anomalous = float(np.clip(excess.max(), 0.0, cap))
    shows = np.clip(shown.mean(axis=0), base, cap)
    if anomalous <= 0.0:
        return Mixture(0.0, dict(zip(codes, shows.tolist(), strict=True)),
                       dict(zip(codes, base.tolist(), strict=True)), n)
    for _ in range(EM_ROUNDS):
        bad = np.prod(np.where(shown > 0, shows, 1.0 - shows), axis=1) * anomalous
        good = np.prod(np.where(shown > 0, base, 1.0 - base), axis=1) * (1.0 - anomalous)
        r = bad / np.maximum(bad + good, 1e-300)
        anomalous = float(np.clip(r.mean(), 0.5 / n, cap))
        shows = np.clip((r @ shown) / max(r.sum(), 1e-9), base, cap)
    return Mixture(anomalous, dict(zip(codes, shows.tolist(), strict=True)),
                   dict(zip(codes, base.tolist(), strict=True)), n)


def anomalous_probability(conv: ConversionFacts, ref: str, shown: Collection[str],
                          mixtures: Mixtures, *, gate: bool = True) -> float:
    """The probability that a conversion of `ref` showing the anomalies `shown` (finding
    codes) and not its referrer's others is one of the referrer's anomalous conversions
    rather than one of its genuine referrals that looks alike by chance (a fast buyer, a
    purchase at the cheapest price), by the referrer's Mixture for conversions of its kind:
    the anomalies combine as independent evidence (naive Bayes), one not shown dividing the
    odds by at most 1 / MISSING_LR (one of ONE_SIDED not shown: not at all).

    The referrer's anomalous share is the prior; the conversion's own traits are the
    evidence. Where it lacks what sets the anomalous part apart (a trait so nearly all of
    them show and so few genuine conversions do that lacking it is the strongest evidence
    the model allows, MISSING_LR) and the evidence as a whole does not favour the anomalous
    part (a likelihood ratio of 1 or less: what it shows, the program's genuine conversions
    show as often), it shares nothing with the referrer's fraud and the prior alone would
    hold it on the referrer's reputation: 0, unless the referrer's traffic is anomalous as a
    whole (its Mixture leaves less than one genuine conversion). A conversion that lacks only
    traits half the anomalous ones show (a burst day, the minimum amount) is not set apart.
    `gate` False: no such release (the conversion is tied by other means)."""
    mixture = mixtures.get((ref, _kind(conv)))
    if mixture is None:
        return 1.0
    a = mixture.anomalous
    if a <= 0.0:
        return 0.0
    likelihood, lacks = 1.0, False
    for code, q in mixture.shows.items():
        base = mixture.base[code]
        if code in shown:
            likelihood *= q / base
        elif code not in ONE_SIDED:
            missing = (1.0 - q) / (1.0 - base)
            lacks = lacks or missing <= MISSING_LR
            likelihood *= max(missing, MISSING_LR)
    if gate and lacks and likelihood <= 1.0 and mixture.n * (1.0 - a) >= 1.0:
        return 0.0
    odds = a / (1.0 - a) * likelihood
    return odds / (1.0 + odds)


def population_reasons(conv: ConversionFacts, per_referrer: Mapping[str, list[Finding]],
                       carried: Carried | None = None, mixtures: Mixtures | None = None
                       ) -> list[Reason]:
    """Its credited referrers' findings: at their weight where the conversion (or another of
    the customer's through the same referrer) carries the anomaly (CORROBORATED when the
    referrer has two anomalies or more), at UNCARRIED where it does not: a referrer's
    genuine referrals are not held on its reputation alone. A conversion that carries none of
    the findings that tie (Finding.ties: the referrer's conversion rate is carried by all and
    ties none) keeps UNCARRIED for each, and its reasons say that the referrer is under
    suspicion but this referral shows none of the traits. Where `mixtures` is given, carried
    findings weigh in proportion to the probability that the conversion is one of the
    anomalous ones (anomalous_probability): a genuine referral that shows what the program's
    genuine conversions often show too (a fast purchase), and not the referrer's other
    anomalies, is not held."""
    out: list[Reason] = []
    for ref in conv.referrers:
        found = per_referrer.get(ref, [])
        several = len(found) >= 2
        mine = [f for f in found if f.shows(conv)
                or (conv.customer, ref, f.reason.code) in (carried or ())]
        if found and not any(f.ties for f in mine):
            out += untied_reasons(ref, found)
            continue
        # Two of the referrer's tying anomalies that it shows (different tests on different
        # data) tie it to the anomalous part: it is not held on reputation alone.
        scale = (1.0 if mixtures is None or not mine else
                 anomalous_probability(conv, ref, {f.reason.code for f in mine}, mixtures,
                                       gate=sum(f.ties for f in mine) < 2))
        if scale <= 0.0:
            out += untied_reasons(ref, found, shown=True)
            continue
        # Two different anomalies of the referrer that this conversion shows corroborate
        # each other (different tests on different data), up to CORROBORATED.
        keep = 1.0
        for f in mine:
            keep *= 1.0 - f.reason.weight
        together = min(1.0 - keep, CORROBORATED) if len(mine) >= 2 else 0.0
        for finding in found:
            reason = finding.reason
            if finding in mine:
                weight = (max(reason.weight, CORROBORATED)
                          if several and reason.weight >= DECISIVE else reason.weight)
                weight = max(max(weight, together) * scale, UNCARRIED)
                out.append(replace(reason, weight=round(weight, 4)))
            else:
                out.append(replace(
                    reason, weight=UNCARRIED,
                    message=reason.message + " (this conversion does not show it)"))
    return out


def untied_reasons(ref: str, found: Sequence[Finding], *, shown: bool = False
                   ) -> list[Reason]:
    """A referrer's findings on a conversion tied to none of them: each at UNCARRIED, and one
    reason that says so in plain words. `shown`: it shows some of the traits, but only as the
    program's genuine conversions do (anomalous_probability is 0)."""
    codes = ", ".join(sorted({f.reason.code for f in found}))
    how = ("shows only traits the program's genuine referrals show as often, and not what "
           "sets the referrer's anomalous ones apart" if shown else
           "shows none of the traits its tests found")
    return [Reason("untied_referral",
                   f"referrer {ref} is under suspicion ({codes}), but this referral {how}: "
                   "not held on the referrer's reputation",
                   len(found), "a trait of the referrer's anomaly", UNCARRIED, "population"),
            *(replace(f.reason, weight=UNCARRIED, message=f.reason.message + (
                (" (not what sets this conversion apart)" if shown else
                 " (this conversion does not show it)") if f.ties else
                " (of the referrer as a whole: it ties no conversion)")) for f in found)]


def feature_rows(conversions: Sequence[ConversionFacts], wanted: Sequence[ConversionFacts],
                 context: ProgramContext) -> list[list[float]]:
    """The finance model's feature rows of the `wanted` conversions; a referrer's conversions are
    counted among `conversions`, or over their whole history where the context has it."""
    referrer_conversions: dict[str, int] = defaultdict(int)
    for conv in conversions:
        for ref in conv.referrers:
            referrer_conversions[ref] += 1
    referrer_conversions |= {ref: n for ref, (n, _first) in context.history.items()}
    return [features(c, referrer_conversions, context.referrer_clicks) for c in wanted]


def finance_model_reasons(rows: Sequence[Sequence[float]], model: SupervisedRisk | None
                          ) -> list[Reason | None]:
    """Per row, a reason when the finance model (if on) gives a rejection FINANCE_MODEL_AT or
    more."""
    if model is None or not model.enabled or not rows:
        return [None] * len(rows)
    out: list[Reason | None] = []
    for p in model.risk(rows):
        if p < FINANCE_MODEL_AT:
            out.append(None)
            continue
        out.append(Reason(
            "finance_model", f"resembles conversions finance rejected (probability "
            f"{p:.2f}; model validated at ROC AUC {model.validation_auc_ or 0:.2f} on "
            f"{model.trained_on_} decisions)", round(float(p), 4), FINANCE_MODEL_AT, 0.5,
            "model"))
    return out


def people_rings(rings: Sequence[Ring], conversions: Sequence[ConversionFacts]
                 ) -> list[Ring]:
    """The rings, where a held group of shared infrastructure whose members buy the way people
    do (fraud.signals.varied_purchases) is named but weak (WEAK_RING): colleagues behind an
    office's address on its standard computer share everything a device farm does, but a
    farm's accounts buy the one purchase that earns the reward, colleagues what each wants.
    The address and device alone are then one family's hint, not a hold. A ring whose
    accounts recruit each other (fraud.rings: a chain of referrals) stays as it is: colleagues
    are brought by one of them, and a ring's fake buyers may well vary their baskets."""
    shares, spent = amount_shares(conversions), purchases_by_customer(conversions)

    def people(ring: Ring) -> bool:
        return (ring.kind == "ring" and ring.score >= DECISIVE
                and not ring.evidence.get("recruiting")) and varied_purchases(
            [a for _kind, person in ring.accounts for a in spent.get(person, ())], shares)

    return [replace(ring, score=WEAK_RING, evidence={**ring.evidence, "varied_purchases": True})
            if people(ring) else ring for ring in rings]


def ring_reason(conv: ConversionFacts, rings: Sequence[Ring]) -> Reason | None:
    """A customer inside a ring is strong evidence against their conversion. A ring referrer's
    customer outside it is weak evidence only: fraudsters have real friends too, and those
    rewards should not all wait for finance because of the ring."""
    customer = {("customer", conv.customer), ("referrer", conv.customer)}
    # A sleeper cell is bound by timing, not infrastructure (fraud.sleepers.sleeper_reasons);
    # a device stack by one phone build, whose accounts carry their own reason
    # (fraud.stacking): neither is a network ring's evidence.
    rings = [ring for ring in rings if ring.kind not in ("sleeper_cell", DEVICE_STACK)]
    inside = [ring for ring in rings if ring.accounts & customer]
    if inside:
        ring = max(inside, key=lambda r: len(r.accounts))
        # A few accounts on one address and device are a household as often as a ring.
        small = ring.kind == "ring" and ring.score < DECISIVE  # fraud.rings.WEAK_RING
        return Reason(f"{ring.kind}_member",
                      f"network: the customer belongs to a {ring.kind.replace('_', ' ')} of "
                      f"{len(ring.accounts)} accounts bound by devices or addresses few others "
                      "use" + ((" (whose purchases vary as people's do: colleagues behind "
                                "an office's network, not a farm)"
                                if ring.evidence.get("varied_purchases") else
                                " (too few, or on too many devices, to tell from a household "
                                "or an office)") if small else ""),
                      len(ring.accounts), 3, 0.3 if small else 0.85,
                      "network")
    credited = {("referrer", r) for r in conv.referrers}
    beside = [ring for ring in rings if ring.accounts & credited]
    if not beside:
        return None
    ring = beside[0]
    who = ", ".join(sorted(r for _kind, r in ring.accounts & credited))
    return Reason("ring_referrer",
                  f"the credited referrer {who} belongs to a "
                  f"{ring.kind.replace('_', ' ')} of {len(ring.accounts)} accounts "
                  "(this customer is not in it)", len(ring.accounts), 3, RING_REFERRER, "network")


def ring_flag_reasons(ring: Ring) -> list[dict[str, object]]:
    """The reasons of a ring's own flag: what binds its accounts."""
    if ring.kind == "collusion_pool":
        return pool_flag_reasons(ring)
    if ring.kind == "sleeper_cell":
        return sleeper_flag_reasons(ring)
    if ring.kind == CASH_OUT:
        return cash_out_flag_reasons(ring)
    if ring.kind == CREDIT_SWAP:
        return swap_flag_reasons(ring)
    if ring.kind == DEVICE_STACK:
        return stack_flag_reasons(ring)
    if ring.kind == "referral_cycle":
        return [{"code": "referral_cycle", "message": "these referrers referred each other in "
                 "a cycle", "value": ring.evidence.get("length"), "threshold": 2}]
    ips = sum(1 for kind, _ in ring.shared if kind == "ip")
    devices = len(ring.shared) - ips
    what = " and ".join(f"{n} {noun}{'' if n == 1 else plural}" for n, noun, plural in
                        ((ips, "IP address", "es"), (devices, "device", "s")) if n)
    links = ring.evidence.get("chain_links")
    chain = (f" ({links} of them share none of it but signed up through, or bought "
             "through, the links of two or more of the others and little else: one referral "
             "chain)" if isinstance(links, int) and links else "")
    return [{"code": "shared_infrastructure" if ring.kind == "ring" else "dense_block",
             "message": f"{len(ring.accounts)} accounts share {what or 'nothing'} that almost "
                        f"nobody else uses{chain}",
             "value": len(ring.accounts), "threshold": 3}]
