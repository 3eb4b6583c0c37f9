"""Reciprocal credit swaps (fraud.swaps): second accounts credited round a cycle of referrers."""

from __future__ import annotations

from fraud.assess import assess_all, ring_flag_reasons
from fraud.signals import ConversionFacts, ProgramContext, ReferrerFacts
from fraud.swaps import KIND, credit_swaps


def _conv(i: int, customer: str, referrer: str, email: bytes | None = None,
          visitors: frozenset[str] = frozenset()) -> ConversionFacts:
    return ConversionFacts(i, customer, 1_000.0 * i, (referrer,), email_hash=email,
                           visitors=visitors, amount=1000)


REFERRERS = {name: ReferrerFacts(name, email_hash=name.encode()) for name in ("a", "b", "c")}


def test_swapped_pair_is_held_strongly_and_comes_back_as_one_ring() -> None:
    # a's second account (a's mailbox) through b's link, b's (b's mailbox, then a second one on
    # the same cookie) through a's; c's friend is nobody's account.
    convs = [_conv(1, "a2", "b", b"a"), _conv(2, "b2", "a", b"b", frozenset({"k"})),
             _conv(3, "b3", "a", b"b3", frozenset({"k"})), _conv(4, "f", "c", b"f")]
    found = credit_swaps(convs, REFERRERS)
    assert set(found.reasons) == {1, 2, 3}
    assert all(r.strong and r.family == "identity" for r in found.reasons.values())
    [ring] = found.rings
    assert ring.kind == KIND
    assert {p for _k, p in ring.accounts} == {"a", "b", "a2", "b2", "b3"}
    assert ring_flag_reasons(ring)[0]["code"] == KIND
    scored = {s.assessment.conversion_id: s.assessment
              for s in assess_all(convs, REFERRERS, ProgramContext())}
    assert scored[1].score >= 0.9 and scored[4].score < 0.5


def test_one_way_tie_and_mutual_friends_are_not_swaps() -> None:
    # a's mailbox-alike credited to b, but nothing of b's goes back (strangers' mailboxes can
    # normalise alike); b, a real friend, referred by a and referring a's housemate back; a
    # referrer re-subscribing through a friend's link under his own customer id.
    convs = [_conv(1, "a2", "b", b"a"), _conv(2, "b", "a", b"b"), _conv(3, "h", "b", b"h"),
             _conv(4, "c", "a", b"c")]
    found = credit_swaps(convs, REFERRERS)
    assert found.reasons == {} and found.rings == []


def test_cycles_swapped_the_same_days_are_one_group() -> None:
    refs = {n: ReferrerFacts(n, email_hash=n.encode()) for n in "abcdef"}
    day = 86_400.0

    def conv(i: int, owner: str, credited: str, at: float) -> ConversionFacts:
        return ConversionFacts(i, f"{owner}2", at, (credited,), email_hash=owner.encode())

    # a<->b and c<->d on one swap day; e<->f weeks later: another group.
    convs = [conv(1, "a", "b", 0.0), conv(2, "b", "a", 3600.0), conv(3, "c", "d", 0.5 * day),
             conv(4, "d", "c", 0.6 * day), conv(5, "e", "f", 30 * day),
             conv(6, "f", "e", 30.1 * day)]
    rings = sorted(credit_swaps(convs, refs).rings, key=lambda r: -len(r.accounts))
    assert [len(r.accounts) for r in rings] == [8, 4]


def test_a_common_names_mailbox_still_names_a_referrers_second_account() -> None:
    # a's normalised mailbox is also three strangers': it joins no persons, but a's second
    # account under it, credited round a cycle, is still a's.
    convs = [_conv(1, "a2", "b", b"a"), _conv(2, "b2", "a", b"b"),
             *(_conv(10 + i, f"s{i}", "c", b"a") for i in range(3))]
    assert set(credit_swaps(convs, REFERRERS).reasons) == {1, 2}
