"""Line charts as inline SVG: no plotting library, no script, nothing fetched.

:func:`line_chart` draws several series on shared axes with "nice" ticks (1, 2, 5 × 10ⁿ),
solid or dashed lines, a legend under the axes, and a marker for each point of a series too
short to be a line. Missing values (``None``, NaN, ±inf) break a line instead of bending it
to zero. The SVG is sized in CSS pixels and scales with its container (``viewBox``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from html import escape

WIDTH, HEIGHT = 520, 280
#: Legend entries per row, and the height of a row, under the axes.
LEGEND_COLUMNS, LEGEND_ROW, LEGEND_GAP = 3, 16, 10
MARGIN_LEFT, MARGIN_RIGHT, MARGIN_TOP, MARGIN_BOTTOM = 64, 16, 30, 40
#: Run colours, in order (colour-blind-safe, after Okabe and Ito).
PALETTE = (
    "#0072b2", "#d55e00", "#009e73", "#cc79a7", "#e69f00", "#56b4e9", "#000000", "#f0e442",
)  # fmt: skip


@dataclass
class LegendEntry:
    """One legend item: a short line in ``color`` (dashed or not) and its label."""

    label: str
    color: str
    dashed: bool = False


@dataclass
class Series:
    """One line: a label for the legend, ``(x, y)`` points, a colour, solid or dashed."""

    label: str
    points: Sequence[tuple[float, float | None]]
    color: str
    dashed: bool = False


def nice_ticks(low: float, high: float, count: int = 5) -> list[float]:
    """About ``count`` round tick values covering ``[low, high]``. Values equal but for
    float rounding (a constant metric averaged over windows of different sizes) count as one
    value, which gets an axis around it."""
    if not (math.isfinite(low) and math.isfinite(high)):
        return []
    if high - low <= 1e-9 * max(abs(low), abs(high), 1e-300):
        span = abs(low) or 1.0
        low, high = low - span / 2, high + span / 2
    raw = (high - low) / max(count - 1, 1)
    magnitude = 10 ** math.floor(math.log10(raw))
    step = next(m * magnitude for m in (1, 2, 2.5, 5, 10) if m * magnitude >= raw)
    first = math.floor(low / step) * step
    ticks = []
    for index in range(2 * count + 2):  # bounded: at most count + 2 are ever needed
        value = first + index * step
        ticks.append(0.0 if abs(value) < step * 1e-9 else value)
        if value >= high - step * 1e-9:
            break
    return ticks


def tick_label(value: float) -> str:
    """Short labels: ``0.001``, ``1e-05``, ``2.5``, ``1,200``."""
    if value == 0:
        return "0"
    size = abs(value)
    if size >= 1e5 or size < 1e-3:
        return f"{value:.0e}"
    if size >= 100:
        return f"{value:,.0f}"
    return f"{value:.4g}"


def _finite(value: float | None) -> bool:
    return value is not None and math.isfinite(value)


def line_chart(
    title: str,
    series: Sequence[Series],
    x_label: str = "step",
    y_label: str = "",
    chart_id: str = "",
    legend: Sequence[LegendEntry] | None = None,
) -> str:
    """The chart as an ``<svg>`` element (``class="chart"``), its legend in rows under the
    axes (by default one entry per series that has a point); a chart with no finite point says
    so instead of drawing empty axes."""
    points = [(x, y) for s in series for x, y in s.points if _finite(y) and _finite(x)]
    if legend is None:
        legend = [
            LegendEntry(s.label, s.color, s.dashed)
            for s in series
            if any(_finite(v) for _, v in s.points)
        ]
    rows = math.ceil(len(legend) / LEGEND_COLUMNS)
    height = HEIGHT + rows * LEGEND_ROW + (LEGEND_GAP if rows else 0)
    head = (
        f'<svg class="chart" id="{escape(chart_id)}" role="img" viewBox="0 0 {WIDTH} {height}" '
        f'width="{WIDTH}" height="{height}" xmlns="http://www.w3.org/2000/svg">'
        f"<title>{escape(title)}</title>"
        f'<text x="{MARGIN_LEFT}" y="18" class="chart-title">{escape(title)}</text>'
    )
    if not points:
        return head + f'<text x="{WIDTH / 2}" y="{HEIGHT / 2}" class="empty">no data</text></svg>'
    xs = [x for x, _ in points]
    ys = [y for _, y in points if y is not None]
    x_ticks = nice_ticks(min(xs), max(xs))
    y_ticks = nice_ticks(min(ys), max(ys))
    frame = _Frame(x_ticks[0], x_ticks[-1], y_ticks[0], y_ticks[-1])
    parts = [head, frame.axes(x_ticks, y_ticks, x_label, y_label)]
    for item in series:
        parts.append(frame.line(item))
    parts.append(_legend(legend))
    parts.append("</svg>")
    return "".join(parts)


class _Frame:
    """Data coordinates to SVG pixels inside the plot area."""

    def __init__(self, x0: float, x1: float, y0: float, y1: float) -> None:
        self.x0, self.x1 = x0, x1 if x1 > x0 else x0 + 1
        self.y0, self.y1 = y0, y1 if y1 > y0 else y0 + 1
        self.left, self.right = MARGIN_LEFT, WIDTH - MARGIN_RIGHT
        self.top, self.bottom = MARGIN_TOP, HEIGHT - MARGIN_BOTTOM

    def px(self, x: float) -> float:
        return self.left + (x - self.x0) / (self.x1 - self.x0) * (self.right - self.left)

    def py(self, y: float) -> float:
        return self.bottom - (y - self.y0) / (self.y1 - self.y0) * (self.bottom - self.top)

    def axes(self, x_ticks: list[float], y_ticks: list[float], x_label: str, y_label: str) -> str:
        out = [
            f'<rect x="{self.left}" y="{self.top}" width="{self.right - self.left}" '
            f'height="{self.bottom - self.top}" class="plot"/>'
        ]
        for tick in y_ticks:
            y = self.py(tick)
            out.append(
                f'<line x1="{self.left}" x2="{self.right}" y1="{y:.1f}" y2="{y:.1f}" '
                f'class="grid"/><text x="{self.left - 6}" y="{y + 4:.1f}" class="ytick">'
                f"{tick_label(tick)}</text>"
            )
        for tick in x_ticks:
            x = self.px(tick)
            out.append(
                f'<line x1="{x:.1f}" x2="{x:.1f}" y1="{self.top}" y2="{self.bottom}" '
                f'class="grid"/><text x="{x:.1f}" y="{self.bottom + 16}" class="xtick">'
                f"{tick_label(tick)}</text>"
            )
        out.append(
            f'<text x="{(self.left + self.right) / 2}" y="{HEIGHT - 6}" class="xlabel">'
            f"{escape(x_label)}</text>"
        )
        if y_label:
            middle = (self.top + self.bottom) / 2
            out.append(
                f'<text x="14" y="{middle}" class="ylabel" transform="rotate(-90 14 {middle})">'
                f"{escape(y_label)}</text>"
            )
        return "".join(out)

    def line(self, series: Series) -> str:
        """A polyline per unbroken stretch of finite points; a lone point gets a marker."""
        stretches: list[list[tuple[float, float]]] = [[]]
        for x, y in series.points:
            if _finite(y) and _finite(x):
                assert y is not None
                stretches[-1].append((self.px(x), self.py(y)))
            elif stretches[-1]:
                stretches.append([])
        stretches = [thin(stretch) for stretch in stretches]
        dash = ' stroke-dasharray="6 4"' if series.dashed else ""
        out = []
        for stretch in stretches:
            if len(stretch) == 1:
                ((x, y),) = stretch
                out.append(f'<circle cx="{x:.1f}" cy="{y:.1f}" r="3.5" fill="{series.color}"/>')
            elif stretch:
                coords = " ".join(f"{x:.1f},{y:.1f}" for x, y in stretch)
                out.append(
                    f'<polyline points="{coords}" fill="none" stroke="{series.color}" '
                    f'stroke-width="2"{dash} class="series"/>'
                )
        return "".join(out)


def thin(pixels: list[tuple[float, float]]) -> list[tuple[float, float]]:
    """A long line as at most four points per pixel column (the first, lowest, highest and
    last in it, in order): the same picture, a page that stays small for a 100k-step run."""
    if len(pixels) <= 4 * (WIDTH - MARGIN_LEFT - MARGIN_RIGHT):
        return pixels
    kept: list[tuple[float, float]] = []
    column: list[tuple[float, float]] = []
    for point in pixels:
        if column and int(point[0]) != int(column[0][0]):
            kept += _column_extremes(column)
            column = []
        column.append(point)
    return kept + _column_extremes(column)


def _column_extremes(column: list[tuple[float, float]]) -> list[tuple[float, float]]:
    chosen = {0, len(column) - 1}
    chosen.add(min(range(len(column)), key=lambda i: column[i][1]))
    chosen.add(max(range(len(column)), key=lambda i: column[i][1]))
    return [column[i] for i in sorted(chosen)]


def _legend(entries: Sequence[LegendEntry]) -> str:
    """Entries in rows of :data:`LEGEND_COLUMNS` under the x axis label."""
    out = []
    column_width = (WIDTH - MARGIN_LEFT) / LEGEND_COLUMNS
    for index, entry in enumerate(entries):
        row, column = divmod(index, LEGEND_COLUMNS)
        x = MARGIN_LEFT + column * column_width
        y = HEIGHT + LEGEND_GAP + row * LEGEND_ROW
        dash = ' stroke-dasharray="6 4"' if entry.dashed else ""
        label = entry.label if len(entry.label) <= 26 else entry.label[:25] + "…"
        out.append(
            f'<line x1="{x:.1f}" x2="{x + 22:.1f}" y1="{y - 4}" y2="{y - 4}" '
            f'stroke="{entry.color}" stroke-width="2"{dash}/>'
            f'<text x="{x + 28:.1f}" y="{y}" class="legend">{escape(label)}</text>'
        )
    return "".join(out)
