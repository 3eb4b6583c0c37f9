"""The program page's SVG drawing (tracker.web.review.charts): scales, ticks, empty data, one
point, negative values, escaping and shortening of labels."""

from __future__ import annotations

import itertools
import math
import re
import xml.etree.ElementTree as ET

import pytest

from tracker.web.review import charts
from tracker.web.review.charts import Interval, Scale, Series, Step

SVG = "{http://www.w3.org/2000/svg}"
EVIL = '<script>alert("x")</script>&amp; a label far longer than any axis can hold'


def parse(markup: str) -> ET.Element:
    """The chart as XML: it must be well formed (ET raises otherwise)."""
    return ET.fromstring(str(markup))  # noqa: S314 (our own markup)


def floats(root: ET.Element, tag: str, attr: str) -> list[float]:
    return [float(e.attrib[attr]) for e in root.iter(SVG + tag) if attr in e.attrib]


def test_scale_maps_linearly_and_a_flat_domain_to_the_middle() -> None:
    s = Scale(0, 10, 100, 0)  # y grows downwards
    assert (s(0), s(5), s(10), s(-5)) == (100, 50, 0, 150)
    assert Scale(3, 3, 0, 200)(3) == 100


@pytest.mark.parametrize(("lo", "hi"), [(0, 1), (0, 97), (-0.17, 1.9), (-12000, 0),
                                        (0, 1_234_567), (0.001, 0.004), (5, 5), (0, 0)])
def test_ticks_are_round_ascending_and_cover_the_data(lo: float, hi: float) -> None:
    t = charts.ticks(lo, hi)
    assert t == sorted(t) and len(set(t)) == len(t) and 2 <= len(t) <= 12
    assert t[0] <= lo and t[-1] >= hi
    step = t[1] - t[0]
    mantissa = step / 10 ** math.floor(math.log10(step))
    assert round(mantissa, 6) in (1, 2, 5, 10)
    assert all(abs((b - a) - step) < step * 1e-6 for a, b in itertools.pairwise(t))


def test_extent_ignores_none_and_includes_zero() -> None:
    assert charts.extent([]) == (0, 0)
    assert charts.extent([], zero=False) == (0, 1)
    assert charts.extent([None, None]) == (0, 0)
    assert charts.extent([None, None], zero=False) == (0, 1)
    assert charts.extent([3, None, -2]) == (-2, 3)
    assert charts.extent([3, 5], zero=False) == (3, 5)


def test_number_is_short() -> None:
    assert [charts.number(v) for v in (0, 3, -3, 0.25, 12500, 1_234_567, -0.1667)] == [
        "0", "3", "-3", "0.25", "12.5k", "1.23M", "-0.167"]
    assert charts.percent(0.125) == "12.5%"


def test_bars_negative_values_hang_below_zero() -> None:
    root = parse(charts.bars("money", "T", "D", categories=["Jan", "Feb"],
                             series=[Series("up", "s1", (100.0, -50.0))]))
    zero = [e for e in root.iter(SVG + "line") if "zero" in e.attrib["class"]]
    assert len(zero) == 1
    y0 = float(zero[0].attrib["y1"])
    up, down = [e for e in root.iter(SVG + "rect") if "bar" in e.attrib["class"]]
    assert float(up.attrib["y"]) + float(up.attrib["height"]) == pytest.approx(y0)
    assert float(down.attrib["y"]) == pytest.approx(y0)
    assert float(up.attrib["height"]) == pytest.approx(2 * float(down.attrib["height"]))
    tips = [e.text for e in root.iter(SVG + "title")]
    assert tips[:1] == ["T"] and "Feb, up: -50" in tips


def test_empty_data_draws_a_well_formed_empty_chart() -> None:
    for markup in (charts.bars("a", "T", "D", categories=[], series=[]),
                   charts.line("b", "T", "D", categories=[], values=[]),
                   charts.funnel("c", "T", "D", steps=[]),
                   charts.intervals("d", "T", "D", rows=[]),
                   charts.heatmap("e", "T", "D", rows=[], columns=[], cells={})):
        root = parse(markup)
        assert root.attrib["role"] == "img"
        assert root.find(SVG + "title").text == "T"  # type: ignore[union-attr]
        assert root.find(SVG + "desc").text == "D"  # type: ignore[union-attr]
        assert "nan" not in str(markup) and "inf" not in str(markup)


def test_one_point_and_gaps_in_a_line() -> None:
    one = parse(charts.line("roi", "T", "D", categories=["2026-01"], values=[0.5]))
    assert len(list(one.iter(SVG + "circle"))) == 1
    assert not list(one.iter(SVG + "polyline"))  # nothing to join
    gap = parse(charts.line("roi", "T", "D", categories=list("abcde"),
                            values=[1, 2, None, 3, 4]))
    assert len(list(gap.iter(SVG + "polyline"))) == 2
    assert len(list(gap.iter(SVG + "circle"))) == 4


def test_negative_roi_is_below_the_zero_line_and_marked() -> None:
    root = parse(charts.line("roi", "T", "D", categories=["a", "b"], values=[0.4, -0.17]))
    zero = next(e for e in root.iter(SVG + "line") if "zero" in e.attrib["class"])
    pos, neg = root.iter(SVG + "circle")
    assert float(pos.attrib["cy"]) < float(zero.attrib["y1"]) < float(neg.attrib["cy"])
    assert neg.attrib["class"] == "point neg" and pos.attrib["class"] == "point"
    iv = parse(charts.intervals("x", "T", "D", rows=[Interval("v", -0.5, -1.2, 0.3)]))
    zero_x = next(float(e.attrib["x1"]) for e in iv.iter(SVG + "line")
                  if "zero" in e.attrib["class"])
    dot = next(iv.iter(SVG + "circle"))
    assert float(dot.attrib["cx"]) < zero_x


def test_intervals_span_low_to_high_and_mark_the_winner() -> None:
    rows = [Interval("a", 0.1, 0.05, 0.2), Interval("b", 0.3, 0.2, 0.4, best=True),
            Interval("c", None, None, None)]
    root = parse(charts.intervals("x", "T", "D", rows=rows, fmt=charts.percent))
    bars = [e for e in root.iter(SVG + "line") if e.attrib["class"].startswith("ci")
            and e.attrib["y1"] == e.attrib["y2"]]
    assert len(bars) == 2 and bars[1].attrib["class"] == "ci best"
    a, b = bars
    assert float(a.attrib["x1"]) < float(b.attrib["x1"]) <= float(a.attrib["x2"])
    assert float(a.attrib["x2"]) < float(b.attrib["x2"])
    texts = [e.text for e in root.iter(SVG + "text")]
    assert "b (winner)" in texts and "no figure" in texts


def test_labels_are_escaped_and_shortened() -> None:
    markups = [
        charts.bars("a", EVIL, EVIL, categories=[EVIL], series=[Series(EVIL, "s1", (1.0,))]),
        charts.line("b", "T", "D", categories=[EVIL], values=[1.0], name=EVIL),
        charts.funnel("c", "T", "D", steps=[Step(EVIL, 3, 0.5)]),
        charts.intervals("d", "T", "D", rows=[Interval(EVIL, 0.1, 0, 0.2)]),
        charts.heatmap("e", "T", "D", rows=[EVIL], columns=[EVIL], cells={(0, 0): 2}),
    ]
    for markup in markups:
        text = str(markup)
        assert "<script" not in text and "&lt;script&gt;" in text
        root = parse(markup)  # well formed: every & and < escaped
        full = [e.text for e in root.iter(SVG + "title") if e.text and EVIL in e.text]
        assert full, "the whole label stays in a title"
        for t in root.iter(SVG + "text"):
            assert t.text is not None and len(t.text) <= 40
    assert charts.short("abcdefghij", 5) == "abcd…"
    with pytest.raises(ValueError, match="chart id"):
        charts.bars('x" onload="y', "T", "D", categories=[], series=[])


def test_heatmap_shades_by_share_of_the_largest() -> None:
    cells = {(0, 0): 10.0, (0, 1): 5.0, (1, 2): 0.1}
    root = parse(charts.heatmap("h", "T", "D", rows=["Mon", "Tue"],
                                columns=["00", "01", "02"], cells=cells))
    shades = [e.attrib["class"] for e in root.iter(SVG + "rect")]
    assert len(shades) == 6
    assert shades[0] == "cell q5" and shades[1] == "cell q3" and shades[5] == "cell q1"
    assert shades.count("cell q0") == 3  # no clicks
    assert re.search(r"Mon 00: 10<", str(charts.heatmap("h", "T", "D", rows=["Mon"],
                                                        columns=["00"], cells=cells)))


def test_funnel_bars_are_proportional_and_say_the_rate() -> None:
    root = parse(charts.funnel("f", "T", "D", steps=[Step("asked", 100), Step("shared", 50, 0.5),
                                                     Step("none", None), Step("zero", 0, 0.0)]))
    widths = [float(e.attrib["width"]) for e in root.iter(SVG + "rect")]
    assert widths[0] == pytest.approx(2 * widths[1]) and widths[2] == 1
    texts = [e.text for e in root.iter(SVG + "text")]
    assert "50 · 50%" in texts and "not counted" in texts
