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

An operator who takes his time leaves no burst, but two other things a public place does not:
one mailbox (identity's normalised e-mail: plus tags, dots, a provider's look-alike, one
distinctive local part at several providers) behind MAILBOX_ACCOUNTS new accounts of several
referrers (one person's mailbox, not a place), and one home connection (and a phone on it)
behind more new accounts, each referred, than a household has people (SPREAD_ACCOUNTS), over
any span of time. Once found, a pool's referrers' other referees who came on the operator's
own browsers join it (`_widen`): one browser far more often than the program's mix gives, or
several of the program's popular phones far more often together (pairs of referees on one
browser); and so do the referees of any referrer who brought mostly referees on the pool's
own phones, tie or no tie, far beyond their share of the program (`_reach`): one operator's
few phones behind several referrers' referees over time.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Collection, Mapping, Sequence

import networkx as nx
from scipy import stats

from fraud.rings import Ring
from fraud.signals import (
    ConversionFacts,
    Reason,
    amount_shares,
    conversion_crowds,
    purchases_by_customer,
    varied_purchases,
)

POOL_ACCOUNTS = 4  # new accounts behind one browser or phone, at least
POOL_REFERRERS = 3  # credited to this many different referrers, at least
POOL_WINDOW = 2 * 86400.0  # half the accounts first converted within this (seconds)
POOL_REFERRED = 0.9  # of the accounts behind it whose first conversion came by a referral
HOME_AGENTS = 3  # an IP with more User-Agents than this among customers is not one home
# A browser, phone or address behind more accounts is public (a carrier NAT, a placeholder id;
# fraud.signals.PLACEHOLDER_ACCOUNTS, tracker.scoring.queries.MAX_SHARE): it binds nobody.
PUBLIC_ACCOUNTS = 25
POOL_SCORE = 0.85
# One mailbox behind this many new accounts (of MAILBOX_REFERRERS referrers, nearly all
# referred) is one person's, whenever they came: two people whose names normalise alike (a
# common name at two providers) are two accounts, not three.
MAILBOX_ACCOUNTS = 3
MAILBOX_REFERRERS = 2
# A home connection (an address few phones use, and a phone on it) behind more new referred
# accounts than a household has people binds them without a burst: a family of four or six
# on one address, each referred by a different friend, is a household; eight and more, one
# operator taking his time, whose accounts buy alike (colleagues behind an office's address
# on its standard computers buy what each wants). (A browser cookie or fingerprint on its own
# may be a public terminal's, whose accounts come over weeks: those still need the burst.)
SPREAD_ACCOUNTS = 8
SHOWN = ("cookie", "mailbox", "device", "ip", "agent")  # a pool's ties, in the order named

Key = tuple[str, str]  # ("cookie" | "mailbox" | "device" | "agent" | "ip", value)


def account_keys(conversions: Sequence[ConversionFacts],
                 crowds: Collection[tuple[str, str]] | None = None) -> dict[str, set[Key]]:
    """Each customer's browsers and phones: cookies, fingerprints, and home connections (an IP
    few User-Agents use among the program's customers) with the phone seen on them."""
    agents_on: dict[str, set[str]] = defaultdict(set)
    for conv in conversions:
        for agent, ip in conv.agents:
            if ip is not None:
                agents_on[ip].add(agent)
    crowds = conversion_crowds(conversions) if crowds is None else crowds
    out: dict[str, set[Key]] = defaultdict(set)
    for conv in conversions:
        mine = out[conv.customer]
        mine.update(("cookie", v) for v in conv.visitors)
        mine.update(("device", d) for d in conv.devices if ("device", d) not in crowds)
        home = {ip for _agent, ip in conv.agents
                if ip is not None and len(agents_on[ip]) <= HOME_AGENTS}
        mine.update(("agent", f"{agent} @ {ip}") for agent, ip in conv.agents if ip in home)
        mine.update(("ip", ip) for ip in home)
        if conv.email_hash:
            # A keyed hash; its first bytes name it in the flag without the whole of it.
            mine.add(("mailbox", conv.email_hash.hex()[:16]))
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


def _cookie_at_home(key: Key, accounts: set[str], keys: Mapping[str, set[Key]]) -> bool:
    """Whether a browser cookie's accounts came, most of them (and POOL_ACCOUNTS), from one
    home connection (an address few phones use): one browser profile at one home is one
    person's browser, whenever its accounts came. A public terminal stands where many people's
    phones are (a library's, a shop's network: no home), and a family's members each have a
    browser of their own (their own cookies) on the home's shared phone model."""
    if key[0] != "cookie":
        return False
    homes = Counter(k for c in accounts for k in keys.get(c, ()) if k[0] == "ip")
    return bool(homes) and max(homes.values()) >= max(POOL_ACCOUNTS, len(accounts) / 2)


def collusion_pools(conversions: Sequence[ConversionFacts],
                    keys: Mapping[str, set[Key]] | None = None) -> list[Ring]:
    """The pools: customers bound by browsers or phones each of which is behind at least
    POOL_ACCOUNTS new accounts (at most PUBLIC_ACCOUNTS), half of them (and POOL_ACCOUNTS)
    within one POOL_WINDOW (for a home connection: or SPREAD_ACCOUNTS of them over any time),
    nearly all of them
    (POOL_REFERRED) referred, credited to at least POOL_REFERRERS referrers; or by a mailbox
    behind MAILBOX_ACCOUNTS such accounts of MAILBOX_REFERRERS referrers. Pools that share a
    referrer are one (the referrer hired one operator). A pool is a ring of its customers,
    widened by the referees of its referrers on the operator's browsers (`_widen`); its
    evidence names the browsers, phones and mailboxes and the referrers. `keys`: the
    conversions' `account_keys`, when the caller has them already (a full scan)."""
    # Each customer's first conversion through a referral link (else their first): an
    # operator who clears cookies loses the attribution of a sign-up now and then, and the
    # account's later purchase through the link is still his.
    first: dict[str, ConversionFacts] = {}
    for conv in sorted(conversions, key=lambda c: (not c.referrers, c.at, c.conversion_id)):
        first.setdefault(conv.customer, conv)
    keys = account_keys(conversions) if keys is None else keys
    shares, spent = amount_shares(conversions), purchases_by_customer(conversions)
    behind: dict[Key, set[str]] = defaultdict(set)
    for customer, mine in keys.items():
        for key in mine:
            behind[key].add(customer)
    parts = nx.utils.UnionFind()
    binding: dict[Key, set[str]] = {}
    for key in sorted(behind):
        accounts = behind[key]
        mailbox = key[0] == "mailbox"
        least = MAILBOX_ACCOUNTS if mailbox else POOL_ACCOUNTS
        if not least <= len(accounts) <= PUBLIC_ACCOUNTS:
            continue
        referred = {c for c in accounts if first[c].referrers}
        if len(referred) < POOL_REFERRED * len(accounts):
            continue
        if len({r for c in referred for r in first[c].referrers}) < (
                MAILBOX_REFERRERS if mailbox else POOL_REFERRERS):
            continue
        # A mailbox that only names a person (a first and last name at several providers)
        # is shared by strangers: one operator's personas come on his one or two phones.
        if mailbox and not _one_operator_browsers([first[c] for c in referred]):
            continue
        # Colleagues on an office's standard computers buy what each of them wants; an
        # operator's accounts buy what earns the reward (fraud.signals.varied_purchases).
        home = (key[0] in ("ip", "agent") and len(referred) >= SPREAD_ACCOUNTS
                and not varied_purchases([a for c in referred for a in spent.get(c, ())],
                                         shares))
        if not (mailbox or home or _cookie_at_home(key, referred, keys) or _burst(
                [first[c].at for c in referred]) >= max(POOL_ACCOUNTS, len(referred) / 2)):
            continue
        binding[key] = referred
        parts.union(*sorted(referred))
    mix = _browser_mix(first)  # the program's browsers, once for every test below
    for key, accounts in _browser_pools(first, behind, binding, mix).items():
        binding[key] = accounts
        parts.union(*sorted(accounts))
    by_referrer: dict[str, str] = {}  # a referrer's customers in two pools: one operator
    for accounts in binding.values():
        for c in sorted(accounts):
            for r in first[c].referrers:
                parts.union(c, by_referrer.setdefault(r, c))
    groups: dict[str, set[str]] = defaultdict(set)
    for accounts in binding.values():
        for c in accounts:
            groups[parts[c]].add(c)
    widened = _widen(list(groups.values()), first, mix)
    reached, apart = _reach([m | w for m, w in zip(groups.values(), widened, strict=True)],
                            first, mix)
    widened = [w | r for w, r in zip(widened, reached, strict=True)]
    rings = []
    for members, wide in sorted(zip(groups.values(), widened, strict=True),
                                key=lambda mw: min(mw[0])):
        referrers = sorted({r for c in members | wide for r in first[c].referrers})
        browsers = sorted({b for c in wide for b in [_browser(first[c])] if b is not None})
        # The strongest ties first: browser cookies, fingerprints, then homes and phones.
        shared = sorted((k for k, acc in binding.items() if acc & members),
                        key=lambda k: (SHOWN.index(k[0]), k[1]))
        rings.append(Ring(
            "collusion_pool", frozenset(("customer", c) for c in members | wide),
            frozenset(shared), POOL_SCORE,
            {"accounts": len(members | wide), "referrers": referrers,
             "shared": [f"{kind} {value}" for kind, value in shared]
             + [f"browser {agent} ({language})" for agent, language in browsers]}))
    joined = set().union(*widened, *groups.values()) if groups else set()
    for referrer, reached_alone in sorted(apart.items()):
        alone = reached_alone - joined
        if len(alone) < BROWSER_ACCOUNTS:
            continue
        browsers = sorted({b for c in alone for b in [_browser(first[c])] if b is not None})
        rings.append(Ring(
            "collusion_pool", frozenset(("customer", c) for c in alone), frozenset(),
            POOL_SCORE,
            {"accounts": len(alone), "referrers": [referrer],
             "shared": [f"browser {agent} ({language})" for agent, language in browsers],
             "one_phone": True}))
    return rings


def _one_operator_browsers(firsts: Sequence[ConversionFacts]) -> bool:
    """Whether the accounts behind one mailbox came on few enough browsers (User-Agent and
    Accept-Language of the visit that brought each) to be one operator's phones: at most one
    browser per MAILBOX_ACCOUNTS accounts. identity's person hash takes a distinctive local
    part at any consumer provider as one person, and a first and last name (`fatima.brown`
    at three providers) is distinctive enough for a pair but not for three strangers who
    share it: they come on the program's mix of browsers, an operator's personas on his own
    one or two."""
    browsers = {_browser(f) or ("", str(i)) for i, f in enumerate(firsts)}
    return len(browsers) <= max(1, -(-len(firsts) // MAILBOX_ACCOUNTS))


SEED_ACCOUNTS = 2  # a tie (home, phone at home, cookie, mailbox) that may start a pool
BROWSER_ACCOUNTS = 3  # an operator's browser among a group's other referees, at least
POOL_SHARE = 0.5  # of a pool's referrer's referees on its ties or browsers, at least


def _browser_pools(first: Mapping[str, ConversionFacts], behind: Mapping[Key, set[str]],
                   found: Mapping[Key, set[str]], mix: Counter[Browser]
                   ) -> dict[Key, set[str]]:
    """Pools of an operator who takes his time and rotates his cookies and addresses: the
    ties that bound too few accounts to be a pool on their own (SEED_ACCOUNTS new referred
    accounts of two referrers or more on one home connection, a phone at home, a cookie or a
    mailbox) join their referrers into groups; a group is a pool when its referrers' other
    referees (not on those ties) came on one browser (User-Agent x Accept-Language) far more
    often than the program's other new customers do (`_excess_browsers`): the operator's
    phones, wherever he went out through. Its accounts: the referees on those browsers, and
    the accounts on the ties that came on them.

    A family on one address, each referred by a different friend, on one phone model, ties
    its friends together; their other referees came on the program's mix of phones, so no
    browser is in excess and the family is no pool (nor part of one: a family tied to a
    pool's referrer by a friend in common is not on the operator's browsers)."""
    taken = set().union(*found.values()) if found else set()
    parts = nx.utils.UnionFind()
    seeds: dict[Key, set[str]] = {}
    for key in sorted(behind):
        accounts = behind[key] - taken
        if not SEED_ACCOUNTS <= len(accounts) <= PUBLIC_ACCOUNTS:
            continue
        referred = {c for c in accounts if first[c].referrers}
        if len(referred) < max(SEED_ACCOUNTS, POOL_REFERRED * len(accounts)):
            continue
        referrers = sorted({r for c in referred for r in first[c].referrers})
        if len(referrers) < 2:
            continue
        seeds[key] = referred
        parts.union(*referrers)
    if not seeds:
        return {}
    groups: dict[str, set[str]] = defaultdict(set)
    for accounts in seeds.values():
        for c in accounts:
            for r in first[c].referrers:
                groups[parts[r]].add(r)
    seeded: dict[str, set[str]] = defaultdict(set)
    for accounts in seeds.values():
        for c in accounts:
            seeded[parts[first[c].referrers[0]]].add(c)
    candidates = {g: refs for g, refs in groups.items() if len(refs) >= POOL_REFERRERS}
    if not candidates:
        return {}
    group_of = {r: g for g, refs in candidates.items() for r in refs}
    excess = _excess_browsers(first, group_of, seeded, taken, mix)
    out: dict[Key, set[str]] = {}
    referees: dict[str, set[str]] = defaultdict(set)
    for c, conv in first.items():
        for r in conv.referrers:
            if r in group_of:
                referees[r].add(c)
    kept: dict[str, set[str]] = {}
    for g, on in excess.items():
        # A pool's referrers are its accounts' (each looks ordinary: a handful of referees,
        # most of them the operator's); an influencer tied to it by a namesake's mailbox
        # brings an audience of its own, whose phones are its country's, not an operator's.
        members = set().union(*on.values())
        mine = {r for r in candidates[g]
                if len(referees[r] & members) >= POOL_SHARE * len(referees[r])}
        if len(mine) < POOL_REFERRERS:
            continue
        kept[g] = {c for c in members if set(first[c].referrers) & mine}
        for (agent, language), people in on.items():
            if people & kept[g]:
                out[("agent", f"{agent} ({language})")] = people & kept[g]
    for key, accounts in seeds.items():  # a namesake's mailbox on his own phone: not
        joined = accounts & kept.get(parts[first[next(iter(accounts))].referrers[0]], set())
        if joined:
            out[key] = joined
    return out


def _excess_browsers(first: Mapping[str, ConversionFacts], group_of: Mapping[str, str],
                     seeded: Mapping[str, set[str]], taken: set[str], mix: Counter[Browser]
                     ) -> dict[str, dict[Browser, set[str]]]:
    """Per group of referrers, the browsers of its seed ties' accounts (the operator's
    phones, if it is a pool) that its other referees came on in excess: k of its n referees
    not on a seed tie on any of those browsers, against n times the program's other new
    referred customers' share of them (binomial tail; the share at the upper end of its
    confidence interval), Bonferroni-corrected over the groups, under WIDEN_P, and at least
    BROWSER_ACCOUNTS of them. Per group found, the browsers that some of those referees came
    on, each with its accounts (seed ties' and others')."""
    others: dict[str, list[str]] = defaultdict(list)
    for c, conv in first.items():
        browser = _browser(conv) if conv.referrers else None
        if browser is None:
            continue
        for g in {group_of[r] for r in conv.referrers if r in group_of}:
            if c not in taken and c not in seeded.get(g, ()):
                others[g].append(c)
    total = sum(mix.values())
    tests: list[tuple[str, set[Browser], float]] = []
    for g, seeds in seeded.items():
        theirs = {b for b in map(_browser, (first[c] for c in seeds)) if b is not None}
        n = len(others.get(g, ()))
        k = sum(1 for c in others.get(g, ()) if _browser(first[c]) in theirs)
        if k < BROWSER_ACCOUNTS:
            continue
        seen = sum(mix[b] for b in theirs) - k - sum(
            1 for c in seeds if _browser(first[c]) in theirs)
        of = total - n - len(seeds)
        if of <= 0:
            continue
        tests.append((g, theirs, float(stats.binom.sf(k - 1, n, _upper(seen, of)))))
    out: dict[str, dict[Browser, set[str]]] = {}
    for g, theirs, p in tests:
        if p * len(tests) >= WIDEN_P:
            continue
        on: dict[Browser, set[str]] = defaultdict(set)
        for c in others[g]:
            browser = _browser(first[c])
            if browser in theirs:
                on[browser].add(c)
        for c in seeded[g]:
            browser = _browser(first[c])
            if browser in on:
                on[browser].add(c)
        out[g] = dict(on)
    return out


SHARE_CONFIDENCE = 0.05  # the baseline share's two-sided confidence in _widen
WIDEN_P = 0.001  # a browser's excess among a pool's referrers' referees, Bonferroni-corrected


def _upper(k: int, n: int) -> float:
    """Clopper-Pearson's upper bound of a share of k in n (SHARE_CONFIDENCE two-sided): a
    share seen in few is not taken as exact."""
    return min(float(stats.beta.ppf(1 - SHARE_CONFIDENCE / 2, k + 1, max(n - k, 1))), 1.0)


Browser = tuple[str, str]  # (User-Agent, Accept-Language) of the visit that brought a customer


def _browser(conv: ConversionFacts) -> Browser | None:
    last = conv.touches[-1] if conv.touches else None
    if last is None or not last.agent:
        return None
    return (last.agent, last.language or "")


def _browser_mix(first: Mapping[str, ConversionFacts]) -> Counter[Browser]:
    """The browsers the program's new referred customers came on (each customer's first
    referred conversion's click): the baseline a pool's browsers are tested against."""
    return Counter(b for f in first.values() if f.referrers
                   for b in [_browser(f)] if b is not None)


def _widen(pools: Sequence[set[str]], first: Mapping[str, ConversionFacts],
           mix: Counter[Browser]) -> list[set[str]]:
    """Per pool, its referrers' other new referees who came on the operator's browsers.

    An operator who clears cookies and goes through residential proxies for most accounts
    leaves his mailbox or home connection behind on a few (which found the pool), and on all
    of them his few phones: the same User-Agent and Accept-Language. People referred by
    the same referrers come on the program's mix of browsers. So, per browser (User-Agent x
    Accept-Language) among the other new referees of a pool's referrers: k of their n
    referees on it, against n times the share of the program's other new customers on it
    (binomial tail; the share at the upper end of its confidence interval, so that a small
    program's is not taken as exact), Bonferroni-corrected over the browsers tested in every
    pool, under WIDEN_P. The referees on the browsers found join the pool; a referee on a
    popular phone that is there by chance is not found (its count is what the program's mix
    gives)."""
    referred = {c: f for c, f in first.items() if f.referrers}
    total = sum(mix.values())
    alike_share = sum((m / total) ** 2 for m in mix.values()) if total else 0.0
    tests: list[tuple[int, set[str], float]] = []
    collisions: list[tuple[int, set[str], float]] = []
    for i, pool in enumerate(pools):
        referrers = {r for c in pool for r in first[c].referrers}
        others = [c for c, f in referred.items()
                  if c not in pool and set(f.referrers) & referrers]
        on: dict[Browser, set[str]] = defaultdict(set)
        for c in others:
            browser = _browser(first[c])
            if browser is not None:
                on[browser].add(c)
        n = sum(len(v) for v in on.values())
        own = Counter(b for b in map(_browser, (first[c] for c in pool)) if b is not None)
        for browser, people in on.items():
            if len(people) < 2:
                continue
            # The share of the program's customers outside the pool and its referrers, as high
            # as their number allows (Clopper-Pearson's upper bound): a program with few
            # customers of its own proves no browser rare.
            seen = mix[browser] - len(people) - own[browser]
            of = total - n - sum(own.values())
            if of <= 0:
                continue
            tests.append((i, people,
                          float(stats.binom.sf(len(people) - 1, n, _upper(seen, of)))))
        # The operator's phones may be the program's most popular (one each of its two or
        # three best-selling models): each alone is then no excess, but together they are
        # too many coincidences. Pairs of the n referees on one browser, against the pairs
        # the program's mix gives n people (Poisson tail).
        pairs = sum(len(v) * (len(v) - 1) // 2 for v in on.values())
        expected = n * (n - 1) / 2 * alike_share
        if pairs and expected > 0:
            alike = set().union(*(v for v in on.values() if len(v) >= 2))
            collisions.append((i, alike, float(stats.poisson.sf(pairs - 1, expected))))
    out: list[set[str]] = [set() for _ in pools]
    for i, people, p in tests:
        if p * len(tests) < WIDEN_P:
            out[i] |= people
    for i, people, p in collisions:
        if p * len(collisions) < WIDEN_P:
            out[i] |= people
    return out


REACH_P = 0.05  # a pool referrer's other referees on the pool's phones, Bonferroni-corrected


def _reach(pools: Sequence[set[str]], first: Mapping[str, ConversionFacts],
           mix: Counter[Browser]) -> tuple[list[set[str]], dict[str, set[str]]]:
    """Per pool, the referees of referrers whose referees came on the pool's own phones; and
    apart, per referrer, those of a referrer the pool does not name whose referees all came
    on one of them.

    The operator's phones are the browsers (User-Agent x Accept-Language) that two or more of
    a pool's accounts came on. A referrer whose referees came on them far more often than the
    program's new customers do lent his link to the same operator, whether or not one of his
    accounts left a tie behind: k of his n referees on those phones against n times their
    share of the program's others (binomial tail, the share at the upper end of its
    confidence interval), at least BROWSER_ACCOUNTS and POOL_SHARE of his referees,
    Bonferroni-corrected over every referrer with BROWSER_ACCOUNTS referees, under WIDEN_P.
    A referrer the pool names already (some of his referees are bound to it) is the
    operator's: the question is only which of his other referees are, and his referees on the
    operator's phones are when they are there beyond chance (REACH_P, corrected over the
    pool's referrers). Referees on other browsers stay out: a lent link may bring real
    friends too. A popular phone model brings a referrer's friends to it at its share of the
    program, which is what the test allows for. A referrer the pool does not name whose
    referees all came on one browser is explained by one phone of its own as well as by the
    operator's (a stacker resetting his phone, a shop's tablet: on a reduced User-Agent every
    Android Chrome of a market looks alike): its referees are held as its own pool, not named
    on the operator's (one flag per operator)."""
    referees: dict[str, set[str]] = defaultdict(set)
    on_browser: dict[Browser, set[str]] = defaultdict(set)
    for c, f in first.items():
        for r in f.referrers:
            referees[r].add(c)
        browser = _browser(f) if f.referrers else None
        if browser is not None:
            on_browser[browser].add(c)
    total = sum(mix.values())
    candidates = sum(1 for people in referees.values() if len(people) >= BROWSER_ACCOUNTS)
    out: list[set[str]] = [set() for _ in pools]
    apart: dict[str, set[str]] = defaultdict(set)
    for i, pool in enumerate(pools):
        used = Counter(b for b in (_browser(first[c]) for c in pool if c in first)
                       if b is not None)
        phones = {b for b, n in used.items() if n >= 2}
        named = {r for c in pool if c in first for r in first[c].referrers}
        # Only referrers with a referee on the phones can pass (linear: one pass over them).
        reached = {r for b in phones for c in on_browser[b] - pool for r in first[c].referrers}
        seen_all = sum(mix[b] for b in phones) - sum(used[b] for b in phones)
        for r in sorted(reached):
            others = referees[r] - pool
            on = {c for c in others if _browser(first[c]) in phones}
            k, n = len(on), len(others)
            mine = r in named
            if not mine and (k < BROWSER_ACCOUNTS or k < POOL_SHARE * n):
                continue
            of = total - sum(used.values()) - n
            if of <= 0:
                continue
            p = float(stats.binom.sf(k - 1, n, _upper(max(seen_all - k, 0), of)))
            if (p * len(named) < REACH_P) if mine else (p * candidates < WIDEN_P):
                if not mine and len({_browser(first[c]) for c in on}) == 1:
                    apart[r] |= on
                else:
                    out[i] |= on
    return out, apart


def pool_flag_reasons(ring: Ring) -> list[dict[str, object]]:
    """The reasons of a pool's own flag, naming its browsers and phones and its referrers."""
    referrers, shared = _listed(ring, "referrers"), _listed(ring, "shared")
    return [{"code": "collusion_pool",
             "message": f"network: {len(ring.accounts)} new accounts credited to "
                        f"{len(referrers)} unrelated referrers ({', '.join(referrers[:10])}"
                        f"{', ...' if len(referrers) > 10 else ''}) came from the same few "
                        f"browsers, phones or mailboxes ({'; '.join(shared[:5])}"
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
