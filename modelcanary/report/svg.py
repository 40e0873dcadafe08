"""Small inline-SVG charts: lines, bands, reference lines, bars. No JavaScript, no fonts.

A :class:`Chart` maps data coordinates to pixels and collects SVG elements; styling is
by CSS class (the report's stylesheet defines them), so a chart is plain markup that
prints, scales and opens offline. Values outside the y range are clipped at the plot
edge, and an unbounded side of a band (``None``) is drawn to the edge, which is how an
anytime-valid interval with no information on one side should look.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from html import escape

Formatter = Callable[[float], str]


def nice_step(span: float, count: int) -> float:
    """A round tick step (1, 2, 2.5 or 5 times a power of ten) giving about ``count`` ticks."""
    if span <= 0 or not math.isfinite(span):
        return 1.0
    raw = span / max(count, 1)
    power = 10.0 ** math.floor(math.log10(raw))
    for factor in (1.0, 2.0, 2.5, 5.0, 10.0):
        if raw <= factor * power:
            return factor * power
    return 10.0 * power


def ticks(lo: float, hi: float, count: int = 5) -> list[float]:
    """Round values within [lo, hi]."""
    step = nice_step(hi - lo, count)
    first = math.ceil(lo / step - 1e-9) * step
    out = []
    value = first
    while value <= hi + step * 1e-9:
        out.append(0.0 if abs(value) < step * 1e-9 else value)
        value += step
    return out


def padded(values: Sequence[float], pad: float = 0.08) -> tuple[float, float]:
    """[min, max] of the values widened by ``pad`` of the span (or by 1 if flat)."""
    finite = [v for v in values if math.isfinite(v)]
    if not finite:
        return 0.0, 1.0
    lo, hi = min(finite), max(finite)
    span = hi - lo
    if span == 0:
        span = abs(hi) * 0.2 or 1.0
        return lo - span / 2, hi + span / 2
    return lo - span * pad, hi + span * pad


def fmt_number(x: float) -> str:
    """Compact tick label: 0.05, 1.5k, 12, -0.003."""
    if x == 0:
        return "0"
    ax = abs(x)
    if ax >= 10_000:
        return f"{x / 1000:.0f}k"
    if ax >= 1000:
        return f"{x / 1000:.1f}k".replace(".0k", "k")
    if ax >= 10:
        return f"{x:.0f}"
    if ax >= 1:
        return f"{x:.2g}" if ax < 10 else f"{x:.0f}"
    return f"{x:.2g}"


def fmt_clock(seconds: float) -> str:
    """Elapsed time as m:ss (or h:mm:ss)."""
    s = max(round(seconds), 0)
    h, rest = divmod(s, 3600)
    m, sec = divmod(rest, 60)
    return f"{h}:{m:02d}:{sec:02d}" if h else f"{m}:{sec:02d}"


def time_ticks(lo: float, hi: float, count: int = 6) -> list[float]:
    """Round elapsed times: multiples of 5 s, 10 s, 30 s, 1 min, 5 min ..."""
    span = max(hi - lo, 1.0)
    for step in (1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 14400):
        if span / step <= count:
            break
    first = math.ceil(lo / step) * step
    return [float(v) for v in range(int(first), int(hi) + 1, step)]


class Chart:
    """One x/y chart; add marks, then :meth:`render`."""

    def __init__(
        self,
        chart_id: str,
        x_range: tuple[float, float],
        y_range: tuple[float, float],
        width: int = 900,
        height: int = 230,
        x_format: Formatter = fmt_clock,
        y_format: Formatter = fmt_number,
        x_label: str = "time since the rollout started (m:ss)",
        y_label: str = "",
        time_axis: bool = True,
    ) -> None:
        self.id = chart_id
        self.width, self.height = width, height
        self.left, self.right, self.top, self.bottom = 56, 12, 14, 40
        x0, x1 = x_range
        self.x0, self.x1 = (x0, x1) if x1 > x0 else (x0, x0 + 1.0)
        y0, y1 = y_range
        self.y0, self.y1 = (y0, y1) if y1 > y0 else (y0 - 1.0, y0 + 1.0)
        self.x_format, self.y_format = x_format, y_format
        self.x_label, self.y_label = x_label, y_label
        self.time_axis = time_axis
        self._marks: list[str] = []
        self._labels: list[str] = []
        self._vlabel_rows: list[float] = []  # x of the last label in each row

    # -- coordinates ----------------------------------------------------------------
    @property
    def plot_width(self) -> float:
        return self.width - self.left - self.right

    @property
    def plot_height(self) -> float:
        return self.height - self.top - self.bottom

    def sx(self, x: float) -> float:
        return self.left + (x - self.x0) / (self.x1 - self.x0) * self.plot_width

    def sy(self, y: float) -> float:
        y = min(max(y, self.y0 - (self.y1 - self.y0)), self.y1 + (self.y1 - self.y0))
        return self.top + (1.0 - (y - self.y0) / (self.y1 - self.y0)) * self.plot_height

    def _edge(self, y: float | None, top: bool) -> float:
        if y is None or not math.isfinite(y):
            return self.top if top else self.top + self.plot_height
        return self.sy(y)

    # -- marks ----------------------------------------------------------------------
    def region(self, y_from: float | None, y_to: float | None, cls: str, title: str = "") -> None:
        """A horizontal shaded band between two y values (None: the plot edge)."""
        a, b = self._edge(y_from, top=False), self._edge(y_to, top=True)
        lo, hi = min(a, b), max(a, b)
        tip = f"<title>{escape(title)}</title>" if title else ""
        self._marks.append(
            f'<rect class="{cls}" x="{self.left}" y="{lo:.1f}" width="{self.plot_width:.1f}" '
            f'height="{max(hi - lo, 0):.1f}">{tip}</rect>'
        )

    def band(
        self,
        xs: Sequence[float],
        lows: Sequence[float | None],
        highs: Sequence[float | None],
        cls: str = "band",
    ) -> None:
        """A filled band (an interval over time), stepping at each x."""
        if not xs:
            return
        top = [(self.sx(x), self._edge(h, top=True)) for x, h in zip(xs, highs, strict=True)]
        bottom = [(self.sx(x), self._edge(lo, top=False)) for x, lo in zip(xs, lows, strict=True)]
        if len(xs) == 1:  # a single look: a short bar
            (x, t), (_, b) = top[0], bottom[0]
            self._marks.append(
                f'<rect class="{cls}" x="{x - 3:.1f}" y="{t:.1f}" width="6" '
                f'height="{max(b - t, 0):.1f}"/>'
            )
            return
        points = top + bottom[::-1]
        path = " ".join(f"{x:.1f},{y:.1f}" for x, y in points)
        self._marks.append(f'<polygon class="{cls}" points="{path}"/>')

    def line(self, points: Sequence[tuple[float, float]], cls: str, title: str = "") -> None:
        if not points:
            return
        tip = f"<title>{escape(title)}</title>" if title else ""
        if len(points) == 1:
            x, y = points[0]
            self._marks.append(
                f'<circle class="{cls} point" cx="{self.sx(x):.1f}" cy="{self.sy(y):.1f}" '
                f'r="3">{tip}</circle>'
            )
            return
        path = " ".join(f"{self.sx(x):.1f},{self.sy(y):.1f}" for x, y in points)
        self._marks.append(f'<polyline class="{cls}" points="{path}">{tip}</polyline>')

    def steps(self, points: Sequence[tuple[float, float]], cls: str) -> None:
        """A staircase through the points (the value holds until the next point)."""
        if not points:
            return
        stair: list[tuple[float, float]] = []
        for i, (x, y) in enumerate(points):
            if i:
                stair.append((x, points[i - 1][1]))
            stair.append((x, y))
        stair.append((self.x1, points[-1][1]))
        self.line(stair, cls)

    def dots(self, points: Sequence[tuple[float, float, str, str]], radius: float = 3.5) -> None:
        """Circles with a class and a hover title each: (x, y, cls, title)."""
        for x, y, cls, title in points:
            self._marks.append(
                f'<circle class="{cls}" cx="{self.sx(x):.1f}" cy="{self.sy(y):.1f}" '
                f'r="{radius}"><title>{escape(title)}</title></circle>'
            )

    def hline(self, y: float, cls: str, label: str = "") -> None:
        if not self.y0 <= y <= self.y1:
            return
        py = self.sy(y)
        self._marks.append(
            f'<line class="{cls}" x1="{self.left}" x2="{self.left + self.plot_width:.1f}" '
            f'y1="{py:.1f}" y2="{py:.1f}"/>'
        )
        if label:
            self._labels.append(
                f'<text class="ref-label" x="{self.left + self.plot_width - 4:.1f}" '
                f'y="{py - 4:.1f}" text-anchor="end">{escape(label)}</text>'
            )

    def vline(self, x: float, cls: str, label: str = "") -> None:
        if not self.x0 <= x <= self.x1:
            return
        px = self.sx(x)
        self._marks.append(
            f'<line class="{cls}" x1="{px:.1f}" x2="{px:.1f}" y1="{self.top}" '
            f'y2="{self.top + self.plot_height:.1f}"/>'
        )
        if label:  # labels of close lines go one row lower, so they never overlap
            width = 6.0 * len(label) + 8
            right = self.left + self.plot_width
            flip = px + width > right  # near the right edge: label to the left of the line
            start, end = (px - width, px) if flip else (px, px + width)
            row = next(
                (i for i, last in enumerate(self._vlabel_rows) if start >= last),
                len(self._vlabel_rows),
            )
            if row == len(self._vlabel_rows):
                self._vlabel_rows.append(0.0)
            self._vlabel_rows[row] = end
            x, anchor = (px - 3, "end") if flip else (px + 3, "start")
            self._labels.append(
                f'<text class="step-label" x="{x:.1f}" y="{self.top + 10 + 12 * row}" '
                f'text-anchor="{anchor}">{escape(label)}</text>'
            )

    # -- output ---------------------------------------------------------------------
    def _axes(self) -> str:
        parts = []
        bottom = self.top + self.plot_height
        y_ticks = ticks(self.y0, self.y1, max(int(self.plot_height // 36), 2))
        for y in y_ticks:
            py = self.sy(y)
            parts.append(
                f'<line class="grid" x1="{self.left}" x2="{self.left + self.plot_width:.1f}" '
                f'y1="{py:.1f}" y2="{py:.1f}"/>'
                f'<text class="tick" x="{self.left - 6}" y="{py + 4:.1f}" text-anchor="end">'
                f"{escape(self.y_format(y))}</text>"
            )
        count = max(int(self.plot_width // 80), 2)
        xs = time_ticks(self.x0, self.x1, count) if self.time_axis else ticks(self.x0, self.x1)
        for x in xs:
            px = self.sx(x)
            parts.append(
                f'<line class="axis" x1="{px:.1f}" x2="{px:.1f}" y1="{bottom:.1f}" '
                f'y2="{bottom + 4:.1f}"/>'
                f'<text class="tick" x="{px:.1f}" y="{bottom + 16:.1f}" text-anchor="middle">'
                f"{escape(self.x_format(x))}</text>"
            )
        parts.append(
            f'<line class="axis" x1="{self.left}" x2="{self.left + self.plot_width:.1f}" '
            f'y1="{bottom:.1f}" y2="{bottom:.1f}"/>'
        )
        if self.x_label:
            parts.append(
                f'<text class="axis-label" x="{self.left + self.plot_width / 2:.1f}" '
                f'y="{self.height - 4}" text-anchor="middle">{escape(self.x_label)}</text>'
            )
        if self.y_label:
            parts.append(
                f'<text class="axis-label" transform="rotate(-90)" '
                f'x="{-(self.top + self.plot_height / 2):.1f}" y="12" text-anchor="middle">'
                f"{escape(self.y_label)}</text>"
            )
        return "".join(parts)

    def render(self, description: str = "") -> str:
        clip = f"clip-{self.id}"
        return (
            f'<svg class="chart" id="{escape(self.id)}" viewBox="0 0 {self.width} {self.height}" '
            f'width="{self.width}" height="{self.height}" role="img" '
            f'aria-label="{escape(description)}" xmlns="http://www.w3.org/2000/svg">'
            f'<defs><clipPath id="{clip}"><rect x="{self.left}" y="{self.top}" '
            f'width="{self.plot_width:.1f}" height="{self.plot_height:.1f}"/></clipPath></defs>'
            f"{self._axes()}"
            f'<g clip-path="url(#{clip})">{"".join(self._marks)}</g>'
            f"{''.join(self._labels)}</svg>"
        )


def hbar_chart(
    chart_id: str,
    rows: Sequence[tuple[str, float, float | None, bool]],
    value_label: str,
    width: int = 900,
) -> str:
    """Horizontal bars: (label, value, threshold or None, flagged) per row, top to bottom;
    a flagged bar is drawn as ``bar flagged`` and each threshold as a tick across its row."""
    row_h, left, right, top = 18, 190, 60, 8
    height = top + row_h * len(rows) + 34
    peak = max([v for _, v, _, _ in rows] + [t or 0.0 for _, _, t, _ in rows] + [1e-12])
    scale = (width - left - right) / peak
    parts = []
    for i, (label, value, threshold, flagged) in enumerate(rows):
        y = top + i * row_h
        w = max(value, 0.0) * scale
        cls = "bar flagged" if flagged else "bar"
        parts.append(
            f'<text class="tick" x="{left - 6}" y="{y + 13}" text-anchor="end">'
            f"{escape(label)}</text>"
            f'<rect class="{cls}" x="{left}" y="{y + 3}" width="{w:.1f}" height="{row_h - 6}">'
            f"<title>{escape(label)}: {value:.4g}</title></rect>"
            f'<text class="tick" x="{left + w + 4:.1f}" y="{y + 13}">{value:.3g}</text>'
        )
        if threshold is not None:
            tx = left + threshold * scale
            parts.append(
                f'<line class="threshold" x1="{tx:.1f}" x2="{tx:.1f}" y1="{y + 1}" '
                f'y2="{y + row_h - 1}"/>'
            )
    axis_y = top + row_h * len(rows) + 4
    for x in ticks(0.0, peak, 5):
        px = left + x * scale
        parts.append(
            f'<text class="tick" x="{px:.1f}" y="{axis_y + 12}" text-anchor="middle">'
            f"{escape(fmt_number(x))}</text>"
        )
    parts.append(
        f'<text class="axis-label" x="{left + (width - left - right) / 2:.1f}" '
        f'y="{height - 4}" text-anchor="middle">{escape(value_label)}</text>'
    )
    return (
        f'<svg class="chart" id="{escape(chart_id)}" viewBox="0 0 {width} {height}" '
        f'width="{width}" height="{height}" role="img" aria-label="{escape(value_label)}" '
        f'xmlns="http://www.w3.org/2000/svg">{"".join(parts)}</svg>'
    )
