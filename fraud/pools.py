"""Collusion pools: a few operators' browsers and phones behind new customers of several
unrelated referrers.

Referrers who do not know each other (no referral edge binds them) hire, or are, one operator
who makes the accounts that convert through each referrer's link. Each referrer on its own looks
ordinary (a handful of referees), and the referrers share nothing; what gives the pool away is
the operator's own equipment: the same browser profile (visitor cookie), the same device
fingerprint, or the same phone (User-Agent) on the same home connection, behind many new accounts
credited to several referrers within a short time.

A public terminal (a library computer, a shop's tablet) or a carrier's NAT is also behind many
accounts and several referrers, and differs in how: its accounts come over weeks, not in a burst;
some of its people buy without any referral link; and an address many people use carries many
different phones (`HOME_AGENTS`), so a phone on it is not one person's. A family's shared tablet
carries two or three accounts, not POOL_ACCOUNTS.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence

import networkx as nx

from fraud.rings import Ring
from fraud.signals import ConversionFacts, Reason

POOL_ACCOUNTS = 4  # new accounts behind one browser or phone, at least
POOL_REFERRERS = 3  # credited to this many different referrers, at least
POOL_WINDOW = 2 * 86400.0  # half the accounts first converted within this (seconds)
POOL_REFERRED = 0.9  # of the accounts behind it whose first conversion came by a referral
HOME_AGENTS = 3  # an IP with more User-Agents than this among customers is not one home
# A browser, phone or address behind more accounts is public (a carrier NAT, a placeholder id;
# fraud.signals.PLACEHOLDER_ACCOUNTS, tracker.scoring.queries.MAX_SHARE): it binds nobody.
PUBLIC_ACCOUNTS = 25
POOL_SCORE = 0.85
SHOWN = ("cookie", "device", "ip", "agent")  # a pool's ties, in the order its flag names them

Key = tuple[str, str]  # ("cookie" | "device" | "agent" | "ip", value)


def _keys(conversions: Sequence[ConversionFacts]) -> dict[str, set[Key]]:
    """Each customer's browsers and phones: cookies, fingerprints, and home connections (an IP
    few User-Agents use among the program's customers) with the phone seen on them."""
    agents_on: dict[str, set[str]] = defaultdict(set)
    for conv in conversions:
        for agent, ip in conv.agents:
            if ip is not None:
                agents_on[ip].add(agent)
    out: dict[str, set[Key]] = defaultdict(set)
    for conv in conversions:
        mine = out[conv.customer]
        mine.update(("cookie", v) for v in conv.visitors)
        mine.update(("device", d) for d in conv.devices)
        home = {ip for _agent, ip in conv.agents
                if ip is not None and len(agents_on[ip]) <= HOME_AGENTS}
        mine.update(("agent", f"{agent} @ {ip}") for agent, ip in conv.agents if ip in home)
        mine.update(("ip", ip) for ip in home)
    return out


def _burst(times: list[float]) -> int:
    """The most of `times` within one POOL_WINDOW."""
    times = sorted(times)
    best, lo = 0, 0
    for hi, t in enumerate(times):
        while t - times[lo] > POOL_WINDOW:
            lo += 1
        best = max(best, hi - lo + 1)
    return best


def collusion_pools(conversions: Sequence[ConversionFacts]) -> list[Ring]:
    """The pools: customers bound by browsers or phones each of which is behind at least
    POOL_ACCOUNTS new accounts (at most PUBLIC_ACCOUNTS), half of them (and POOL_ACCOUNTS)
    within one POOL_WINDOW, nearly all of them (POOL_REFERRED) referred, credited to at least
    POOL_REFERRERS referrers. A pool is a ring of its customers; its evidence names the
    browsers and phones and the referrers."""
    first: dict[str, ConversionFacts] = {}
    for conv in sorted(conversions, key=lambda c: (c.at, c.conversion_id)):
        first.setdefault(conv.customer, conv)
    keys = _keys(conversions)
    behind: dict[Key, set[str]] = defaultdict(set)
    for customer, mine in keys.items():
        for key in mine:
            behind[key].add(customer)
    parts = nx.utils.UnionFind()
    binding: dict[Key, set[str]] = {}
    for key in sorted(behind):
        accounts = behind[key]
        if not POOL_ACCOUNTS <= len(accounts) <= PUBLIC_ACCOUNTS:
            continue
        referred = {c for c in accounts if first[c].referrers}
        if len(referred) < POOL_REFERRED * len(accounts):
            continue
        if len({r for c in referred for r in first[c].referrers}) < POOL_REFERRERS:
            continue
        if _burst([first[c].at for c in referred]) < max(POOL_ACCOUNTS, len(referred) / 2):
            continue
        binding[key] = referred
        parts.union(*sorted(referred))
    groups: dict[str, set[str]] = defaultdict(set)
    for accounts in binding.values():
        for c in accounts:
            groups[parts[c]].add(c)
    rings = []
    for members in sorted(groups.values(), key=min):
        referrers = sorted({r for c in members for r in first[c].referrers})
        # The strongest ties first: browser cookies, fingerprints, then homes and phones.
        shared = sorted((k for k, acc in binding.items() if acc & members),
                        key=lambda k: (SHOWN.index(k[0]), k[1]))
        rings.append(Ring(
            "collusion_pool", frozenset(("customer", c) for c in members),
            frozenset(shared), POOL_SCORE,
            {"accounts": len(members), "referrers": referrers,
             "shared": [f"{kind} {value}" for kind, value in shared]}))
    return rings


def pool_flag_reasons(ring: Ring) -> list[dict[str, object]]:
    """The reasons of a pool's own flag, naming its browsers and phones and its referrers."""
    referrers, shared = _listed(ring, "referrers"), _listed(ring, "shared")
    return [{"code": "collusion_pool",
             "message": f"network: {len(ring.accounts)} new accounts credited to "
                        f"{len(referrers)} unrelated referrers ({', '.join(referrers[:10])}"
                        f"{', ...' if len(referrers) > 10 else ''}) came within days from the "
                        f"same few browsers or phones ({'; '.join(shared[:5])}"
                        f"{'; ...' if len(shared) > 5 else ''}): one operator making accounts "
                        "for several links",
             "value": len(ring.accounts), "threshold": POOL_ACCOUNTS}]


POOL_COOKIE_WEIGHT = 0.9


def _listed(ring: Ring, name: str) -> list[str]:
    value = ring.evidence.get(name, [])
    return [str(v) for v in value] if isinstance(value, list) else []


def pool_cookie_reasons(conversions: Sequence[ConversionFacts], rings: Sequence[Ring]
                        ) -> dict[int, Reason]:
    """Per conversion of a pool's customer on one of the pool's browser cookies: strong
    identity evidence. A cookie is one browser profile; one behind a burst of referred new
    accounts of several referrers (a pool's) is the operator's, not a public terminal's (whose
    accounts come over weeks, some without a referral): the accounts are one person's."""
    pools: dict[str, tuple[Ring, set[str]]] = {}
    for ring in rings:
        cookies = {v for kind, v in ring.shared if kind == "cookie"}
        if ring.kind == "collusion_pool" and cookies:
            for _kind, customer in ring.accounts:
                pools[customer] = (ring, cookies)
    out: dict[int, Reason] = {}
    for conv in conversions:
        found = pools.get(conv.customer)
        mine = sorted(conv.visitors & found[1]) if found else []
        if found is None or not mine:
            continue
        ring = found[0]
        out[conv.conversion_id] = Reason(
            "pooled_cookie",
            f"identity: one browser (visitor cookie {mine[0]}) is behind new accounts of a "
            f"collusion pool of {len(ring.accounts)}, credited to several different referrers "
            "within days, all through referral links: one person making "
            "accounts (a public terminal's come over weeks, some without a referral)",
            len(ring.accounts), POOL_ACCOUNTS, POOL_COOKIE_WEIGHT, "identity", True)
    return out
