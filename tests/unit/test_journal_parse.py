"""tracker.clicks.journal.parse_segment reads a click's line in place, as decode_line reads it."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from tracker.clicks.journal import (
    FIELDS,
    SEP,
    VERSION,
    JournalFormatError,
    decode_line,
    parse_segment,
)

NUMBER = st.one_of(st.integers(-5, 2**53).map(str), st.sampled_from(["", "x", "1.5", " 7", "٣"]))
TEXT = st.text(st.characters(blacklist_characters="\x00\n\r", max_codepoint=0xD7FF),
               max_size=8)


@given(st.lists(st.tuples(NUMBER, NUMBER, NUMBER, NUMBER, st.sampled_from(["1", "", "0"]),
                          st.lists(TEXT, min_size=len(FIELDS) - 6, max_size=len(FIELDS) - 6),
                          st.booleans()), max_size=12))
def test_a_segment_reads_as_its_lines_decoded_one_by_one(
    lines: list[tuple[str, str, str, str, str, list[str], bool]],
) -> None:
    texts = []
    for ts, program, link, referrer, new, rest, short in lines:
        fields = [VERSION, ts, rest[0], program, link, referrer, rest[1], rest[2], new, *rest[3:]]
        texts.append(SEP.join(fields[:-1] if short else fields))
    expected, bad = [], 0
    for text in texts:
        try:
            expected.append(decode_line(text))
        except JournalFormatError:
            bad += 1
    clicks, found_bad = parse_segment("".join(t + "\n" for t in texts).encode(), "seg")
    assert (clicks, found_bad) == (expected, bad)
    assert [tuple(map(type, c)) for c in clicks] == [tuple(map(type, c)) for c in expected]
