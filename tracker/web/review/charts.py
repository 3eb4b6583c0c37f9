"""Charts of the program page drawn as SVG on the server: plain functions, data in, markup out.

No script and no inline style (the page's CSP allows neither): geometry is in SVG attributes,
every colour and font in the stylesheet (static/review.css, classes under `svg.chart`). Each
chart is `role="img"` with a `<title>` and `<desc>`, and each mark carries a `<title>` (its
tooltip) with the exact figure; the page puts a table of the same numbers under each chart.
Every text that comes from data is escaped here (markupsafe), and long labels are shortened
(the full label stays in the mark's title).
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from markupsafe import Markup, escape

Fmt = Callable[[float], str]
LABEL_MAX = 18  # characters of a category label drawn on an axis
SHADES = 6  # heatmap classes q0 (nothing) .. q5 (the busiest)
_ID = re.compile(r"[a-z][a-z0-9-]{0,40}")


@dataclass(frozen=True, slots=True)
class Scale:
    """A linear map of the domain [d0, d1] onto the range [r0, r1]; a domain of zero width
    maps everything to the middle of the range."""

    d0: float
    d1: float
    r0: float
    r1: float

    def __call__(self, value: float) -> float:
        if self.d1 == self.d0:
            return (self.r0 + self.r1) / 2
        return self.r0 + (value - self.d0) / (self.d1 - self.d0) * (self.r1 - self.r0)


def nice_step(span: float, count: int = 5) -> float:
    """A round step (1, 2 or 5 times a power of ten) giving about `count` ticks over `span`."""
    if span <= 0 or not math.isfinite(span):
        return 1.0
    raw = span / max(count, 1)
    power = 10 ** math.floor(math.log10(raw))
    for m in (1, 2, 5, 10):
        if raw <= m * power:
            return float(m * power)
    return float(10 * power)  # pragma: no cover (the loop ends at 10)


def ticks(lo: float, hi: float, count: int = 5) -> list[float]:
    """Round tick values covering [lo, hi] (the first at or below lo, the last at or above
    hi). Empty or one-value data get the ticks of [0, 1] or around that value."""
    if not (math.isfinite(lo) and math.isfinite(hi)):
        lo, hi = 0.0, 1.0
    if lo > hi:
        lo, hi = hi, lo
    if lo == hi:
        lo, hi = (0.0, 1.0) if lo == 0 else (min(lo, 0.0), max(hi, 0.0))
    step = nice_step(hi - lo, count)
    first = math.floor(lo / step) * step
    out: list[float] = []
    v = first
    while len(out) < 50:  # a bound, never reached with a round step
        out.append(round(v, 10))
        if v >= hi - step * 1e-9:
            break
        v += step
    return out


def extent(values: Sequence[float | None], *, zero: bool = True) -> tuple[float, float]:
    """The smallest and largest of the values that are not None (with 0 when `zero`); (0, 1)
    when there are none (and not `zero`)."""
    present = [v for v in values if v is not None and math.isfinite(v)]
    if zero:
        present.append(0.0)
    if not present:
        return 0.0, 1.0
    return min(present), max(present)


def number(value: float) -> str:
    """Short: 1234567 -> 1.2M, 12500 -> 12.5k, 0.25 -> 0.25, -3 -> -3."""
    a = abs(value)
    for div, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if a >= div:
            return f"{value / div:.3g}{suffix}"
    if a >= 100 or value == int(value):
        return f"{value:.0f}"
    return f"{value:.3g}"


def percent(value: float) -> str:
    return f"{value * 100:.3g}%"


def short(label: str, limit: int = LABEL_MAX) -> str:
    """The label cut to `limit` characters with an ellipsis (the full one goes in a title)."""
    return label if len(label) <= limit else label[: limit - 1] + "…"


def _id(chart_id: str) -> str:
    if not _ID.fullmatch(chart_id):
        raise ValueError(f"chart id must match {_ID.pattern}: {chart_id!r}")
    return chart_id


def _n(x: float) -> str:
    """A coordinate for an attribute: at most one decimal."""
    return f"{x:.1f}".rstrip("0").rstrip(".") if x != int(x) else str(int(x))


def _svg(chart_id: str, size: tuple[float, float], title: str, desc: str, body: list[str], *,
         extra_class: str = "") -> Markup:
    width, height = size
    cid = "chart-" + _id(chart_id)  # apart from the page's own ids
    cls = f"chart {extra_class}".strip()
    head = (f'<svg class="{cls}" viewBox="0 0 {_n(width)} {_n(height)}" role="img" '
            f'aria-labelledby="{cid}-t {cid}-d" id="{cid}" '
            f'xmlns="http://www.w3.org/2000/svg">'
            f'<title id="{cid}-t">{escape(title)}</title><desc id="{cid}-d">{escape(desc)}</desc>')
    # Every text of data in `body` went through escape() (_text, _tip); the rest is numbers
    # and fixed class names.
    return Markup(head + "".join(body) + "</svg>")  # noqa: S704 (escaped piece by piece)


def _text(x: float, y: float, text: str, cls: str = "") -> str:
    c = f' class="{cls}"' if cls else ""
    return f'<text x="{_n(x)}" y="{_n(y)}"{c}>{escape(text)}</text>'


def _tip(text: str) -> str:
    return f"<title>{escape(text)}</title>"


def _y_axis(scale: Scale, values: list[float], left: float, right: float, fmt: Fmt) -> list[str]:
    out = []
    for v in values:
        y = scale(v)
        out.append(f'<line class="grid{" zero" if v == 0 else ""}" x1="{_n(left)}" '
                   f'y1="{_n(y)}" x2="{_n(right)}" y2="{_n(y)}"/>')
        out.append(_text(left - 6, y + 4, fmt(v), "tick end"))
    return out


# -- charts ------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Series:
    name: str
    css: str  # a class of the stylesheet: s1, s2, ...
    values: tuple[float | None, ...]  # one per category; None: no figure


def bars(chart_id: str, title: str, desc: str, *, categories: Sequence[str],
         series: Sequence[Series], fmt: Fmt = number) -> Markup:
    """Grouped vertical bars, one group per category (e.g. month), one bar per series; bars
    below zero hang from the zero line. A legend names the series."""
    width, height, left, right, top, bottom = 560.0, 280.0, 58.0, 10.0, 30.0, 40.0
    flat = [v for s in series for v in s.values]
    tv = ticks(*extent(flat))
    y = Scale(tv[0], tv[-1], height - bottom, top)
    body = _y_axis(y, tv, left, width - right, fmt)
    n = max(len(categories), 1)
    band = (width - left - right) / n
    inner = band * 0.8
    bar = inner / max(len(series), 1)
    every = max(1, math.ceil(n / 6))  # at most 6 category labels (phones)
    for i, cat in enumerate(categories):
        x0 = left + i * band + (band - inner) / 2
        for j, s in enumerate(series):
            v = s.values[i] if i < len(s.values) else None
            if v is None:
                continue
            y0, y1 = sorted((y(0), y(v)))
            body.append(f'<rect class="bar {s.css}" x="{_n(x0 + j * bar)}" y="{_n(y0)}" '
                        f'width="{_n(max(bar - 1, 1))}" height="{_n(max(y1 - y0, 0.5))}">'
                        f"{_tip(f'{cat}, {s.name}: {fmt(v)}')}</rect>")
        if i % every == 0:
            body.append(_text(left + i * band + band / 2, height - bottom + 16, short(cat, 10),
                              "tick mid"))
    body.extend(_legend(series, left, 16))
    return _svg(chart_id, (width, height), title, desc, body)


def _legend(series: Sequence[Series], x: float, y: float) -> list[str]:
    out = []
    for s in series:
        out.append(f'<rect class="key {s.css}" x="{_n(x)}" y="{_n(y - 10)}" width="12" '
                   f'height="12"/>')
        label = short(s.name, 28)
        out.append(_text(x + 16, y, label, "legend"))
        x += 16 + 11 * len(label) + 20  # wide enough for the phone font size
    return out


def line(chart_id: str, title: str, desc: str, *, categories: Sequence[str],
         values: Sequence[float | None], fmt: Fmt = number, name: str = "") -> Markup:
    """A line through the values that exist (a None breaks it), a dot on each; negative values
    go below the zero line, which is drawn."""
    width, height, left, right, top, bottom = 560.0, 240.0, 58.0, 14.0, 16.0, 40.0
    tv = ticks(*extent(values))
    y = Scale(tv[0], tv[-1], height - bottom, top)
    body = _y_axis(y, tv, left, width - right, fmt)
    n = max(len(categories), 1)
    band = (width - left - right) / n
    every = max(1, math.ceil(n / 6))
    path: list[str] = []
    dots = []
    for i, cat in enumerate(categories):
        cx = left + i * band + band / 2
        v = values[i] if i < len(values) else None
        if i % every == 0:
            body.append(_text(cx, height - bottom + 16, short(cat, 10), "tick mid"))
        if v is None:
            if len(path) > 1:
                body.append(f'<polyline class="line" points="{" ".join(path)}"/>')
            path = []
            continue
        path.append(f"{_n(cx)},{_n(y(v))}")
        label = f"{cat}: {fmt(v)}" if not name else f"{cat}, {name}: {fmt(v)}"
        dots.append(f'<circle class="point{" neg" if v < 0 else ""}" cx="{_n(cx)}" '
                    f'cy="{_n(y(v))}" r="4">{_tip(label)}</circle>')
    if len(path) > 1:
        body.append(f'<polyline class="line" points="{" ".join(path)}"/>')
    return _svg(chart_id, (width, height), title, desc, body + dots)


@dataclass(frozen=True, slots=True)
class Step:
    label: str
    value: float | None  # None: not counted (e.g. asks by channel)
    rate: float | None = None  # over the step before


def funnel(chart_id: str, title: str, desc: str, *, steps: Sequence[Step],
           fmt: Fmt = number) -> Markup:
    """One horizontal bar per step, its length proportional to the largest step; the label
    above the bar, the figure and the rate from the step before at its end."""
    width, row, left, right = 560.0, 44.0, 8.0, 8.0
    height = 8 + row * max(len(steps), 1)
    top = max((s.value for s in steps if s.value is not None), default=0.0)
    x = Scale(0, top or 1, 0, width - left - right - 150)
    body = []
    for i, s in enumerate(steps):
        y0 = 8 + i * row
        body.append(_text(left, y0 + 12, short(s.label, 40), "label"))
        if s.value is None:
            body.append(_text(left, y0 + 32, "not counted", "muted"))
            continue
        w = max(x(max(s.value, 0.0)), 1.0)
        tip = f"{s.label}: {fmt(s.value)}" + (
            f" ({percent(s.rate)} of the step before)" if s.rate is not None else "")
        body.append(f'<rect class="bar s1 funnel" x="{_n(left)}" y="{_n(y0 + 17)}" '
                    f'width="{_n(w)}" height="18">{_tip(tip)}</rect>')
        figure = fmt(s.value) + (f" · {percent(s.rate)}" if s.rate is not None else "")
        body.append(_text(left + w + 6, y0 + 31, figure, "value"))
    return _svg(chart_id, (width, height), title, desc, body)


@dataclass(frozen=True, slots=True)
class Interval:
    label: str
    value: float | None
    low: float | None
    high: float | None
    best: bool = False  # drawn as the winner


def intervals(chart_id: str, title: str, desc: str, *, rows: Sequence[Interval],
              fmt: Fmt = number) -> Markup:
    """One row per item: a bar from its interval's low to high and a dot at its value, on a
    shared axis (negative values allowed, zero drawn); the winner is marked."""
    width, row, left, right, top = 560.0, 40.0, 176.0, 30.0, 26.0
    height = top + row * max(len(rows), 1) + 8
    tv = ticks(*extent([v for r in rows for v in (r.value, r.low, r.high)]), count=4)
    x = Scale(tv[0], tv[-1], left, width - right)
    body = []
    for v in tv:
        zero = " zero" if v == 0 else ""
        body.append(f'<line class="grid{zero}" x1="{_n(x(v))}" y1="{_n(top - 6)}" '
                    f'x2="{_n(x(v))}" y2="{_n(height - 8)}"/>')
        body.append(_text(x(v), top - 10, fmt(v), "tick mid"))
    for i, r in enumerate(rows):
        cy = top + i * row + row / 2
        name = r.label + (" (winner)" if r.best else "")
        body.append(_text(left - 8, cy + 4, short(name, 15), "label end"))
        cls = " best" if r.best else ""
        if r.low is not None and r.high is not None:
            body.append(f'<line class="ci{cls}" x1="{_n(x(r.low))}" y1="{_n(cy)}" '
                        f'x2="{_n(x(r.high))}" y2="{_n(cy)}"/>')
            for end in (r.low, r.high):
                body.append(f'<line class="ci{cls}" x1="{_n(x(end))}" y1="{_n(cy - 6)}" '
                            f'x2="{_n(x(end))}" y2="{_n(cy + 6)}"/>')
        if r.value is not None:
            span = (f" (interval {fmt(r.low)} to {fmt(r.high)})"
                    if r.low is not None and r.high is not None else "")
            body.append(f'<circle class="point{cls}" cx="{_n(x(r.value))}" cy="{_n(cy)}" '
                        f'r="5">{_tip(f"{name}: {fmt(r.value)}{span}")}</circle>')
        else:
            body.append(_text(left + 4, cy + 4, "no figure", "muted"))
    return _svg(chart_id, (width, height), title, desc, body)


def heatmap(chart_id: str, title: str, desc: str, *, rows: Sequence[str], columns: Sequence[str],
            cells: Mapping[tuple[int, int], float], fmt: Fmt = number) -> Markup:
    """A grid of rows x columns (e.g. weekday x hour); each cell shaded by its value over the
    largest (classes q0..q5; q0 is no value or zero), its figure in its title."""
    cell, left, top = 22.0, 44.0, 22.0
    width = left + cell * max(len(columns), 1) + 4
    height = top + cell * max(len(rows), 1) + 4
    top_value = max((v for v in cells.values() if math.isfinite(v)), default=0.0)
    body = []
    for j, col in enumerate(columns):
        if j % 3 == 0:
            body.append(_text(left + j * cell + cell / 2, top - 7, short(col, 4), "tick mid"))
    for i, name in enumerate(rows):
        body.append(_text(left - 6, top + i * cell + cell / 2 + 4, short(name, 5), "tick end"))
        for j, col in enumerate(columns):
            v = cells.get((i, j), 0.0)
            shade = 0 if top_value <= 0 or v <= 0 else min(
                SHADES - 1, 1 + int((v / top_value) * (SHADES - 1) - 1e-9))
            body.append(f'<rect class="cell q{shade}" x="{_n(left + j * cell)}" '
                        f'y="{_n(top + i * cell)}" width="{_n(cell - 2)}" height="{_n(cell - 2)}">'
                        f"{_tip(f'{name} {col}: {fmt(v)}')}</rect>")
    return _svg(chart_id, (width, height), title, desc, body, extra_class="heat")
