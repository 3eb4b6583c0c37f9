"""New visitor ids: time first (a second), then 64 random bits, in the cookie's old format."""

from __future__ import annotations

import time

from tracker.clicks.redirect import VisitorIds, _visitor_from_cookie, visitor_signature
from tracker.scoring.credits import _COOKIE_VALUE

KEY = b"visitor-key"
SECOND = 1_796_000_000


def test_ids_of_a_later_second_sort_after_and_start_with_their_second() -> None:
    ids = VisitorIds()
    times = [SECOND * 10**9 + k * 250_000_000 for k in range(3 * VisitorIds.BATCH + 7)]
    made = [ids.new(ns) for ns in times]  # across refills of the random bytes
    assert [int(v[:8], 16) for v in made] == [ns // 10**9 for ns in times]
    for k in range(4, len(made), 4):  # each id of a second after every id of the one before
        assert min(made[k:k + 4]) > max(made[k - 4:k])
    # The clock set back: the ids follow it (no stale second).
    assert ids.new((SECOND - 60) * 10**9).startswith(f"{SECOND - 60:08x}")


def test_ids_of_one_second_are_unique_and_differ_in_64_random_bits() -> None:
    ids = VisitorIds()
    made = [ids.new(SECOND * 10**9 + k) for k in range(5 * VisitorIds.BATCH)]
    assert len(set(made)) == len(made)
    assert {v[:8] for v in made} == {f"{SECOND:08x}"}
    tails = [int(v[8:], 16) for v in made]
    # Every bit of the random part takes both values (a stuck bit would cost guessing work).
    assert all(0 < sum(t >> b & 1 for t in tails) < len(tails) for b in range(64))


def test_new_ids_have_the_old_format_and_their_cookies_verify() -> None:
    old = "0123456789abcdef01234567"  # 96 random bits, as ids were made before
    for vid in (VisitorIds().new(time.time_ns()), old):
        assert len(vid) == 24 and vid == vid.lower() and int(vid, 16) >= 0
        value = f"{vid}.{visitor_signature(KEY, vid)}"
        assert _visitor_from_cookie(f"a=1; rg_vid={value}; b=2", KEY) == vid
        match = _COOKIE_VALUE.match(value)
        assert match and match.group(1) == vid
