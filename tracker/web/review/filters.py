"""Presentation helpers of the review page, registered as Jinja filters (see render.py).

They return plain text, which the templates escape, except `when`, which returns a <time>
element built from escaped parts.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from markupsafe import Markup

from tracker.formats import money, rfc3339

NONE = "—"


def when(value: datetime | None) -> Markup | str:
    """A moment in UTC to the second, machine-readable in a <time> element."""
    if value is None:
        return NONE
    utc = value.astimezone(UTC)
    return Markup('<time datetime="{}">{} UTC</time>').format(
        rfc3339(utc), f"{utc:%Y-%m-%d %H:%M:%S}")


def age(since: datetime, now: datetime) -> str:
    """How long from `since` to `now`, in its largest whole unit: "5 h", "3 d", "12 s"."""
    seconds = max(0, int((now - since).total_seconds()))
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if seconds >= size:
            return f"{seconds // size} {unit}"
    return f"{seconds} s"


def measure(value: object) -> str:
    """A reason's measured value or threshold, as text."""
    if isinstance(value, float):
        return f"{value:.3f}".rstrip("0").rstrip(".")
    if isinstance(value, list | tuple):
        return ", ".join(measure(v) for v in value)
    return str(value)


def risk(score: float | None) -> str:
    return NONE if score is None else f"{score:.2f}"


def percent(share: float) -> str:
    return f"{share:.0%}"


def rate(share: float | None) -> str:
    """A share with one decimal (12.5%), or a dash when there is none."""
    return NONE if share is None else f"{share:.1%}"


def figure(n: float | None) -> str:
    """A count that may be fractional (shared credit): 12, 2.5; a dash for None."""
    if n is None:
        return NONE
    return f"{n:,.0f}" if n == int(n) else f"{n:,.2f}"


def counted(n: int, noun: str) -> str:
    """'1 reward', '3 rewards'."""
    return f"{n} {noun}{'' if n == 1 else 's'}"


def short(label: str, kind: str) -> str:
    """A graph label cut to fit beside its dot (device hashes shorter)."""
    limit = 8 if kind == "device" else 14
    return label if len(label) <= limit else label[:limit - 1] + "…"


def calculation(calc: Mapping[str, Any], currency: str, base_currency: str | None) -> str:
    """How the amount came about (tracker.finance.clearance writes these keys), money as money."""
    parts = []
    for key, value in calc.items():
        if value is None:
            continue
        if key == "base" and isinstance(value, int):
            text = money(value, base_currency or currency)
        elif key in ("whole", "share") and isinstance(value, int):
            text = money(value, currency)
        elif key == "credit" and isinstance(value, int | float):
            text = percent(value)
        else:
            text = measure(value)
        parts.append(f"{key.replace('_', ' ')} {text}")
    return ", ".join(parts) or NONE


def calculation_words(calc: Mapping[str, Any], currency: str, base_currency: str | None,
                      rules: Sequence[Mapping[str, Any]] = ()) -> str:
    """The calculation in words: "flat 20.00 USD, rule 1 of 2: referrer on purchase", then
    the rest (credit, share, tiers, caps) as `calculation` writes it."""
    rate, rule = calc.get("rate"), calc.get("rule")
    head = []
    if isinstance(rate, str):
        flat = rate.removesuffix(" flat")
        if flat != rate and flat.lstrip("-").isdigit():
            head.append(f"flat {money(int(flat), currency)}")
        elif isinstance(calc.get("base"), int):
            head.append(f"{rate} of {money(calc['base'], base_currency or currency)}")
        else:
            head.append(rate)
    if isinstance(rule, int) and not isinstance(rule, bool):
        text = f"rule {rule + 1}"
        if 0 <= rule < len(rules):
            text += f" of {len(rules)}"
            what = " on ".join(str(rules[rule][k]) for k in ("beneficiary", "on")
                               if rules[rule].get(k) is not None)
            text += f": {what}" if what else ""
        head.append(text)
    rest = calculation({k: v for k, v in calc.items() if k not in ("rate", "rule", "base")},
                       currency, base_currency)
    return "; ".join(x for x in (", ".join(head), "" if rest == NONE else rest) if x) or NONE


FILTERS: dict[str, Callable[..., Any]] = {
    "calculation_words": calculation_words,
    "money": money, "when": when, "age": age, "measure": measure, "risk": risk,
    "percent": percent, "counted": counted, "short": short, "calculation": calculation,
    "rate": rate, "figure": figure,
}
