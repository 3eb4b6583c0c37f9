"""Reciprocal credit swaps: referrers who open second accounts through each other's links.

A referrer who opens a second account for himself through his own link is a self-referral
(fraud.signals.identity_reasons). Two or more referrers who agree to open theirs through each
other's links hide that: each new account is credited to somebody else, so the referee is
never the credited referrer. What gives them away is the pair of facts together:

- identity: the new account is another referrer of the program, by a strong identifier
  (mailbox, after identity's normalisation, or a visitor cookie tied to a customer), directly
  or through another new account it shares one with; a new account, not the referrer's own
  customer id (a referrer who re-subscribes through a friend's link is that friend's
  customer);
- structure: the credit goes round. The referrers whose second accounts were credited to each
  other form a cycle (A's account through B's link and B's through A's, or A -> B -> C -> A).

Either alone happens to honest people: common names share a normalised mailbox, a friend who
refers a friend back is a mutual referral. A cycle of second accounts does not: each of its
conversions is strong identity evidence (enough to reject), and the cycle's referrers with
their second accounts come back as one ring (`KIND`). A second account of another referrer
that goes round no cycle is left to the other signals: by chance, strangers' mailboxes can
normalise alike. Linear in the conversions; the cycle search runs on the few tied edges.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import networkx as nx

from fraud.rings import Account, Ring
from fraud.signals import ConversionFacts, Reason, ReferrerFacts

KIND = "credit_swap"
SWAP_WEIGHT = 0.97  # strong identity evidence: the referee is another referrer, and it went round
# A mailbox or cookie this many identities share is a placeholder or a public terminal: it
# ties nobody.
FEW_HOLDERS = 3
SWAP_DAY = 86_400.0  # cycles whose swaps are this close in time are one group's (_rings)


@dataclass(frozen=True, slots=True)
class Swaps:
    reasons: dict[int, Reason]  # conversion id -> its credit_swap reason
    rings: list[Ring]


def _persons(conversions: Sequence[ConversionFacts], referrers: Mapping[str, ReferrerFacts]
             ) -> nx.utils.UnionFind:
    """Customers and referrers joined where they share a mailbox or cookie few others use."""
    holders: dict[tuple[str, object], set[str]] = defaultdict(set)
    for conv in conversions:
        if conv.email_hash is not None:
            holders[("email", conv.email_hash)].add(conv.customer)
        for cookie in conv.visitors:
            holders[("visitor", cookie)].add(conv.customer)
    for ref in referrers.values():
        if ref.email_hash is not None:
            holders[("email", ref.email_hash)].add(ref.external_id)
        for cookie in ref.visitors:
            holders[("visitor", cookie)].add(ref.external_id)
    union = nx.utils.UnionFind()
    for ids in holders.values():
        if 2 <= len(ids) <= FEW_HOLDERS:
            union.union(*ids)
    return union


def credit_swaps(conversions: Sequence[ConversionFacts],
                 referrers: Mapping[str, ReferrerFacts]) -> Swaps:
    """The conversions whose new account is another referrer's and whose credit goes round
    a cycle of such referrers, and those cycles as rings."""
    union = _persons(conversions, referrers)
    members: dict[object, set[str]] = defaultdict(set)  # person -> the referrers in it
    for ref_id in referrers:
        if ref_id in union.parents:
            members[union[ref_id]].add(ref_id)
    # A common name's mailbox, shared by more than FEW_HOLDERS, joins no persons, but a
    # referrer's mailbox still names the accounts that use it: a cycle tells chance apart.
    by_mailbox: dict[bytes, set[str]] = defaultdict(set)
    for ref in referrers.values():
        if ref.email_hash is not None:
            by_mailbox[ref.email_hash].add(ref.external_id)
    for conv in conversions:
        if conv.email_hash in by_mailbox and conv.customer not in referrers:
            members[union[conv.customer]] |= by_mailbox[conv.email_hash]
    # (owner, credited) -> the conversions of the owner's second accounts credited there
    edges: dict[tuple[str, str], list[ConversionFacts]] = defaultdict(list)
    for conv in conversions:
        if conv.customer not in union.parents or conv.customer in referrers:
            continue  # no tie, or the referrer's own customer id (a re-subscription)
        owners = members.get(union[conv.customer], set())
        for credited in conv.referrers:
            if credited in owners:
                continue  # a self-referral: fraud.signals.identity_reasons says so
            for owner in owners:
                edges[(owner, credited)].append(conv)
    if not edges:
        return Swaps({}, [])
    graph = nx.DiGraph(list(edges))
    reasons: dict[int, Reason] = {}
    # each cycle: (its referrers, its second accounts, their first and last conversion)
    cycles: list[tuple[set[str], set[str], float, float]] = []
    components = [c for c in nx.strongly_connected_components(graph) if len(c) >= 2]
    component = {r: i for i, c in enumerate(components) for r in c}
    within: dict[int, list[tuple[str, str]]] = defaultdict(list)  # each cycle's edges
    for owner, credited in edges:
        if owner in component and component[owner] == component.get(credited):
            within[component[owner]].append((owner, credited))
    for i, cycle in enumerate(components):
        inside = within[i]
        swapped = [conv for e in inside for conv in edges[e]]
        names = sorted(cycle)
        listed = ", ".join(names[:5]) + (", ..." if len(names) > 5 else "")
        for owner, credited in inside:
            for conv in edges[(owner, credited)]:
                reasons[conv.conversion_id] = Reason(
                    KIND, f"identity: the referee is a second account of referrer {owner} "
                    f"(same mailbox or browser cookie), credited to {credited}; {len(cycle)} "
                    f"referrers ({listed}) credit each other's second "
                    "accounts in a cycle: a swap of referral rewards", len(cycle),
                    "no cycle of second accounts", SWAP_WEIGHT, "identity", True)
        cycles.append((set(cycle), {c.customer for c in swapped},
                       min(c.at for c in swapped), max(c.at for c in swapped)))
    return Swaps(reasons, _rings(cycles))


def _rings(cycles: list[tuple[set[str], set[str], float, float]]) -> list[Ring]:
    """One ring per swap group: cycles whose swaps overlap in time (SWAP_DAY apart at most)
    are one group's, which agreed on it together (cycles of second accounts are rare enough
    that two the same days are not a coincidence); cycles at other times are rings of their
    own."""
    rings: list[Ring] = []
    group: list[tuple[set[str], set[str], float, float]] = []
    for cycle in [*sorted(cycles, key=lambda c: c[2]), None]:
        if group and (cycle is None or cycle[2] - max(c[3] for c in group) > SWAP_DAY):
            referrers = set().union(*(c[0] for c in group))
            accounts: set[Account] = {("referrer", r) for r in referrers}
            accounts |= {("customer", p) for c in group for p in c[1]}
            rings.append(Ring(KIND, frozenset(accounts), frozenset(), SWAP_WEIGHT,
                              {"referrers": sorted(referrers), "cycles": len(group),
                               "accounts": len(accounts)}))
            group = []
        if cycle is not None:
            group.append(cycle)
    return rings


def flag_reasons(ring: Ring) -> list[dict[str, object]]:
    """A swap ring's own flag reasons."""
    referrers = ring.evidence.get("referrers")
    n = len(referrers) if isinstance(referrers, list) else 0
    cycles = ring.evidence.get("cycles", 1)
    return [{"code": KIND, "message": f"{n} referrers credit each other's second accounts "
             f"(each is another of them by mailbox or browser cookie) in {cycles} "
             f"cycle(s) of swaps made the same days: {len(ring.accounts)} accounts",
             "value": n, "threshold": 2}]
