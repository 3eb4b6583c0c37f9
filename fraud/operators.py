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
   DECISIVE; a weak ring, a household or an office, is no operator's) that share an account
   are one;
2. a group with a pool or a cell (GROWN) is widened: its referrers are the ones named and the
   ones credited with its pool's customers' first referred conversions (a made account was
   made for the referrer it was credited to);
3. a referrer whose referees share one of the group's referees' own ties (a browser cookie, a
   fingerprint, a mailbox, a home connection: `fraud.pools` keys, each used by at most
   PUBLIC_ACCOUNTS accounts) on TIE_ACCOUNTS or more of its referees joins: an operator who
   rotates proxies and clears cookies still goes home now and then, and reuses his personas'
   mailboxes. One shared home between two people referred by two friends is a household, not
   an operator: it takes two;
4. the widened group's members are its accounts, its referrers and all their referees (first
   referred conversion credited to one of them): a referrer that lends its link to an operator
   is credited with his accounts, whichever browser and proxy each came from. (A referrer only
   a sleeper cell names keeps the referees the cell named: its quick buyers.) (A real friend
   of such a referrer is named with it here, for review; the decisions are the parts', and a
   friend with no tie to the operator is not held on the referrer's reputation alone.)
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping, Sequence

import networkx as nx

from fraud.assess import DECISIVE, ring_flag_reasons
from fraud.pools import PUBLIC_ACCOUNTS, Key, account_keys
from fraud.rings import Account, Ring
from fraud.signals import ConversionFacts

OPERATOR_KINDS = ("collusion_pool", "sleeper_cell", "ring", "dense_block", "referral_cycle")
# The parts that name an operator's accounts made for referrers' links (a ring's shared
# infrastructure may be a collector's farm whose referrer has genuine friends too: its flag names
# the accounts the infrastructure binds).
GROWN = ("collusion_pool", "sleeper_cell")
TIE_ACCOUNTS = 2  # a referrer's referees tied to the group's, at least, for it to join


def _first_referrers(conversions: Sequence[ConversionFacts]) -> dict[str, str]:
    """Each customer's referrer: the one credited with its first referred conversion (not the
    customer itself)."""
    out: dict[str, str] = {}
    for conv in sorted(conversions, key=lambda c: (c.at, c.conversion_id)):
        credited = sorted(r for r in conv.referrers if r != conv.customer)
        if credited and conv.customer not in out:
            out[conv.customer] = credited[0]
    return out


def operator_groups(rings: Sequence[Ring], conversions: Sequence[ConversionFacts],
                    keys: Mapping[str, set[Key]] | None = None) -> list[Ring]:
    """The rings as review flags: decisive parts of one operator's group merged and widened
    (see the module's docstring); the other rings as they are. A merged group keeps the kind of
    its largest part, the highest score, and its parts in `evidence["parts"]` (`parts`).
    `keys`: the conversions' `fraud.pools.account_keys`, when the caller has them already."""
    decisive = [r for r in rings if r.kind in OPERATOR_KINDS and r.score >= DECISIVE]
    if not decisive:
        return list(rings)
    union = nx.utils.UnionFind(range(len(decisive)))
    owner: dict[str, int] = {}
    for i, ring in enumerate(decisive):
        for _kind, person in sorted(ring.accounts):
            union.union(i, owner.setdefault(person, i))
    merged: dict[int, list[Ring]] = defaultdict(list)
    for i, ring in enumerate(decisive):
        merged[union[i]].append(ring)
    first: dict[str, str] = {}
    referees: dict[str, set[str]] = defaultdict(set)
    ties: Mapping[str, set[Key]] = {}
    if any(ring.kind in GROWN for ring in decisive):
        first = _first_referrers(conversions)
        for customer, referrer in first.items():
            referees[referrer].add(customer)
        ties = account_keys(conversions) if keys is None else keys
    out = [r for r in rings if not (r.kind in OPERATOR_KINDS and r.score >= DECISIVE)]
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
            joined = _tied_referrers(referrers, referees, ties, first)
            referrers |= joined
            # A cell's referrers keep the referees it named, its quick buyers (a referrer a
            # mailing woke in the same hours has friends who take their time).
            cells = {p for ring in parts if ring.kind == "sleeper_cell"
                     for kind, p in ring.accounts if kind == "referrer"}
            members |= ({("referrer", r) for r in referrers}
                        | {("customer", c) for r in referrers - (cells - credited)
                           for c in referees.get(r, ())})
        members = _one_role(members)
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


def _tied_referrers(referrers: set[str], referees: dict[str, set[str]],
                    keys: Mapping[str, set[Key]], first: dict[str, str]
                    ) -> set[str]:
    """Referrers outside `referrers` with TIE_ACCOUNTS referees sharing a tie with the group's
    referees, repeated until none joins."""
    inside = set(referrers)
    joined: set[str] = set()
    while True:
        group = {c for r in inside for c in referees.get(r, ())}
        marks = {key for c in group for key in keys.get(c, ())}
        behind: dict[tuple[str, str], set[str]] = defaultdict(set)
        for customer, mine in keys.items():
            for key in mine & marks:
                behind[key].add(customer)
        tied: dict[str, set[str]] = defaultdict(set)
        for holders in behind.values():
            if len(holders) > PUBLIC_ACCOUNTS:
                continue
            for other in holders - group:
                referrer = first.get(other)
                if referrer is not None and referrer not in inside:
                    tied[referrer].add(other)
        new = {r for r, people in tied.items() if len(people) >= TIE_ACCOUNTS}
        if not new:
            return joined
        inside |= new
        joined |= new


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
    if pieces == [ring]:
        return out
    referrers, tied = _listed(ring, "operator_referrers"), _listed(ring, "tied_referrers")
    kinds = sorted({p.kind.replace("_", " ") for p in pieces})
    message = (f"one operator: {' and '.join(kinds)}"
               + (f" ({len(pieces)} findings sharing accounts)" if len(pieces) > 1 else "")
               + f", {len(ring.accounts)} accounts: {len(referrers)} referrers and the "
               "referees credited to them"
               + (f"; {len(tied)} of the referrers ({', '.join(tied[:5])}"
                  f"{', ...' if len(tied) > 5 else ''}) joined because {TIE_ACCOUNTS} or more "
                  "of their referees share a browser, mailbox or home connection with the "
                  "group's" if tied else ""))
    return [*out, {"code": "operator_group", "message": message, "value": len(ring.accounts),
                   "threshold": len(pieces)}]


def _listed(ring: Ring, name: str) -> list[str]:
    value = ring.evidence.get(name, [])
    return [str(v) for v in value] if isinstance(value, list) else []
