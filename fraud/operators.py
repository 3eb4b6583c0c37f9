"""One operator's accounts as one flag: the rings, pools and cells that name parts of one group,
merged, with the group's referrers and their referees.

Each detector sees the operator from one side: a collusion pool (fraud.pools) the accounts
behind his browsers or mailboxes, a sleeper cell (fraud.sleepers) the referrers he woke
together, a ring (fraud.rings) the accounts on his addresses and devices. The same group then
comes back as several flags, each with part of its members, and a pool's flag names its
customers but not the referrers they were made for. For review the group is one thing: the
referrers the operator made accounts for, and those referrers' referees.

So, for the review flags only (the decisions stay those of the parts, which `parts` gives back):

1. the decisive groups (a pool, a cell, a ring or block held on its own: score at least
   DECISIVE; a weak ring, a household or an office, is no operator's) that share two accounts
   are one;
2. a group with a pool or a cell (GROWN) is widened: its referrers are the ones named and the
   ones credited with its pool's customers' first referred conversions (a made account was
   made for the referrer it was credited to);
3. a referrer more of whose referees are tied to the group's referees than chance gives joins
   (`_tied_referrers`): tied by one of their own ties (a browser cookie, a fingerprint, a
   mailbox, a home connection: `fraud.pools` keys, each used by at most PUBLIC_ACCOUNTS
   accounts), against the chance that a referee's tie with another referrer's referee lands
   on the group; or on the operator's own browsers (those far more of the group's referees
   came on than the program's), against their share of the program. An operator who rotates
   proxies and clears cookies still goes home now and then, reuses his personas' mailboxes,
   and keeps his few phones. One shared home between two people referred by two friends is a
   household, and two of a large referrer's forty referees living with the group's accounts
   are what chance gives too: neither is a tie;
4. the widened group's members are its accounts, its referrers and their referees (first
   referred conversion credited to one of them): a referrer that lends its link to an operator
   is credited with his accounts, whichever browser and proxy each came from, so all its
   referees join. (A referrer only a sleeper cell names keeps the referees the cell named: its
   quick buyers.) The group's own accounts that refer (a ring's colluding members, whom a pool
   found too) have friends of their own: only their referees tied to the group (a shared tie,
   the group's own phones) join. (A real friend of a lent link is still named with it here,
   for review; the decisions are the parts', and a friend with no tie to the operator is not
   held on the referrer's reputation alone.)
5. a referrer outside the group every one of whose referees is in it joins (`_recruiters`):
   the link that brought a ring's first account, used for nothing else.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Mapping, Sequence

import networkx as nx
from scipy import stats

from fraud.assess import DECISIVE, ring_flag_reasons
from fraud.pools import PUBLIC_ACCOUNTS, Browser, Key, _browser, _upper, account_keys
from fraud.rings import Account, Ring
from fraud.signals import ConversionFacts, first_referred

OPERATOR_KINDS = ("collusion_pool", "sleeper_cell", "ring", "dense_block", "referral_cycle")
# The parts that name an operator's accounts made for referrers' links (a ring's shared
# infrastructure may be a collector's farm whose referrer has genuine friends too: its flag names
# the accounts the infrastructure binds).
GROWN = ("collusion_pool", "sleeper_cell")
TIE_P = 0.05  # a referrer's referees tied to the group beyond chance: family-wise level
MERGE_SHARED = 2  # accounts two decisive findings share, at least, to be one operator's
TIED_REFEREES = 2  # a referrer's referees tied to a group, at least, for it to join


def _first_referrers(conversions: Sequence[ConversionFacts]
                     ) -> tuple[dict[str, str], dict[str, Browser]]:
    """Each customer's referrer (`first_referred`); and the browser that conversion's click
    came on."""
    first = first_referred(conversions)
    browsers = {c: b for c, (_r, conv) in first.items() if (b := _browser(conv)) is not None}
    return {c: r for c, (r, _conv) in first.items()}, browsers


def operator_groups(rings: Sequence[Ring], conversions: Sequence[ConversionFacts],
                    keys: Mapping[str, set[Key]] | None = None) -> list[Ring]:
    """The rings as review flags: decisive parts of one operator's group merged and widened
    (see the module's docstring); the other rings as they are. A merged group keeps the kind of
    its largest part, the highest score, and its parts in `evidence["parts"]` (`parts`).
    `keys`: the conversions' `fraud.pools.account_keys`, when the caller has them already."""
    decisive = [r for r in rings if r.kind in OPERATOR_KINDS and r.score >= DECISIVE]
    if not decisive:
        return [_with_ends(r) for r in rings]
    union = nx.utils.UnionFind(range(len(decisive)))
    for a, b in _sharing(decisive):
        union.union(a, b)
    merged: dict[int, list[Ring]] = defaultdict(list)
    for i, ring in enumerate(decisive):
        merged[union[i]].append(ring)
    first, browsers = _first_referrers(conversions)
    referees: dict[str, set[str]] = defaultdict(set)
    for customer, referrer in first.items():
        referees[referrer].add(customer)
    ties: Mapping[str, set[Key]] = {}
    if any(ring.kind in GROWN for ring in decisive):
        ties = account_keys(conversions) if keys is None else keys
    out = [_with_ends(r) for r in rings
           if not (r.kind in OPERATOR_KINDS and r.score >= DECISIVE)]
    tie = _Ties(ties, first, browsers, {p for ring in decisive for _kind, p in ring.accounts})
    for parts in merged.values():
        members = {a for ring in parts for a in ring.accounts}
        referrers = {p for kind, p in members if kind == "referrer"}
        joined: set[str] = set()
        if any(ring.kind in GROWN for ring in parts):
            # A pool's accounts were made for the referrers they were credited to (a cell's
            # customers are its referrers' referees already).
            credited = {first[p] for ring in parts if ring.kind == "collusion_pool"
                        for kind, p in ring.accounts if kind == "customer" and p in first}
            referrers |= credited
            joined = _tied_referrers(referrers, referees, tie)
            referrers |= joined
            # A cell's referrers keep the referees it named, its quick buyers (a referrer a
            # mailing woke in the same hours has friends who take their time).
            cells = {p for ring in parts if ring.kind == "sleeper_cell"
                     for kind, p in ring.accounts if kind == "referrer"}
            # The group's own accounts that refer (a ring's colluding members, a pool's
            # account that recruits) have friends of their own: only those tied to the group
            # are its. A link lent to the operator is credited with his accounts whichever
            # browser and proxy each came from: all its referees.
            core = {p for _kind, p in members}
            own = {p for ring in parts if ring.kind not in GROWN for _kind, p in ring.accounts}
            own |= {p for ring in parts for kind, p in ring.accounts if kind == "customer"}
            marks, phones = tie.marks(core), tie.operator_browsers(core)
            # A chain's root (`_roots`) brought one account, who brought the others: its other
            # referees are its own friends unless tied, as a colluding member's are.
            roots = _roots(referrers - own, core, referees)
            members |= ({("referrer", r) for r in referrers}
                        | {("customer", c) for r in referrers - own - roots - (cells - credited)
                           for c in referees.get(r, ())}
                        | {("customer", c) for r in (referrers & own) | roots
                           for c in referees.get(r, ())
                           if c in core or tie.keys.get(c, set()) & marks
                           or tie.browsers.get(c) in phones})
        # A recruiting chain's ends are named here only (its parts' decisions leave them).
        members |= {a for ring in parts for a in chain_ends(ring)}
        inside = {p for _kind, p in members}
        outside = {first[p] for p in inside if p in first and first[p] not in inside}
        members = _one_role(members | {("referrer", r) for r in _recruiters(members, referees)}
                            | {("referrer", r) for r in _roots(outside, inside, referees)})
        if len(parts) == 1 and members == parts[0].accounts:
            out.append(parts[0])
            continue
        main = max(parts, key=lambda r: (len(r.accounts), r.score, r.kind))
        out.append(Ring(
            main.kind, frozenset(members),
            frozenset(c for ring in parts for c in ring.shared),
            max(r.score for r in parts),
            {**main.evidence, "operator_accounts": len(members),
             "operator_referrers": sorted(referrers),
             "tied_referrers": sorted(joined),
             "parts": [_part(r) for r in parts]}))
    return out


def chain_ends(ring: Ring) -> set[Account]:
    """A recruiting chain's ends (fraud.rings._tied_ends): named in its review flag only."""
    raw = ring.evidence.get("chain_ends")
    if not isinstance(raw, list):
        return set()
    return {(str(a[0]), str(a[1])) for a in raw if isinstance(a, list | tuple) and len(a) == 2}


def _with_ends(ring: Ring) -> Ring:
    """A ring's review flag with its chain's ends (chain_ends), decided on the ring alone."""
    ends = chain_ends(ring) - ring.accounts
    if not ends:
        return ring
    return Ring(ring.kind, frozenset(_one_role(set(ring.accounts) | ends)), ring.shared,
                ring.score, {**ring.evidence, "parts": [_part(ring)]})


def _sharing(rings: Sequence[Ring]) -> list[tuple[int, int]]:
    """The pairs of `rings` (indexes) that share MERGE_SHARED accounts or more: one operator's
    findings seen from two sides name several of his accounts each. One account in two
    findings is what a single coincidental tie gives (a namesake's mailbox, a flatmate's
    address): a chain of friends that one of its accounts links to a pool elsewhere is two
    groups, not one with every referee of the pool's referrers."""
    holders: dict[str, list[int]] = defaultdict(list)
    for i, ring in enumerate(rings):
        for person in sorted({p for _kind, p in ring.accounts}):
            holders[person].append(i)
    shared: Counter[tuple[int, int]] = Counter()
    for held in holders.values():
        for j, a in enumerate(held):
            for b in held[j + 1:]:
                shared[(a, b)] += 1
    return sorted(pair for pair, n in shared.items() if n >= MERGE_SHARED)


class _Ties:
    """What ties a referee to a group: its own ties (`fraud.pools.account_keys`: a browser
    cookie, a fingerprint, a mailbox, a home connection and the phone on it) and the browser
    (User-Agent x Accept-Language) its first referred conversion came on."""

    def __init__(self, keys: Mapping[str, set[Key]], first: Mapping[str, str],
                 browsers: Mapping[str, Browser], named: set[str]) -> None:
        self.keys, self.first, self.browsers = keys, first, browsers
        self.holders: Counter[Key] = Counter(k for mine in keys.values() for k in mine)
        self.mix: Counter[Browser] = Counter(browsers[c] for c in first if c in browsers)
        # How often a referee no finding names shares a tie with another referrer's referee
        # at all (a household of two friends' referees, a shared flat): the chance of a tie
        # that lands on a given group is this times the group's share of the referees.
        by_key: dict[Key, set[str]] = defaultdict(set)
        for customer in first:
            for key in keys.get(customer, ()):
                if self.holders[key] <= PUBLIC_ACCOUNTS:
                    by_key[key].add(first[customer])
        people = [c for c in first if c not in named]
        crossed = sum(1 for c in people if any(len(by_key.get(k, ())) > 1
                                               for k in keys.get(c, ())))
        self.crossed = _upper(crossed, len(people))

    def marks(self, group: set[str]) -> set[Key]:
        """The group's ties that bind (used by at most PUBLIC_ACCOUNTS accounts)."""
        return {k for c in group for k in self.keys.get(c, ())
                if self.holders[k] <= PUBLIC_ACCOUNTS}

    def operator_browsers(self, group: set[str]) -> set[Browser]:
        """The browsers far more of the group's customers came on than the program's other
        referred customers do (binomial tail against the share outside the group at the
        upper end of its confidence interval, Bonferroni over the group's browsers): an
        operator's few phones, with his one language, not the program's popular ones."""
        mine = Counter(self.browsers[c] for c in group if c in self.browsers)
        inside = sum(mine.values())
        outside = sum(self.mix.values()) - inside
        if not mine or outside <= 0:
            return set()
        return {b for b, k in mine.items()
                if stats.binom.sf(k - 1, inside, _upper(self.mix[b] - k, outside))
                * len(mine) < TIE_P}


def _tied_referrers(referrers: set[str], referees: dict[str, set[str]], ties: _Ties
                    ) -> set[str]:
    """Referrers outside `referrers` more of whose referees are tied to the group's referees
    than chance gives, repeated until none joins.

    A referee is tied when it shares one of the group's referees' own ties (`_Ties.marks`)
    or came on one of the operator's browsers (`_Ties.operator_browsers`). Per referrer, k of
    its n referees tied, against n times the share of the program's other referred customers
    so tied (binomial tail, the share at the upper end of its confidence interval),
    Bonferroni over the referrers with a tied referee, under TIE_P. Two friends' referees who
    share a home (a household), or a large referrer with a few customers on a popular phone
    the operator uses too, are what chance gives; an operator's accounts for a referrer,
    each tied, are not."""
    inside = set(referrers)
    joined: set[str] = set()
    while True:
        group = {c for r in inside for c in referees.get(r, ())}
        marks, own = ties.marks(group), ties.operator_browsers(group)
        others = [c for c in ties.first if c not in group]
        keyed = {c for c in others if ties.keys.get(c, set()) & marks}
        on = {c for c in others if ties.browsers.get(c) in own}
        # Three tests, each against its own chance: a tie landing on the group, a browser as
        # popular outside the group as it is, and either (Bonferroni over the three).
        landing = ties.crossed * len(group) / max(len(ties.first), 1)
        popular = _upper(len(on), len(others))
        chance = [(keyed, landing), (on, popular), (keyed | on, min(landing + popular, 1.0))]
        # One tied referee is one coincidence (a friend on the operator's phone model, a
        # flatmate): a referrer joins on TIED_REFEREES of them at least.
        tests = [(r, len(chance) * min(
                      float(stats.binom.sf(len(people & tied) - 1, len(people), rate))
                      for tied, rate in chance))
                 for r, people in referees.items()
                 if r not in inside and len(people & (keyed | on)) >= TIED_REFEREES]
        new = {r for r, p in tests if p * len(tests) < TIE_P}
        if not new:
            return joined
        inside |= new
        joined |= new


def _recruiters(members: set[Account], referees: Mapping[str, set[str]]) -> set[str]:
    """The referrers outside a group every one of whose referees is in it: the link that
    brought a ring's first account, used for nothing else."""
    inside = {p for _kind, p in members}
    return {r for r, people in referees.items() if r not in inside and people and people <= inside}


def _roots(candidates: set[str], group: set[str], referees: Mapping[str, set[str]]
           ) -> set[str]:
    """The referrers among `candidates` that a group's referral chain grew from: credited with
    one or more of the group's accounts, one of which refers others of the group in turn (an
    account that recruits the chain's next). A ring's founder signs its first fake account up
    through its own link, and that account the next; the founder's other referees (its genuine
    friends) are not the chain's. A lent link's referees are the operator's accounts side by
    side, none recruiting: no root."""
    return {r for r in candidates
            if any(referees.get(c, set()) & group for c in referees.get(r, set()) & group)}


def _one_role(members: set[Account]) -> set[Account]:
    """A referrer who is also a customer is one account: named as the referrer."""
    referrers = {p for kind, p in members if kind == "referrer"}
    return {(kind, p) for kind, p in members if kind == "referrer" or p not in referrers}


def _part(ring: Ring) -> dict[str, object]:
    return {"kind": ring.kind, "score": ring.score,
            "accounts": [list(a) for a in sorted(ring.accounts)],
            "shared": [list(c) for c in sorted(ring.shared)], "evidence": ring.evidence}


def parts(ring: Ring) -> list[Ring]:
    """The rings a review flag was merged from (itself when it was not): what decisions and
    incremental scans read."""
    raw = ring.evidence.get("parts")
    if not isinstance(raw, list) or not raw:
        return [ring]
    out = []
    for part in raw:
        if not isinstance(part, dict):
            continue
        accounts = frozenset((str(k), str(v)) for k, v in part.get("accounts", []))
        shared = frozenset((str(k), str(v)) for k, v in part.get("shared", []))
        evidence = part.get("evidence")
        out.append(Ring(str(part.get("kind")), accounts, shared, float(part.get("score", 0.0)),
                        dict(evidence) if isinstance(evidence, dict) else {}))
    return out or [ring]


def group_flag_reasons(ring: Ring) -> list[dict[str, object]]:
    """The reasons of a review flag: each part's own (fraud.assess.ring_flag_reasons), and, for
    a merged group, what made it one."""
    pieces = parts(ring)
    out = [reason for part in pieces for reason in ring_flag_reasons(part)]
    ends = sorted(p for _kind, p in chain_ends(ring))
    if ends:
        out.append({"code": "chain_ends", "message": f"{len(ends)} account(s) ("
                    f"{', '.join(ends[:5])}{', ...' if len(ends) > 5 else ''}) signed up "
                    "through, or signed up, one of the chain's accounts and use an address or "
                    "device with another of them: named for review, not decided on",
                    "value": len(ends), "threshold": 2})
    if pieces == [ring] or (len(pieces) == 1 and "operator_referrers" not in ring.evidence):
        return out
    referrers, tied = _listed(ring, "operator_referrers"), _listed(ring, "tied_referrers")
    kinds = sorted({p.kind.replace("_", " ") for p in pieces})
    message = (f"one operator: {' and '.join(kinds)}"
               + (f" ({len(pieces)} findings sharing accounts)" if len(pieces) > 1 else "")
               + f", {len(ring.accounts)} accounts: {len(referrers)} referrers and the "
               "referees credited to them"
               + (f"; {len(tied)} of the referrers ({', '.join(tied[:5])}"
                  f"{', ...' if len(tied) > 5 else ''}) joined because more of their referees "
                  "share a browser, mailbox or home connection with the group's, or came on "
                  "the group's own phones, than chance gives" if tied else ""))
    return [*out, {"code": "operator_group", "message": message, "value": len(ring.accounts),
                   "threshold": len(pieces)}]


def _listed(ring: Ring, name: str) -> list[str]:
    value = ring.evidence.get(name, [])
    return [str(v) for v in value] if isinstance(value, list) else []
