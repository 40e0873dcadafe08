"""Number and table formatting shared by the report's sections (HTML-escaped output)."""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from html import escape
from typing import Any

DASH = "\u2013"  # shown for a missing number
MINUS = "\u2212"


def num(x: Any, digits: int = 4) -> str:
    """A number for humans: 4 significant digits, thousands separated; ``DASH`` for none."""
    if isinstance(x, bool) or not isinstance(x, int | float) or not math.isfinite(x):
        return DASH
    if isinstance(x, int):
        return f"{x:,}"
    if abs(x) >= 10_000:
        return f"{x:,.0f}"
    return f"{x:.{digits}g}"


def signed(x: Any) -> str:
    text = num(x)
    return f"+{text}" if isinstance(x, int | float) and x > 0 else text


def pct(x: Any, digits: int = 1) -> str:
    if isinstance(x, bool) or not isinstance(x, int | float) or not math.isfinite(x):
        return DASH
    return f"{x:.{digits}%}"


def interval(lower: Any, upper: Any) -> str:
    lo = f"{MINUS}\u221e" if lower is None else signed(lower)
    hi = "+\u221e" if upper is None else signed(upper)
    return f"[{lo}, {hi}]"


def table(
    headers: Sequence[str],
    rows: Iterable[Sequence[str]],
    classes: Sequence[str] | None = None,
    raw: bool = False,
) -> str:
    """An HTML table; cells are escaped unless ``raw`` (then they are trusted markup)."""
    head = "".join(f"<th>{escape(h)}</th>" for h in headers)
    body = []
    for i, row in enumerate(rows):
        cls = f' class="{classes[i]}"' if classes and classes[i] else ""
        cells = "".join(f"<td>{c if raw else escape(c)}</td>" for c in row)
        body.append(f"<tr{cls}>{cells}</tr>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def chip(text: str, cls: str) -> str:
    return f'<span class="chip {escape(cls)}">{escape(text)}</span>'


def legend(items: Sequence[tuple[str, str]]) -> str:
    """A row of colour keys: (css class, text)."""
    keys = "".join(
        f'<span class="key"><i class="swatch {escape(cls)}"></i>{escape(text)}</span>'
        for cls, text in items
    )
    return f'<div class="legend">{keys}</div>'


def slug(text: str) -> str:
    """An HTML id fragment: ``kpi.converted`` -> ``kpi-converted``."""
    return "".join(c if c.isalnum() else "-" for c in text.lower())
