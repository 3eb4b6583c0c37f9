"""Reinstall stacking: one referrer's new accounts made again and again on one or two phones.

A referrer who wipes or clones his own phone (or keeps a spare one) to sign up again and again
through his own link gets a new cookie, a new device id and a new account each time; if he
switches browsers (other in-app browsers, the app itself) and stays off his home network
(mobile data), his accounts share no cookie, no User-Agent and no address. What a reinstall
cannot change is the hardware and its system: the phone model and the OS build
(`device_build`: `Android 13; moto g84 5G Build/TP1A.220624.014` in an Android browser's or
app's User-Agent, `iPhone15,2; iOS 17.2` in an iOS app's). Any one phone model is a few
percent of a program's customers at most, so a referrer many of whose referees are on one
model and build is either a stacker or a family whose members bought the same phone.

So, per referrer, against the program's own baseline:

- units: the referrer's referees (customers whose first referred conversion is credited to
  it) with no history of their own (one paid conversion at most: an account that renews is a
  customer who pays, whatever phone he has), merged where they share an address, any
  address (a household's members, a family's shared phone at home, are one home, and the
  home rules in fraud.signals say whether that home is the referrer's; friends behind one
  carrier address count once too, and so do two reinstalls that happen to); a phone
  reinstalled over weeks on mobile data comes back on a different address each time;
- the test: the count of units on the referrer's commonest build against that build's share
  of the program's customers (the referrer's own referees left out), a binomial tail,
  Bonferroni over the builds among the referrer's units, with a floor of MIN_UNITS units
  (small counts are what chance and families on matching phones give); Benjamini-Hochberg
  at FDR_Q across the referrers tested (those with MIN_UNITS units or more);
- a discovered referrer's other builds with SECOND_UNITS units or more that pass the same
  tail at FDR_Q over its builds are its second phone.

The accounts on the found builds come back with the referrer as one ring (`KIND`), and each of
their conversions carries an identity reason (one phone behind them: a flag for review, not
strong: a large family on identical phones at different addresses can show it too).
Linear in the conversions.
"""

from __future__ import annotations

import re
from collections import Counter, defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache

import networkx as nx
from scipy import stats

from fraud.rings import Account, Ring
from fraud.signals import (
    FDR_Q,
    ConversionFacts,
    Reason,
    benjamini_hochberg,
    binom_above,
    first_referred,
    purchases_by_customer,
)

KIND = "device_stack"
# A referrer's homes on one build, at least, for the test to count: a family that bought its
# members the same phone, seen away from home (mobile data), gives up to four.
MIN_UNITS = 5
SECOND_UNITS = 3  # a discovered stacker's second phone: at least this many accounts on it
MAX_RHO = 0.5
STACK_WEIGHT = 0.6  # identity, not strong: one phone behind the accounts, held for review
_ANDROID = re.compile(r"Android ([\d.]+); ([^;)]{2,40}?) Build/([\w.\-]+)")
_IOS_APP = re.compile(r"\((iP(?:hone|ad)\d+,\d+); iOS ([\d.]+)")


@lru_cache(maxsize=65536)
def device_build(agent: str | None) -> str | None:
    """The phone model and OS build a User-Agent names, or None where it names none (Safari
    and Chrome's reduced agent hide the model)."""
    if not agent:
        return None
    m = _ANDROID.search(agent)
    if m is not None:
        if m.group(2).strip() in {"K", "wv"}:
            return None
        return f"Android {m.group(1)}; {m.group(2).strip()} Build/{m.group(3)}"
    m = _IOS_APP.search(agent)
    if m is not None:
        return f"{m.group(1)}; iOS {m.group(2)}"
    return None


@dataclass(frozen=True, slots=True)
class Stacks:
    reasons: dict[int, Reason]  # conversion id -> its device_stack reason
    rings: list[Ring]


def device_stacks(conversions: Sequence[ConversionFacts]) -> Stacks:
    """The referrers whose referees come far more often on one phone build than the
    program's customers do, their accounts on it, as reasons and rings (module docstring)."""
    builds: dict[str, set[str]] = defaultdict(set)  # customer -> builds
    addresses: dict[str, set[str]] = defaultdict(set)  # customer -> addresses
    for conv in conversions:
        for agent, ip in conv.agents:
            build = device_build(agent)
            if build is not None:
                builds[conv.customer].add(build)
            if ip is not None:
                addresses[conv.customer].add(ip)
    if not builds:
        return Stacks({}, [])
    on_build = Counter(b for bs in builds.values() for b in bs)
    total = len(builds)
    spent = purchases_by_customer(conversions)
    first = {c: r for c, (r, _conv) in first_referred(conversions).items()}
    referees: dict[str, list[str]] = defaultdict(list)
    for customer, ref in first.items():
        if customer in builds and len(spent.get(customer, ())) <= 1:
            referees[ref].append(customer)
    tested: dict[str, float] = {}
    found: dict[str, list[tuple[str, list[str], float]]] = {}
    homes = {ref: _units(people, addresses) for ref, people in referees.items()}
    rho = _clustering(homes, builds, on_build, total)
    for ref, people in referees.items():
        units = homes[ref]
        if len(units) < MIN_UNITS:
            continue
        per_build: dict[str, list[list[str]]] = defaultdict(list)
        for unit in units:
            for b in set().union(*(builds[p] for p in unit)):
                per_build[b].append(unit)
        own = Counter(b for p in people for b in builds[p])
        tails = []
        for b, hit in per_build.items():
            share = max(on_build[b] - own[b], 1) / max(total - len(people), 1)
            tails.append((_tail(len(hit), len(units), share, rho), b, hit))
        m = len(tails)
        tested[ref] = min(1.0, min(t[0] for t in tails) * m)
        best = min(tails)
        if len(best[2]) < MIN_UNITS:
            tested[ref] = 1.0
            continue
        found[ref] = [(b, sorted(p for unit in hit for p in unit), p * m)
                      for p, b, hit in tails
                      if p * m <= FDR_Q and len(hit) >= SECOND_UNITS]
    discovered = benjamini_hochberg(tested)
    held: dict[str, tuple[str, Reason]] = {}  # customer -> (referrer, its reason)
    rings: list[Ring] = []
    for ref in sorted(discovered):
        phones = found.get(ref, [])
        accounts = {p for _b, people, _p in phones for p in people}
        if not accounts:
            continue
        where = "; ".join(f"{len(people)} on {b}" for b, people, _p in phones)
        n = len(referees[ref])
        reason = Reason(
            KIND, f"identity: {len(accounts)} of referrer {ref}'s {n} new referees came on one "
            f"or two phone builds ({where}), each far rarer among the program's customers, "
            "at different addresses: one phone reinstalled to sign up again and again",
            len(accounts), f"{MIN_UNITS} accounts on one build, at FDR {FDR_Q}", STACK_WEIGHT,
            "identity")
        for p in accounts:
            held.setdefault(p, (ref, reason))
        members: set[Account] = {("referrer", ref)} | {("customer", p) for p in accounts}
        rings.append(Ring(KIND, frozenset(members), frozenset(), STACK_WEIGHT,
                          {"referrer": ref, "builds": [b for b, _people, _p in phones],
                           "accounts": len(accounts), "referees": n}))
    reasons = {conv.conversion_id: held[conv.customer][1] for conv in conversions
               if conv.customer in held and held[conv.customer][0] in conv.referrers}
    return Stacks(reasons, rings)


def _clustering(homes: Mapping[str, list[list[str]]], builds: Mapping[str, set[str]],
                on_build: Mapping[str, int], total: int) -> float:
    """How much more often two homes referred by one referrer are on one build than two of the
    program's customers are (an intra-class correlation, >= 0): friends and families buy alike
    phones, and a popular referrer's own phone serves his family. Pooled over every pair of
    homes of a referrer, one home's builds being its first member's."""
    if total <= 0:
        return 0.0
    chance = sum((n / total) ** 2 for n in on_build.values())
    pairs = same = 0
    for units in homes.values():
        k = len(units)
        if k < 2:
            continue
        pairs += k * (k - 1) // 2
        count = Counter(min(builds[unit[0]]) for unit in units if builds.get(unit[0]))
        same += sum(c * (c - 1) // 2 for c in count.values())
    if pairs == 0 or chance >= 1.0:
        return 0.0
    return min(max((same / pairs - chance) / (1.0 - chance), 0.0), MAX_RHO)


def _tail(k: int, n: int, share: float, rho: float) -> float:
    """P(X >= k) of k homes of n on a build of the program's `share`: beta-binomial with the
    program's intra-referrer correlation `rho` (binomial where it is 0)."""
    if rho <= 0.0:
        return binom_above(k, n, share)
    share = min(max(share, 1e-6), 1 - 1e-6)
    a = share * (1 - rho) / rho
    b = (1 - share) * (1 - rho) / rho
    return float(stats.betabinom.sf(k - 1, n, a, b))


def _units(people: list[str], addresses: Mapping[str, set[str]]) -> list[list[str]]:
    """The referees merged where they share an address: one home (or one NAT) counts once."""
    union = nx.utils.UnionFind(people)
    by_ip: dict[str, str] = {}
    for p in people:
        for ip in addresses.get(p, ()):
            if ip in by_ip:
                union.union(by_ip[ip], p)
            else:
                by_ip[ip] = p
    return [sorted(s) for s in union.to_sets()]


def flag_reasons(ring: Ring) -> list[dict[str, object]]:
    """A device stack's own flag reasons."""
    builds = ring.evidence.get("builds")
    listed = ", ".join(builds) if isinstance(builds, list) else ""
    return [{"code": KIND, "message": f"referrer {ring.evidence.get('referrer')}'s "
             f"{ring.evidence.get('accounts')} new accounts came on one or two phone builds "
             f"({listed}) far more often than the program's customers: one phone reinstalled "
             "again and again", "value": ring.evidence.get("accounts"),
             "threshold": MIN_UNITS}]
