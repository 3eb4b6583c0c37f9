"""The visitor probe's visitor ids are the text of a PostgreSQL array literal: every one quoted
(so NULL, blanks, commas and braces stay text), and no parameters at all when one would need
escaping (the whole probe runs instead); its other parameters are probe_arguments'."""

from __future__ import annotations

from tracker.clicks.enrich import COLUMNS
from tracker.clicks.queries import _VISITOR_KEYS, probe_arguments, visitor_probe_arguments


def row(program_id: int, link_id: int, visitor: str, ts_us: int) -> list[object]:
    out: list[object] = [None] * len(COLUMNS)
    out[COLUMNS.index("program_id")] = program_id
    out[COLUMNS.index("link_id")] = link_id
    out[COLUMNS.index("visitor_id")] = visitor
    out[COLUMNS.index("ts")] = ts_us
    return out


def test_the_literal_holds_each_visitor_in_order() -> None:
    rows = [row(1, 10, "0190abcd" + "0" * 16, 1_796_677_185_648_518),
            row(2, 20, "NULL", 1_796_677_185_648_519), row(3, 30, " a,{b} é ", 7)]
    binary = probe_arguments(rows, _VISITOR_KEYS)
    assert visitor_probe_arguments(rows) == [
        *binary[:2], '{"0190abcd0000000000000000","NULL"," a,{b} é "}', binary[3]]
    assert visitor_probe_arguments(rows[:1]) == [
        [1], [10], '{"0190abcd0000000000000000"}', [1_796_677_185.648518]]


def test_a_visitor_id_that_needs_escaping_gives_none() -> None:
    for odd in ('a"b', "a\\b", '"', "\\"):
        assert visitor_probe_arguments([row(1, 10, "v", 1), row(1, 10, odd, 2)]) is None
