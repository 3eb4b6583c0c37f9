"""One operator's group comes back as one review flag: the pool, cell and ring that each name part
of it merged, with the referrers its accounts were made for and their referees; a household
tie and a weak ring stay out, and decisions still read the parts."""

from __future__ import annotations

import json

import pytest

from fraud.operators import group_flag_reasons, operator_groups, parts
from fraud.pools import account_keys
from fraud.rings import Ring
from fraud.signals import ClickFacts, ConversionFacts

DAY = 86400.0
T0 = 1_790_000_000.0
OPERATOR = ("Mozilla/5.0 (Linux; Android 10; K) Chrome/130", "hi-IN,hi;q=0.9")


def conv(i: int, referrer: str | None, *, ip: str, browser: tuple[str, str],
         cookie: str | None = None, customer: str | None = None) -> ConversionFacts:
    at = T0 + i * 3 * DAY / 7  # one every ten hours: no burst
    touches = () if referrer is None else (
        ClickFacts(f"k{i}", at - 300, referrer, cookie, ip, None, agent=browser[0],
                   language=browser[1]),)
    return ConversionFacts(
        i, customer or f"c{i}", at, () if referrer is None else (referrer,), touches=touches,
        visitors=frozenset({cookie} if cookie else ()), agents=frozenset({(browser[0], ip)}),
        amount=1000)


def pool_ring(customers: list[str]) -> Ring:
    return Ring("collusion_pool", frozenset(("customer", c) for c in customers),
                frozenset({("mailbox", "abcd")}), 0.85, {"accounts": len(customers)})


def world(rotated: int, *, friend_browser: tuple[str, str], tie_homes: int,
          rotated_browser: tuple[str, str] | None = OPERATOR
          ) -> tuple[list[ConversionFacts], list[str]]:
    """An operator's accounts for referrers ref0..ref3 (each on a proxy address of its own,
    on his browser), `rotated` more for ref4 (tied to the pool by `tie_homes` of them coming
    from a home his pool accounts also came from; on `rotated_browser`, or each on a phone
    of its own), one real friend per referrer, and people of other referrers."""
    out = []
    made = []
    for i in range(12):
        home = f"198.51.100.{i % 3}" if i < 4 else f"45.9.{i}.7"
        out.append(conv(i, f"ref{i % 4}", ip=home, browser=OPERATOR))
        made.append(f"c{i}")
    for j in range(rotated):
        home = f"198.51.100.{j}" if j < tie_homes else f"45.10.{j}.7"
        out.append(conv(100 + j, "ref4", ip=home, browser=rotated_browser or (
            f"Phone/{j % 5}", "en-US,en;q=0.9")))
    for k in range(5):
        out.append(conv(200 + k, f"ref{k}", ip=f"81.2.{k}.44", browser=friend_browser))
    for n in range(30):
        out.append(conv(300 + n, f"r{n % 7}", ip=f"10.0.{n}.1",
                        browser=(f"Phone/{n % 5}", "en-US,en;q=0.9")))
    return out, made


@pytest.mark.parametrize("rotated", [3, 5, 8])
def test_a_pool_flag_names_its_referrers_and_the_referrers_tied_to_it(rotated: int) -> None:
    conversions, made = world(rotated, friend_browser=("Phone/9", "en-GB,en;q=0.8"),
                              tie_homes=2)
    # The pool was found from four of the accounts only (their mailbox).
    flags = operator_groups([pool_ring(made[:4])], conversions)
    assert len(flags) == 1
    flag = flags[0]
    people = {p for _kind, p in flag.accounts}
    # Every referee of the referrers the accounts were made for: ref4's too, found through
    # two homes its referees share with the pool's accounts.
    operator = ({f"ref{k}" for k in range(5)} | set(made)
                | {f"c{100 + j}" for j in range(rotated)} | {f"c{200 + k}" for k in range(5)})
    assert people == operator
    assert not people & ({f"c{300 + n}" for n in range(30)} | {f"r{n}" for n in range(7)})
    assert flag.evidence["tied_referrers"] == ["ref4"]
    message = " ".join(str(r["message"]) for r in group_flag_reasons(flag))
    assert "ref4" in message and "one operator" in message
    # Decisions and incremental scans read the pool as it was found, even through JSON.
    stored = Ring(flag.kind, flag.accounts, flag.shared, flag.score,
                  json.loads(json.dumps(flag.evidence)))
    assert parts(stored) == [pool_ring(made[:4])]


@pytest.mark.parametrize("browser", [("Phone/9", "en-GB,en;q=0.8"), ("Phone/2", "en-US")])
def test_one_shared_home_does_not_tie_a_referrer_to_a_pool(browser: tuple[str, str]) -> None:
    """Two people at one home, referred by two friends, are a household: one tie is not an
    operator's trace, and the other referrer's referees (on phones of their own) stay out."""
    conversions, made = world(4, friend_browser=browser, tie_homes=1, rotated_browser=None)
    flags = operator_groups([pool_ring(made[:4])], conversions)
    people = {p for _kind, p in flags[0].accounts}
    assert "ref4" not in people
    assert people == {f"ref{k}" for k in range(4)} | set(made) | {f"c{200 + k}" for k in range(4)}


def test_a_pool_and_a_cell_sharing_accounts_are_one_flag_and_weak_rings_stay_apart() -> None:
    conversions, made = world(0, friend_browser=("Phone/9", "en-GB"), tie_homes=0)
    cell = Ring("sleeper_cell", frozenset({("referrer", "ref0"), ("referrer", "ref1"),
                                           ("customer", "c0"), ("customer", "c1")}),
                frozenset(), 0.85, {"referrers": ["ref0", "ref1"]})
    office = Ring("ring", frozenset({("customer", "c2"), ("customer", "c300")}),
                  frozenset({("ip", "10.0.0.1")}), 0.3, {})
    flags = operator_groups([pool_ring(made[:6]), cell, office], conversions)
    assert len(flags) == 2
    assert office in flags
    merged = next(f for f in flags if f is not office)
    assert {p for _kind, p in merged.accounts} == ({f"ref{k}" for k in range(4)} | set(made)
                                                   | {f"c{200 + k}" for k in range(4)})
    assert sorted(p.kind for p in parts(merged)) == ["collusion_pool", "sleeper_cell"]
    codes = [r["code"] for r in group_flag_reasons(merged)]
    assert codes == ["collusion_pool", "sleeper_cell", "operator_group"]


def test_rings_without_an_operator_part_are_left_as_they_are() -> None:
    conversions, _made = world(0, friend_browser=("Phone/9", "en-GB"), tie_homes=0)
    ring = Ring("ring", frozenset({("referrer", "ref0"), ("customer", "c0"), ("customer", "c4")}),
                frozenset({("ip", "198.51.100.0")}), 0.9, {"accounts": 3})
    assert operator_groups([ring], conversions) == [ring]
    assert group_flag_reasons(ring) == [r for r in group_flag_reasons(ring)
                                        if r["code"] == "shared_infrastructure"]


def test_a_cells_referrers_keep_the_referees_it_named() -> None:
    """A sleeper cell names its referrers' quick buyers; a referrer it names keeps those (one
    a mailing woke has friends who take their time), unless a pool's accounts were credited to
    it or two of its referees share the operator's homes."""
    conversions, made = world(0, friend_browser=("Phone/9", "en-GB"), tie_homes=0)
    cell = Ring("sleeper_cell", frozenset({("referrer", "r0"), ("referrer", "r1"),
                                           ("customer", "c300"), ("customer", "c301")}),
                frozenset(), 0.85, {"referrers": ["r0", "r1"]})
    flags = operator_groups([cell, pool_ring(made[:4])], conversions)
    assert len(flags) == 2
    assert cell in flags  # no account in common with the pool, nothing to widen it with
    assert {p for _kind, p in next(f for f in flags if f is not cell).accounts} == (
        {f"ref{k}" for k in range(4)} | set(made) | {f"c{200 + k}" for k in range(4)})


@pytest.mark.parametrize("rotated", [6, 8])
def test_a_referrer_whose_referees_all_came_on_the_operators_phone_joins(rotated: int) -> None:
    """An operator who sends every account through a proxy of its own and never goes home
    still keeps his phone and its language: a referrer all of whose referees came on it,
    which the program's other customers hardly use, is his, with no shared address."""
    conversions, made = world(rotated, friend_browser=("Phone/9", "en-GB"), tie_homes=0)
    flag, = operator_groups([pool_ring(made[:4])], conversions,
                            account_keys(conversions))
    assert flag.evidence["tied_referrers"] == ["ref4"]
    assert {f"c{100 + j}" for j in range(rotated)} <= {p for _kind, p in flag.accounts}
    # The same accounts on phones of their own are not tied to it.
    conversions, made = world(rotated, friend_browser=("Phone/9", "en-GB"), tie_homes=0,
                              rotated_browser=None)
    flag, = operator_groups([pool_ring(made[:4])], conversions)
    assert "ref4" not in {p for _kind, p in flag.accounts}


@pytest.mark.parametrize("homes", [2, 3])
def test_a_large_referrer_with_a_few_referees_at_the_operators_homes_stays_out(homes: int
                                                                              ) -> None:
    """Two or three of a popular referrer's forty referees living where some of the operator's
    accounts came from are what chance gives (flatmates, a shared building's connection):
    the referrer and its forty referees are not the operator's."""
    conversions, made = world(0, friend_browser=("Phone/9", "en-GB"), tie_homes=0)
    for n in range(40):
        ip = f"198.51.100.{n}" if n < homes else f"10.1.{n}.9"
        conversions.append(conv(400 + n, "big", ip=ip,
                                browser=(f"Phone/{n % 5}", "en-US,en;q=0.9")))
    flag, = operator_groups([pool_ring(made[:4])], conversions)
    people = {p for _kind, p in flag.accounts}
    assert "big" not in people
    assert people == {f"ref{k}" for k in range(4)} | set(made) | {f"c{200 + k}" for k in range(4)}


def test_the_referrer_that_brought_a_rings_first_account_is_named_with_it() -> None:
    """A ring grows by referral, each account brought by an earlier one: the link that
    brought its first, used for nothing else, is the ring's too; a referrer who also brought
    someone outside the ring is not named for it."""
    chain = [("root", "a1"), ("a1", "a2"), ("a2", "a3"), ("a3", "a4"), ("mom", "a4"),
             ("mom", "kid")]
    conversions = [conv(i, referrer, ip=f"10.2.{i}.1", browser=OPERATOR, customer=customer)
                   for i, (referrer, customer) in enumerate(chain)]
    ring = Ring("ring", frozenset({("referrer", "a1"), ("referrer", "a2"), ("referrer", "a3"),
                                   ("customer", "a4")}),
                frozenset({("ip", "45.95.192.199")}), 0.92, {"recruiting": True})
    flag, = operator_groups([ring], conversions)
    assert flag.accounts == ring.accounts | {("referrer", "root")}
    assert parts(flag) == [ring]


@pytest.mark.parametrize("friends", [1, 3])
def test_a_rings_members_genuine_friends_stay_out_of_its_flag(friends: int) -> None:
    """Colluding people who buy through each other's links on one phone are a ring and, their
    accounts credited to several of them, a pool too; each also has friends of their own, on
    their own phones at their own homes, who are not the ring's. (A link lent to an operator
    still brings all its referees: the other tests.)"""
    conversions, _made = world(0, friend_browser=("Phone/9", "en-GB"), tie_homes=0)
    members = [f"m{k}" for k in range(6)]
    for k in range(1, 6):
        conversions.append(conv(500 + k, members[k - 1], ip="203.0.113.9", browser=OPERATOR,
                                customer=members[k]))
        for n in range(friends):
            conversions.append(conv(600 + 10 * k + n, members[k], ip=f"10.3.{k}.{n}",
                                    browser=(f"Phone/{(k + n) % 5}", "en-US,en;q=0.9"),
                                    customer=f"friend{k}.{n}"))
    ring = Ring("ring", frozenset(("referrer", m) for m in members),
                frozenset({("ip", "203.0.113.9")}), 0.92, {"recruiting": True})
    pool = pool_ring(members[1:])
    flag, = operator_groups([ring, pool], conversions)
    assert {p for _kind, p in flag.accounts} == set(members)
    assert sorted(p.kind for p in parts(flag)) == ["collusion_pool", "ring"]
