"""Rings: accounts bound together by the infrastructure they share, and referral cycles.

Accounts are referrers (by their own activity) and referred customers; what they share are IPs
and devices (fingerprints). Three views of the same bipartite graph, built with networkx:

- components: accounts linked when they share a *rare* IP or device (one used by at most
  `max_share` accounts: a carrier NAT or a café shared by hundreds says nothing);
- dense blocks: FRAUDAR (fraud.dense) on accounts x (IP, device), which resists camouflage;
- referral cycles: A referred B, who referred A (a directed cycle over referrals).

Each ring carries its members and the evidence that binds them.
"""

from __future__ import annotations

import math
from collections import Counter, defaultdict
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass, field

import networkx as nx
from scipy import stats

from fraud.dense import Fraudar, may_reach
from fraud.signals import FDR_Q, benjamini_hochberg, crowded_columns, living_on

Account = tuple[str, str]  # ("referrer" | "customer", external id)
Column = tuple[str, str]  # ("ip" | "device", value)


@dataclass(frozen=True, slots=True)
class Ring:
    kind: str  # "ring" (shared infrastructure), "dense_block", "referral_cycle"
    accounts: frozenset[Account]
    shared: frozenset[Column]
    score: float
    evidence: dict[str, object] = field(default_factory=dict)

    @property
    def members(self) -> list[dict[str, str]]:
        out = [{"type": t, "id": i} for t, i in sorted(self.accounts)]
        out += [{"type": t, "id": v} for t, v in sorted(self.shared)]
        return out


def bipartite(uses: dict[Account, set[Column]]) -> nx.Graph:
    # Sorted: node order steers Louvain, and set order changes with each process's hash seed.
    graph = nx.Graph()
    for account in sorted(uses):
        graph.add_node(account, bipartite=0)
        for column in sorted(uses[account]):
            graph.add_node(column, bipartite=1)
            graph.add_edge(account, column)
    return graph


# A group bound by addresses alone must live on them (see _address_concentration).
ADDRESS_CONCENTRATION = 0.8
SPLIT_MODULARITY = 0.4  # a component splits into communities only when they are this apart
ONE_COLLECTOR = 0.8  # a busy device or IP whose accounts one referrer collects for binds them


CHAIN_RECRUITERS = 2  # accounts brought in by the group that bring in others of it: a chain
HOLD_ACCOUNTS = 6  # a ring smaller than this is weak evidence
CHAIN_HOMES = 2  # addresses, each shared by some of a chain's accounts, that make it hold
CHAIN_HOLD = 4  # accounts a chain on CHAIN_HOMES addresses holds with
HOLD_PER_DEVICE = 4.0  # nor is a group with fewer accounts per device (people, not a farm)
WEAK_RING = 0.3


def _merge_by_collector(groups: list[set[Account]], referred_by: dict[str, set[str]]
                        ) -> list[set[Account]]:
    """Groups whose customers one referrer collects for (two or more in each) are one ring:
    a device farm's devices each bind a group, its referrer binds them together."""
    owner: dict[str, int] = {}
    parts = nx.utils.UnionFind(range(len(groups)))
    for i, group in enumerate(groups):
        counts: dict[str, int] = defaultdict(int)
        for _kind, person in group:
            for referrer in referred_by.get(person, ()):
                counts[referrer] += 1
        for referrer, n in counts.items():
            if n < 2:
                continue
            if referrer in owner:
                parts.union(i, owner[referrer])
            else:
                owner[referrer] = i
    merged: dict[int, set[Account]] = defaultdict(set)
    for i, group in enumerate(groups):
        merged[parts[i]] |= group
    return list(merged.values())


FARM_MAX = 400  # accounts on one device or IP a farm is looked for in (pairs grow as n^2)
GATEWAY_ACCOUNTS = 4  # an address this many accounts use may be a gateway (see _gateway)


def _gateway(holders: list[Account], referred_by: dict[str, set[str]]) -> bool:
    """An address or device that behaves like a NAT (a carrier, a public network): many
    accounts that different people outside the group referred. It binds nobody; a ring's
    accounts are collected by one operator or refer each other. (A group on as many
    devices as accounts, an office or a campus club, is still named as a ring, but weak:
    see HOLD_PER_DEVICE.)"""
    if len(holders) < GATEWAY_ACCOUNTS:
        return False
    inside = {person for _kind, person in holders}
    counts: dict[str, int] = defaultdict(int)
    for person in inside:
        for referrer in referred_by.get(person, ()):
            if referrer not in inside:
                counts[referrer] += 1
    outside = sum(counts.values())
    return len(counts) >= 3 and outside >= len(holders) / 2 and max(counts.values()) < (
        0.5 * len(holders))


def _one_collector(holders: list[Account], referred_by: dict[str, set[str]]) -> bool:
    """Most of a column's accounts were referred by one referrer: a device farm, not a
    gateway many unrelated people share."""
    counts: dict[str, int] = defaultdict(int)
    for _kind, person in holders:
        for referrer in referred_by.get(person, ()):
            counts[referrer] += 1
    return (GATEWAY_ACCOUNTS <= len(holders) <= FARM_MAX and bool(counts)
            and max(counts.values()) >= ONE_COLLECTOR * len(holders))


def shared_infrastructure(uses: dict[Account, set[Column]],
                          referrals: Iterable[tuple[str, str]] = (), *, max_share: int = 25,
                          min_accounts: int = 3, min_referrers: int = 1,
                          split_above: int = 20,
                          crowds: Collection[Column] = frozenset()) -> list[Ring]:
    """Groups of accounts that share rare IPs/devices: connected components, and a component
    larger than `split_above` accounts split into its communities (Louvain, weighted by the
    number of IPs/devices two accounts share), so one bridging account does not merge two
    rings into a blob.

    A referrer credited for two or more of a group's customers joins it: fake referees need
    not share anything with the referrer who collects for them. A group bound by addresses
    alone whose accounts mostly use other addresses as well is people behind one gateway, not
    a ring (ADDRESS_CONCENTRATION).
    """
    referrals = list(referrals)
    referred_by = _referred_by(referrals)
    graph = bipartite(uses)
    ties = _referral_ties(referrals)
    rare, homes = _binding(graph, ties, referred_by, max_share, crowds)
    projection = nx.Graph()
    for column in rare:
        holders = list(graph.neighbors(column))
        for i, a in enumerate(holders):
            for b in holders[i + 1:]:
                if projection.has_edge(a, b):
                    projection[a][b]["shared"].add(column)
                else:
                    projection.add_edge(a, b, shared={column})
    for _a, _b, d in projection.edges(data=True):
        d["weight"] = len(d["shared"])
    groups: list[set[Account]] = []
    for component in nx.connected_components(projection):
        if len(component) <= split_above:
            groups.append(component)
            continue
        sub = projection.subgraph(component)
        communities = nx.community.louvain_communities(sub, weight="weight", seed=0)
        # A dense group stays one ring: split only where the parts are loosely bound (two
        # rings bridged by an account), not a clique that community detection cuts anyway.
        if len(communities) < 2 or nx.community.modularity(
                sub, communities, weight="weight") < SPLIT_MODULARITY:
            groups.append(component)
            continue
        for community in communities:
            groups.append(set(community))
    groups = _merge_by_collector(groups, referred_by)
    rings = []
    for group, links in _merge_by_chain(groups, referrals):
        component = group  # (narrowed below)
        collectors = Counter(r for _kind, person in component
                             for r in referred_by.get(person, ()))
        accounts = frozenset(component) | {("referrer", r) for r, n in collectors.items()
                                           if n >= 2 and ("customer", r) not in component}
        accounts |= links
        component, accounts = _without_strangers(component, accounts, projection, referred_by)
        if len(component) < 2 or len(accounts) < min_accounts or sum(
                1 for a in accounts if a[0] == "referrer") < min_referrers:
            continue
        shared = frozenset(c for a, b, d in projection.subgraph(component).edges(data=True)
                           for c in d["shared"])
        chained = _chained(accounts, referred_by)
        concentration = _address_concentration(component, shared, uses)
        if concentration < ADDRESS_CONCENTRATION:
            # People behind one gateway who also live elsewhere; unless they sign each other
            # up in a chain: strangers on a carrier's address do not, and a ring whose
            # accounts also buy from their phones does (their other addresses are no alibi).
            # Then the ring is the chain: a stranger who shares one of those phones'
            # addresses with one of its accounts, and no referral, is not of it.
            trimmed = _chain_only(accounts, component, projection, referred_by, len(chained))
            if trimmed is None:
                continue
            accounts, component, shared = trimmed
        density = _density(projection, component)
        score = min(1.0, 0.5 + 0.1 * len(accounts) * density)
        devices = {c for a in component for c in uses.get(a, set()) if c[0] == "device"}
        per_device = len(component) / max(len(devices), 1)
        device_bound = _device_bound(component, uses, bool(devices) and (
            per_device >= HOLD_PER_DEVICE and concentration == 1.0), collectors)
        # Accounts recruiting each other and living on the group's addresses; or on several
        # of them, each shared by some of the chain: weak ties that repeat along it over time
        # (a family that signs each other up lives at one; a ring's accounts at a few, and on
        # their phones besides).
        recruiting, hold = _chain_holds(len(chained), concentration, shared)
        if len(accounts) < hold or not (device_bound or recruiting):
            # A few accounts, or one referrer's people each on a device of their own: a
            # household, an office; named, but weak evidence (fraud.assess reads the score).
            score = WEAK_RING
        # The chain's ends its binding misses: tied to it by a referral and by a home or a
        # phone one of its other accounts uses (a crowded address binds no group by itself).
        # Named in the review flag only (fraud.operators): a crowded address is no evidence
        # to hold anyone's reward on.
        ends = _tied_ends(accounts, graph, ties, len(chained))
        # Browsers bind like devices but are no flag member (an IP or a device fingerprint is).
        rings.append(Ring("ring", accounts, frozenset(c for c in shared if c[0] in SHOWN),
                          round(score, 4), {
            "accounts_per_device": round(per_device, 2), "recruiting": recruiting,
            "chain_links": len(links), "chain_ends": [list(a) for a in sorted(ends)],
            "accounts": len(accounts), "shared_ips": sum(1 for c in shared if c[0] == "ip"),
            "shared_devices": sum(1 for c in shared if c[0] == "device"),
            "density": round(density, 4), "address_concentration": round(concentration, 4)}))
    # A crowded address binds as a chain's home only a chain that holds (_chain_homes): a weak
    # group on one is the crowd it looked like, and no finding (nor one to hide a stronger).
    return [r for r in rings if r.score > WEAK_RING or not r.shared & homes]


def _referred_by(referrals: Iterable[tuple[str, str]]) -> dict[str, set[str]]:
    """Who referred each customer (self-referrals included)."""
    out: dict[str, set[str]] = defaultdict(set)
    for referrer, customer in referrals:
        out[customer].add(referrer)
    return out


def _chain_holds(chained: int, concentration: float, shared: Collection[Column]
                 ) -> tuple[bool, int]:
    """Whether a group's accounts recruit each other on its addresses (CHAIN_RECRUITERS,
    living on them; or on CHAIN_HOMES of them), and the accounts it holds with."""
    addresses = sum(1 for c in shared if c[0] == "ip")
    recruiting = chained >= CHAIN_RECRUITERS and (
        concentration >= 0.95 or addresses >= CHAIN_HOMES)
    return recruiting, CHAIN_HOLD if recruiting and addresses >= CHAIN_HOMES else HOLD_ACCOUNTS


def _tied_ends(accounts: frozenset[Account], graph: nx.Graph, ties: _Ties, chained: int
               ) -> set[Account]:
    """The accounts one referral away from a recruiting chain's (`accounts`, with `chained`
    recruiters, CHAIN_RECRUITERS at least; none for any other group) that also use an
    address or a device (used by at most HOME_ACCOUNTS accounts) with one of its accounts
    other than those they are referral-tied to: two independent ties, a sign-up and a place.
    A chain's last sign-up on a crowded address its binding left out (an address that looks
    like a NAT binds no group by itself) is one; a member's genuine friend, tied by the
    referral alone (on an address and a phone of its own, or at home with the member who
    referred it), is not. Linear in the referrals and columns of the chain's neighbours."""
    if chained < CHAIN_RECRUITERS:
        return set()
    people = {p for _kind, p in accounts}
    out: set[Account] = set()
    for person in sorted({q for p in people for q in ties.around.get(p, ())} - people):
        others = people - ties.around[person]
        for node in (("referrer", person), ("customer", person)):
            if node not in graph:
                continue
            if any(column[0] in SHOWN and graph.degree(column) <= HOME_ACCOUNTS
                   and any(q in others for _kind, q in graph.neighbors(column))
                   for column in graph.neighbors(node)):
                out.add(("referrer" if person in ties.referrers else "customer", person))
    return out


def _density(projection: nx.Graph, component: set[Account]) -> float:
    n = len(component)
    return 2 * projection.subgraph(component).number_of_edges() / (n * (n - 1)) if n > 1 else 0.0


def _without_strangers(component: set[Account], accounts: frozenset[Account],
                       projection: nx.Graph, referred_by: Mapping[str, set[str]]
                       ) -> tuple[set[Account], frozenset[Account]]:
    """The group without its browser strangers (_browser_strangers)."""
    strangers = _browser_strangers(component, accounts, projection, referred_by)
    return component - strangers, accounts - strangers


def _browser_strangers(component: set[Account], accounts: frozenset[Account],
                       projection: nx.Graph, referred_by: Mapping[str, set[str]]
                       ) -> set[Account]:
    """The accounts of a group that share nothing with it but a rare browser (an exact
    User-Agent few of the program's customers use: with_rare_browsers) and have no referral
    tie to its people: a stranger on the same odd phone model, not one of the operator's. (An
    account the operator made on his phone was made for a link: the referrer that collects
    it is of the group.)"""
    people = {p for _kind, p in accounts}
    recruiters = {r for q in people for r in referred_by.get(q, ())}
    out = set()
    for account in component:
        if account[1] in recruiters or referred_by.get(account[1], set()) & people:
            continue
        if all(c[0] == "agent" for other in projection.neighbors(account) if other in component
               for c in projection[account][other]["shared"]):
            out.add(account)
    return out


def _device_bound(component: set[Account], uses: dict[Account, set[Column]], few: bool,
                  collectors: Mapping[str, int]) -> bool:
    """A device farm: few devices (`few`), most of the group's customers one referrer's (many
    people of different referrers on one fingerprint are a phone model behind a NAT), living
    on the group's addresses."""
    customers = [p for kind, p in component if kind == "customer"]
    top = max(collectors.values(), default=0)
    return (few and top >= ONE_COLLECTOR * len(customers)
            and living_on([{v for k, v in uses.get(a, set()) if k == "ip"}
                           for a in component]) >= ADDRESS_CONCENTRATION)


def _chain_only(accounts: frozenset[Account], component: set[Account], projection: nx.Graph,
                referred_by: Mapping[str, set[str]], chained: int
                ) -> tuple[frozenset[Account], set[Account], frozenset[Column]] | None:
    """A group that fails ADDRESS_CONCENTRATION but whose accounts sign each other up in a
    chain (`chained` recruiters, CHAIN_RECRUITERS at least): its accounts tied to another of
    them by a referral, those of them infrastructure binds, and what binds those; None when
    it is no chain."""
    if chained < CHAIN_RECRUITERS:
        return None
    people = {p for _kind, p in accounts}
    tied = {p for p in people for r in referred_by.get(p, ()) if r in people and r != p}
    tied |= {r for p in tied for r in referred_by.get(p, ()) if r in people}
    kept = frozenset(a for a in accounts if a[1] in tied)
    bound = {a for a in component if a in kept}
    if len(bound) < 2:
        return None
    shared = frozenset(c for _a, _b, d in projection.subgraph(bound).edges(data=True)
                       for c in d["shared"])
    return kept, bound, shared


def _chained(accounts: Collection[Account], referred_by: Mapping[str, set[str]]) -> set[str]:
    """A chain: accounts the group brought in who bring in others of the group. A club's
    organiser who refers the members met on a campus network is one recruiter, and two such
    groups bridged by a carrier address are still not a ring."""
    people = {person for _kind, person in accounts}
    recruiters = {r for person in people for r in referred_by.get(person, ()) if r in people}
    return {r for r in recruiters if referred_by.get(r, set()) & people}


def _binding(graph: nx.Graph, ties: _Ties,
             referred_by: dict[str, set[str]], max_share: int, crowds: Collection[Column]
             ) -> tuple[list[Column], set[Column]]:
    """The IPs and devices that bind their accounts: used by two or more, not a crowd (a NAT)
    unless a referral chain's home (_chain_homes), and either one collector's or used by at
    most `max_share` accounts and no gateway; and those homes."""
    homes = _chain_homes({c: [p for _kind, p in graph.neighbors(c)] for c in crowds
                          if c in graph}, ties, _small_addresses(graph))
    return [n for n, d in graph.nodes(data=True)
            if d.get("bipartite") == 1 and graph.degree(n) >= 2
            and (n not in crowds or n in homes)
            and (_one_collector(list(graph.neighbors(n)), referred_by)
                 or (graph.degree(n) <= max_share
                     and not _gateway(list(graph.neighbors(n)), referred_by)))], homes


CHAIN_TIES = 2  # referral ties to a group's people that make an account a link of its chain


def _merge_by_chain(groups: list[set[Account]], referrals: Iterable[tuple[str, str]]
                    ) -> list[tuple[set[Account], set[Account]]]:
    """Groups of one referral chain are one ring, with the chain's links that share nothing:
    (the accounts infrastructure binds, the links) per ring.

    A ring that changes addresses and devices for some accounts still signs each one up
    through an earlier one's link and buys through the others'. An account outside every
    group with CHAIN_TIES referral ties (either way) to one group's people, or signed up by
    one group's people and signing up another's, is a link of their chain: it joins, and
    the groups it links become one. Two groups with CHAIN_TIES
    referrals between their people are one too. One tie is not enough: fraudsters have
    genuine friends, referred by one of them and referring nobody of the ring, and two
    households one referral apart are two households. Nor is one tie to each of many groups:
    a popular referrer whose friends live in households of their own binds none of them.
    The ring's evidence (what binds it, how concentrated it is) stays that of the accounts
    infrastructure binds."""
    both = _referral_ties(referrals)
    ties, referrers = both.around, both.referrers  # who referred whom, either way
    sources: dict[str, set[str]] = defaultdict(set)  # who referred each
    for referrer, customer in referrals:
        if referrer != customer:
            sources[customer].add(referrer)
    owner: dict[str, int] = {}
    for i, group in enumerate(groups):
        for _kind, person in group:
            owner.setdefault(person, i)
    parts = nx.utils.UnionFind(range(len(groups)))

    between: dict[tuple[int, int], set[frozenset[str]]] = defaultdict(set)
    links: dict[str, list[int]] = {}
    for person in sorted({p for q in owner for p in ties.get(q, ())}):
        mine = owner.get(person)
        tied = [owner[q] for q in sorted(ties.get(person, ())) if q in owner]
        if mine is None:
            # CHAIN_TIES ties into one group, or a chain passing through: signed up by one
            # group's people and signing up another's. A referrer whose friends each live in
            # a household of their own only refers them, and binds none of them together.
            came_from = {owner[r] for r in sources.get(person, ()) if r in owner}
            brought = {owner[c] for c in ties[person] - sources.get(person, set()) if c in owner}
            chained = {g for g, n in Counter(tied).items() if n >= CHAIN_TIES}
            if came_from and brought - came_from:
                chained |= came_from | brought
            if chained:
                links[person] = sorted(chained)
            continue
        for other, q in zip(tied, (q for q in sorted(ties.get(person, ())) if q in owner),
                            strict=True):
            if other != mine:
                between[(min(mine, other), max(mine, other))].add(frozenset((person, q)))
    for (a, b), pairs in between.items():
        if len(pairs) >= CHAIN_TIES:
            parts.union(a, b)
    for tied in links.values():
        for other in tied[1:]:
            parts.union(other, tied[0])
    core: dict[int, set[Account]] = defaultdict(set)
    joined: dict[int, set[Account]] = defaultdict(set)
    for i, group in enumerate(groups):
        core[parts[i]] |= group
    for person, tied in links.items():
        joined[parts[tied[0]]].add(("referrer" if person in referrers else "customer", person))
    for root, group in core.items():
        # The rest of the chain: links tied to it through each other (chain_links).
        grown = chain_links({p for _kind, p in group | joined[root]}, both)
        joined[root] |= {("referrer" if p in referrers else "customer", p) for p in grown}
    return [(core[root], joined[root]) for root in core]


CHAIN_REACH = 2  # referral steps from a group within which its chain's links are looked for


@dataclass(frozen=True, slots=True)
class _Ties:
    """Who referred whom, either way (distinct pairs, self-referrals left out), and who refers."""

    around: dict[str, set[str]]
    referrers: set[str]


def _referral_ties(referrals: Iterable[tuple[str, str]]) -> _Ties:
    around: dict[str, set[str]] = defaultdict(set)
    referrers: set[str] = set()
    for referrer, customer in referrals:
        referrers.add(referrer)
        if referrer != customer:
            around[referrer].add(customer)
            around[customer].add(referrer)
    return _Ties(dict(around), referrers)


def chain_links(people: set[str], ties: _Ties) -> set[str]:
    """The links of the referral chain around `people` (a group shared infrastructure binds)
    that share nothing with it: accounts within CHAIN_REACH referral steps of the group with
    CHAIN_TIES referral ties or more to the chain (the group and the other links) and more
    ties inside it than outside.

    A ring that puts some accounts on addresses and devices of their own still signs each
    one up through an earlier one's link and buys through the others': each of its accounts
    is tied to two of the chain, and little else. A fraudster's genuine friend has one tie
    (referred by him, referring nobody of the chain), and a popular referrer's or a busy
    customer's ties are mostly outside: neither is a link. Two outside accounts tied to the
    group once each and to each other (a chain's branch passing through addresses of its
    own) are links together. Peeled: accounts failing either test leave, and the others are
    tested again without them. Linear in the ties the group's neighbourhood holds; an account
    with more ties than twice the group is not looked through (most of its ties could not be
    the chain's)."""
    around = ties.around
    reach: set[str] = set()
    frontier = set(people)
    for _ in range(CHAIN_REACH):
        step: set[str] = set()
        for person in frontier:
            mine = around.get(person, set())
            if person not in people and len(mine) > 2 * len(people):
                continue
            step |= mine
        step -= people | reach
        reach |= step
        frontier = step
    chain = people | reach
    inside = {p: len(around[p] & chain) for p in reach}

    def weak(person: str) -> bool:
        return inside[person] < CHAIN_TIES or 2 * inside[person] <= len(around[person])

    queue = sorted(p for p in reach if weak(p))
    while queue:
        person = queue.pop()
        if person not in chain:
            continue
        chain.discard(person)
        for other in around[person] & chain:  # the smaller side: a hub's ties are not walked
            if other in inside:
                inside[other] -= 1
                if weak(other):
                    queue.append(other)
    return chain - people


HOME_ACCOUNTS = 6  # a household's people, at most: an address with more is no one's home


def _small_addresses(graph: nx.Graph) -> dict[Column, set[str]]:
    """The IPs two to HOME_ACCOUNTS accounts use (a home's, not a carrier's), with their people."""
    return {node: {person for _kind, person in graph.neighbors(node)}
            for node, data in graph.nodes(data=True)
            if data.get("bipartite") == 1 and node[0] == "ip"
            and 2 <= graph.degree(node) <= HOME_ACCOUNTS}


def _chain_homes(crowds: Mapping[Column, list[str]], ties: _Ties,
                 small: Mapping[Column, set[str]]) -> set[Column]:
    """The addresses among `crowds` (those that behave like a NAT: each account on a browser of
    its own, as a random crowd's would be; with their accounts) that are one referral chain's
    home: at most HOME_ACCOUNTS accounts, every one of them tied to the others by referrals
    through accounts that live elsewhere (the chain's links: chain_links). A carrier's or a
    campus's strangers do not sign each other up; people who do are not a random crowd,
    whatever phones they carry, and their address binds them as any home's does. A family
    that signs each other up at home, and no one elsewhere, is left a crowd: it is a
    household, and this says nothing more of it."""
    out: set[Column] = set()
    homes_of: dict[str, set[Column]] = defaultdict(set)
    for home, holders in small.items():
        for person in holders:
            homes_of[person].add(home)
    for column, people in crowds.items():
        if column[0] != "ip" or not 2 <= len(people) <= HOME_ACCOUNTS:
            continue
        # Who signed up two of them or more (a founder, with friends of his own elsewhere
        # whose ties would make him no link) is the chain's too.
        signed = Counter(q for p in people for q in ties.around.get(p, ()))
        anchors = {q for q, n in signed.items() if n >= CHAIN_TIES and q not in people}
        links = chain_links(set(people), ties)
        if anchors:
            links |= chain_links(set(people) | anchors, ties)
        if not links:
            continue
        chain = set(people) | anchors | links
        # Tied by referrals through the chain, or through another home some of them share
        # with an account the chain's referrals reach (a ring's branches meet at its other
        # addresses as well as through its founder, whose own friends keep it no link).
        near_chain = chain | {q for p in chain for q in ties.around.get(p, set())}
        seen, todo = {people[0]}, [people[0]]
        while todo:
            person = todo.pop()
            near = ties.around.get(person, set()) & chain
            for home in homes_of.get(person, set()) - {column}:
                near |= small[home] & near_chain
            for other in near - seen:
                seen.add(other)
                todo.append(other)
        if set(people) <= seen:
            out.add(column)
    return out


def _address_concentration(component: set[Account], shared: frozenset[Column],
                           uses: dict[Account, set[Column]]) -> float:
    """For a group bound mostly by addresses: the mean share of each account's addresses
    that are the group's. Fake accounts live on the ring's few IPs; people who merely pass
    through one gateway (a mobile carrier's NAT, a café) have other addresses too.

    1.0 when shared devices bind at least half the group: that is evidence enough. A device
    shared by a few of them only may be a header fingerprint collision (the same phone model
    behind the same network), which says nothing more than the address."""
    devices = {c for c in shared if c[0] in ("device", "agent")}
    on_devices = sum(1 for account in component if uses.get(account, set()) & devices)
    if devices and 2 * on_devices >= len(component):
        return 1.0
    shares = []
    for account in component:
        ips = {c for c in uses.get(account, set()) if c[0] == "ip"}
        if ips:
            shares.append(len(ips & shared) / len(ips))
    return sum(shares) / len(shares) if shares else 1.0


def dense_blocks(uses: dict[Account, set[Column]], *, blocks: int = 5,
                 min_accounts: int = 3, min_score: float = 1.0) -> list[Ring]:
    """FRAUDAR blocks of accounts x columns (camouflage-resistant)."""
    # Most programs' graphs have no block that could score min_score (fraud.dense.may_reach):
    # asked first on the edges in any order, which spares sorting every account and column.
    seen: dict[Column, int] = {}
    loose = [(i, seen.setdefault(c, len(seen))) for i, cols in enumerate(uses.values())
             for c in cols]
    if not may_reach(loose, len(uses), len(seen), min_score):
        return []
    accounts = sorted(uses)
    columns = sorted({c for cols in uses.values() for c in cols})
    a_index = {a: i for i, a in enumerate(accounts)}
    c_index = {c: i for i, c in enumerate(columns)}
    edges = [(a_index[a], c_index[c]) for a, cols in uses.items() for c in cols]
    found = Fraudar(blocks=blocks, min_rows=min_accounts, min_score=min_score).fit(
        edges, len(accounts), len(columns))
    rings = []
    for block in found.blocks_:
        if block.score < min_score:
            continue
        members = frozenset(accounts[i] for i in block.rows)
        shared = frozenset(columns[j] for j in block.cols)
        rings.append(Ring("dense_block", members, shared, round(min(1.0, block.score / 4), 4),
                          {"fraudar_score": round(block.score, 4), "edges": block.edges,
                           "accounts": len(members), "columns": len(shared)}))
    return rings


def referral_cycles(referrals: Iterable[tuple[str, str]], max_length: int = 6) -> list[Ring]:
    """Cycles in who-referred-whom (referrer external id -> referred customer id)."""
    referrals = [(a, b) for a, b in referrals if a != b]
    if not _may_cycle(referrals):
        return []
    graph = nx.DiGraph()
    graph.add_edges_from(referrals)
    rings = []
    seen: set[frozenset[str]] = set()
    for cycle in nx.simple_cycles(graph, length_bound=max_length):
        members = frozenset(cycle)
        if members in seen:
            continue
        seen.add(members)
        rings.append(Ring("referral_cycle", frozenset(("referrer", m) for m in members),
                          frozenset(), 0.9, {"cycle": cycle, "length": len(cycle)}))
    return rings


TRIM_ROUNDS = 3  # _may_cycle's passes before it lets the cycle search decide


def _may_cycle(edges: list[tuple[str, str]]) -> bool:
    """False when these edges hold no cycle, as a few passes find: a cycle's every person both
    refers someone and was referred on it, so a referral whose referrer nobody referred, or
    whose customer refers nobody, is on none. Most programs' referrers are nobody's customers:
    the first pass leaves nothing, where building the graph for the search would cost seconds
    on a million clicks. True: there may be one (the search decides)."""
    for _ in range(TRIM_ROUNDS):
        if not edges:
            return False
        referred = {b for _a, b in edges}
        referring = {a for a, _b in edges}
        kept = [(a, b) for a, b in edges if a in referred and b in referring]
        if len(kept) == len(edges):
            return True
        edges = kept
    return bool(edges)


def find_rings(uses: dict[Account, set[Column]], referrals: Iterable[tuple[str, str]] = (),
               *, max_share: int = 25, agents: Mapping[str, Collection[str]] | None = None,
               browsers_on: Mapping[str, Collection[str]] | None = None) -> list[Ring]:
    """Every ring kind; dense blocks that repeat a component ring are dropped. `agents`: the
    browsers (User-Agents) each customer was seen with, for device farms; `browsers_on`: those
    seen on each IP, for the addresses that behave like a NAT (crowded_columns)."""
    referrals = list(referrals)
    crowds = crowded_columns(uses, browsers_on or {}, agents or {})
    rings = shared_infrastructure(with_rare_browsers(uses, agents or {}), referrals,
                                  max_share=max_share, crowds=crowds)
    known = {r.accounts for r in rings}
    uncrowded = {a: cols - crowds for a, cols in uses.items()} if crowds else uses
    rings += [r for r in dense_blocks(uncrowded) if r.accounts not in known]
    rings += referral_cycles(referrals)
    if agents:
        known = {r.accounts for r in rings}
        rings += [r for r in device_farms(referrals, agents) if r.accounts not in known]
    return rings


SHOWN = ("ip", "device")  # what binds a ring and is named among its members
RARE_BROWSER = 0.01  # a browser at most this share of the program's customers use


def with_rare_browsers(uses: dict[Account, set[Column]], agents: Mapping[str, Collection[str]]
                       ) -> dict[Account, set[Column]]:
    """The accounts' IPs and devices, and the browsers (exact User-Agents) each customer was
    seen with where few of the program's customers use them (RARE_BROWSER): a ring that
    changes addresses for every account still shares its few odd phones. A popular browser
    binds nobody."""
    users: dict[str, int] = defaultdict(int)
    for browsers in agents.values():
        for browser in set(browsers):
            users[browser] += 1
    total = sum(1 for browsers in agents.values() if browsers)
    rare = {b for b, n in users.items() if n >= 2 and n <= RARE_BROWSER * total}
    if not rare:
        return uses
    out = {account: set(columns) for account, columns in uses.items()}
    for customer, browsers in agents.items():
        mine = {("agent", b) for b in browsers if b in rare}
        if not mine:
            continue
        account = (("referrer", customer) if ("referrer", customer) in out
                   else ("customer", customer))
        out.setdefault(account, set()).update(mine)
    return out


FARM_DEVICES = 6  # a device farm's browsers are looked for among a referrer's top few
FARM_MIN_REFEREES = 8  # referees on those browsers, at least, to be a farm
FARM_SHARE = 0.8  # of the referrer's referees (with a known browser) on them
# ... and as many on each of those browsers, on average: a farm's phone carries several
# accounts; a club's or an office's people on the program's popular browsers, one or two each
# (and among many browsers a few hold two by chance).
FARM_PER_DEVICE = 2.5


def device_farms(referrals: Iterable[tuple[str, str]], agents: Mapping[str, Collection[str]],
                 q: float = FDR_Q) -> list[Ring]:
    """One referrer whose referees are nearly all on a few browsers, far more than the
    program's customers use them: a few phones making accounts for one link, even where each
    account comes from another carrier address (no address binds them).

    For each referrer, the binomial tail of its referees on its top 1..FARM_DEVICES browsers
    against the program's share of customers on those browsers (Bonferroni over the choices),
    controlled across referrers with Benjamini-Hochberg. A found farm is named as a ring: its
    referrer and the referees on those browsers. Its weight on each conversion stays that of
    a weak ring (the browser of a popular phone model is not an identity); the conversions'
    own evidence decides them."""
    customers_of: dict[str, set[str]] = defaultdict(set)
    for referrer, customer in referrals:
        if referrer != customer:
            customers_of[referrer].add(customer)
    seen = {c: set(a) for c, a in agents.items() if a}
    total = len(seen)
    if not total:
        return []
    users: dict[str, int] = defaultdict(int)
    for used in seen.values():
        for browser in used:
            users[browser] += 1
    tests: dict[str, float] = {}
    found: dict[str, tuple[set[str], list[str]]] = {}
    for referrer, customers in customers_of.items():
        known = [c for c in customers if c in seen]
        if len(known) < FARM_MIN_REFEREES:
            continue
        counts: dict[str, int] = defaultdict(int)
        for c in known:
            for browser in seen[c]:
                counts[browser] += 1
        # A farm's device carries several accounts: browsers of one referee are people's.
        top = [b for b in sorted(counts, key=lambda b: (-counts[b], b)) if counts[b] >= 2]
        top = top[:FARM_DEVICES]
        best_p: float = 1.0
        best: tuple[set[str], list[str]] = (set(), [])
        for k in range(1, len(top) + 1):
            browsers = top[:k]
            on = {c for c in known if seen[c] & set(browsers)}
            share = min(sum(users[b] for b in browsers) / total, 1.0)
            if (len(on) < FARM_MIN_REFEREES or len(on) < FARM_SHARE * len(known)
                    or len(on) < FARM_PER_DEVICE * k):
                continue
            # Bonferroni over which k of the referrer's browsers were picked.
            picks = math.comb(len(counts), k)
            p = min(1.0, picks * float(stats.binom.sf(len(on) - 1, len(known), share)))
            if p < best_p:
                best_p, best = p, (on, browsers)
        if best[0]:
            tests[referrer] = best_p
            found[referrer] = best
    rings = []
    for referrer in sorted(benjamini_hochberg(tests, q)):
        on, browsers = found[referrer]
        accounts = frozenset({("referrer", referrer)} | {("customer", c) for c in on})
        rings.append(Ring("ring", accounts, frozenset(), WEAK_RING, {
            "device_farm": True, "accounts": len(accounts), "browsers": len(browsers),
            "p_value": float(f"{tests[referrer]:.3g}")}))
    return rings


def columns_by_account(rows: Iterable[tuple[Account, str | None, str | None]]
                       ) -> dict[Account, set[Column]]:
    """(account, ip, device) facts into the bipartite map."""
    out: dict[Account, set[Column]] = defaultdict(set)
    for account, ip, device in rows:
        if ip:
            out[account].add(("ip", ip))
        if device:
            out[account].add(("device", device))
    return dict(out)


def neighbourhood(center: str, uses: dict[Account, set[Column]],
                  referrals: Iterable[tuple[str, str]], *, max_nodes: int = 60
                  ) -> dict[str, list[dict[str, str]]]:
    """The graph around one referrer, for people to look at: accounts, the IPs and devices
    that bind them (used by two accounts or more, or by the referrer), and who referred whom.

    At most `max_nodes` nodes: the referrer first, then the accounts and columns nearest to it.
    """
    graph = bipartite(uses)
    for referrer, customer in referrals:
        a, b = ("referrer", referrer), _account(graph, customer)
        if a != b:
            graph.add_edge(a, b, kind="referred", by=a)
    me = ("referrer", center)
    if me not in graph:
        graph.add_node(me)
    keep = [n for n in graph if graph.nodes[n].get("bipartite") != 1
            or graph.degree(n) >= 2 or graph.has_edge(me, n)]
    view = graph.subgraph(keep)
    order = [me] + [n for n in nx.bfs_tree(view, me) if n != me]
    order += sorted((n for n in view if n not in set(order)), key=str)
    chosen = set(order[:max_nodes])
    nodes = [{"id": f"{t}:{v}", "type": t, "label": v} for t, v in order[:max_nodes]]
    edges = []
    for u, v, d in view.subgraph(chosen).edges(data=True):
        src, dst = (v, u) if d.get("by") == v else (u, v)
        edges.append({"source": f"{src[0]}:{src[1]}", "target": f"{dst[0]}:{dst[1]}",
                      "kind": d.get("kind", "uses")})
    return {"nodes": nodes, "edges": edges}


def _account(graph: nx.Graph, person: str) -> Account:
    return ("referrer", person) if ("referrer", person) in graph else ("customer", person)
