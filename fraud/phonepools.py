"""Phone pools: one operator's few phones behind the referees of many small shell referrers.

An operator who holds many referrer accounts, each with one to three fake referees so that no
referrer looks busy, wipes his phones between accounts and goes through carrier NAT and
proxies: no cookie, mailbox or address ties the accounts. What he keeps is his three to six
phones. Each phone's app build (model, OS build and app version, as its User-Agent gives them)
is one that other customers have too, so a single shared build ties nobody; but his shell
referrers' referees land on the same few builds over and over, and two referrers whose
referees share two builds are rare where each referee's phone is one of the program's many.

So, over the referrers that are not customers themselves (an account that only ever refers;
many genuine referrers are customers, a shell never is) and the program's phone builds that at
most PHONE_SHARE (and PHONE_ACCOUNTS) of the program's customers carry:

1. two referrers are tied when their referees share builds more often than the program's own
   mix of builds gives (Poisson, against each referee's chance to land on the other's builds
   at the builds' shares), and at least twice;
2. a pool is a group in which every referrer is tied so to PHONE_CORE others of it at least
   (a k-core: one chance tie, or a few common builds, make no such group; in shuffles of the
   program's own builds among its referees, none came out);
3. its phones are the builds that tie it; a referrer of it stays when at least PHONE_ON of its
   referees are on them, and the pool's accounts are those referees (a referee on another
   phone is not named on the pool's account).
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Sequence
from itertools import combinations

import networkx as nx
from scipy import stats

from fraud.rings import Ring
from fraud.signals import ConversionFacts

PHONE_SHARE = 0.03  # a build more of the program's customers carry ties nobody
PHONE_ACCOUNTS = 60  # nor one carried by more customers than this (bounds the pair count)
PHONE_P = 0.01  # a pair of referrers tied: their referees' shared builds beyond chance
PHONE_TIES = 2  # and shared at least this often
PHONE_CORE = 3  # each referrer of a pool tied to this many others of it
PHONE_ON = 2 / 3  # of a pool referrer's referees on the pool's phones, at least
PHONE_SCORE = 0.85


def _builds(conv: ConversionFacts) -> set[str]:
    """The customer's app builds: the User-Agents of their own conversion reports (those of
    the link's in-app browsers are the attributed clicks')."""
    clicked = {t.agent for t in conv.touches}
    return {agent for agent, _ip in conv.agents if agent and agent not in clicked}


def phone_pools(conversions: Sequence[ConversionFacts]) -> list[Ring]:
    """The phone pools of the program (see the module's docstring), as collusion pools."""
    customers = {conv.customer for conv in conversions}
    first: dict[str, ConversionFacts] = {}
    builds: dict[str, set[str]] = defaultdict(set)
    for conv in sorted(conversions, key=lambda c: (c.at, c.conversion_id)):
        builds[conv.customer] |= _builds(conv)
        if conv.referrers:
            first.setdefault(conv.customer, conv)
    carried = Counter(b for mine in builds.values() for b in mine)
    n = sum(1 for mine in builds.values() if mine)
    if not n:
        return []
    rare = {b for b, k in carried.items()
            if 2 <= k <= min(PHONE_ACCOUNTS, PHONE_SHARE * n)}
    referees: dict[str, list[str]] = defaultdict(list)
    for customer, conv in first.items():
        for r in conv.referrers:
            if r not in customers:
                referees[r].append(customer)
    chance: dict[str, float] = {  # expected hits of one random referee on r's referees' builds
        r: sum(carried[b] / n for c in mine for b in builds[c] & rare)
        for r, mine in referees.items()}
    on: dict[str, list[tuple[str, str]]] = defaultdict(list)
    for r, mine in sorted(referees.items()):
        for c in mine:
            for b in sorted(builds[c] & rare):
                on[b].append((r, c))
    hits: Counter[tuple[str, str]] = Counter()
    via: dict[tuple[str, str], set[str]] = defaultdict(set)
    for b, uses in on.items():
        for (a, _ca), (z, _cz) in combinations(uses, 2):
            if a != z:
                pair = (min(a, z), max(a, z))
                hits[pair] += 1
                via[pair].add(b)
    graph = nx.Graph()
    for (a, z), k in hits.items():
        expected = (chance[a] * len(referees[z]) + chance[z] * len(referees[a])) / 2
        if k >= PHONE_TIES and float(stats.poisson.sf(k - 1, expected)) < PHONE_P:
            graph.add_edge(a, z, builds=via[(a, z)])
    core = nx.k_core(graph, PHONE_CORE)
    rings = []
    for group in sorted(nx.connected_components(core), key=min):
        phones: set[str] = set()
        for a, z in core.subgraph(group).edges:
            phones |= core.edges[a, z]["builds"]
        kept = {r: [c for c in referees[r] if builds[c] & phones] for r in sorted(group)}
        kept = {r: mine for r, mine in kept.items()
                if mine and len(mine) >= PHONE_ON * len(referees[r])}
        if len(kept) <= PHONE_CORE - 1:
            continue
        accounts = {c for mine in kept.values() for c in mine}
        rings.append(Ring(
            "collusion_pool", frozenset(("customer", c) for c in accounts),
            frozenset(("agent", b) for b in sorted(phones)), PHONE_SCORE,
            {"accounts": len(accounts), "referrers": sorted(kept),
             "shared": [f"phone {b}" for b in sorted(phones)], "phone_pool": True}))
    return rings
