"""New visitor ids: time first (a second), then 64 random bits, in the cookie's old format."""

from __future__ import annotations

from tracker.clicks.redirect import VisitorIds, _visitor_from_cookie, visitor_signature
from tracker.scoring.credits import _COOKIE_VALUE

KEY = b"visitor-key"


def test_ids_of_a_later_second_sort_after_and_start_with_their_second() -> None:
    now = [1_796_000_000.9]
    ids = VisitorIds(clock=lambda: now[0])
    made = []
    for _ in range(3 * VisitorIds.BATCH + 7):  # across refills of the random bytes
        made.append(ids.new())
        now[0] += 0.25
    assert made[0].startswith(f"{1_796_000_000:08x}")
    seconds = [int(v[:8], 16) for v in made]
    assert seconds == sorted(seconds) and seconds[-1] > seconds[0]
    later = [v for v in made if int(v[:8], 16) > seconds[0]]
    assert all(v > w for v in later for w in made if int(w[:8], 16) < int(v[:8], 16))


def test_ids_of_one_second_are_unique_and_differ_in_64_random_bits() -> None:
    ids = VisitorIds(clock=lambda: 1_796_000_000.0)
    made = [ids.new() for _ in range(5 * VisitorIds.BATCH)]
    assert len(set(made)) == len(made)
    assert {v[:8] for v in made} == {f"{1_796_000_000:08x}"}
    tails = [int(v[8:], 16) for v in made]
    # Every bit of the random part takes both values (a stuck bit would cost guessing work).
    assert all(0 < sum(t >> b & 1 for t in tails) < len(tails) for b in range(64))


def test_new_ids_have_the_old_format_and_their_cookies_verify() -> None:
    old = "0123456789abcdef01234567"  # 96 random bits, as ids were made before
    for vid in (VisitorIds().new(), old):
        assert len(vid) == 24 and vid == vid.lower() and int(vid, 16) >= 0
        value = f"{vid}.{visitor_signature(KEY, vid)}"
        assert _visitor_from_cookie(f"a=1; rg_vid={value}; b=2", KEY) == vid
        match = _COOKIE_VALUE.match(value)
        assert match and match.group(1) == vid
