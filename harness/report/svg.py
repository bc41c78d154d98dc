"""Hand-made SVG charts for the report: axes (linear or log), dots, lines, bars, legends.

Why not a plotting library: matplotlib is not installed in the harness's environment, and a few
axes, dots, lines and bars need none. The output is plain inline SVG (no scripts, no fonts or
images to fetch), so the page that holds it opens offline.
"""

from __future__ import annotations

import html
import math
from collections.abc import Sequence

#: tab10, then tab20's lighter half: a line per cell stays distinguishable up to twenty cells
COLORS = (
    "#4c72b0",
    "#dd8452",
    "#55a868",
    "#c44e52",
    "#8172b3",
    "#937860",
    "#da8bc3",
    "#8c8c8c",
    "#ccb974",
    "#64b5cd",
    "#1f3f7a",
    "#a0522d",
    "#2e7d32",
    "#8b1a1a",
    "#4b3b8f",
    "#5d4037",
    "#ad1457",
    "#424242",
    "#827717",
    "#00838f",
)


def _overlap(a: tuple[float, float, float, float], b: tuple[float, float, float, float]) -> bool:
    return a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]


def ticks(lo: float, hi: float, n: int = 5) -> list[float]:
    """Round linear ticks covering [lo, hi]."""
    if not math.isfinite(lo) or not math.isfinite(hi):
        lo, hi = 0.0, 1.0
    if hi - lo < 1e-12:
        lo, hi = lo - (abs(lo) * 0.1 or 1.0), hi + (abs(hi) * 0.1 or 1.0)
    raw = (hi - lo) / n
    step = 10 ** math.floor(math.log10(raw))
    step *= next(m for m in (1, 2, 2.5, 5, 10) if raw <= step * m)
    first = math.floor(lo / step) * step
    out, value = [], first
    while value < hi + step * 0.999:
        out.append(round(value, 12))
        value += step
    return out if len(out) > 1 else [first, first + step]


def log_ticks(lo: float, hi: float) -> list[float]:
    """1-2-5 ticks per decade (decades only over more than three) from the last at or below lo to
    the first at or above hi; lo and hi must be positive."""
    lo, hi = (lo, hi) if lo <= hi else (hi, lo)
    low, high = math.floor(math.log10(lo) + 1e-9), math.ceil(math.log10(hi) - 1e-9)
    if high <= low:
        high = low + 1
    mults = (1,) if high - low > 3 else (1, 2, 5)
    every = [round(m * 10.0**e, 12) for e in range(low, high + 1) for m in mults]
    below = [t for t in every if t <= lo * (1 + 1e-9)]
    above = [t for t in every if t >= hi * (1 - 1e-9)]
    start, end = (below[-1] if below else every[0]), (above[0] if above else every[-1])
    return [t for t in every if start <= t <= end]


def spans_decade(values: Sequence[float], factor: float = 10.0) -> bool:
    """True when positive values span `factor` or more (a log axis reads them better)."""
    positive = [v for v in values if v > 0]
    return bool(positive) and min(positive) * factor <= max(positive)


def limits(values: Sequence[float], pad: float = 0.05, zero: bool = False) -> tuple[float, float]:
    lo, hi = min(values), max(values)
    if zero:
        lo, hi = min(lo, 0.0), max(hi, 0.0)
    span = (hi - lo) or abs(hi) or 1.0
    return (lo if zero and lo == 0 else lo - span * pad, hi + span * pad)


def _label(value: float) -> str:
    return f"{value:g}" if abs(value) < 1e6 else f"{value:.3g}"


class Chart:
    """One chart: a plot area with numeric y (linear or log) and numeric (linear or log) or
    categorical x, in viewBox units. `legend_width` reserves a column at the right for
    `side_legend` (a legend per line, when lines are many)."""

    def __init__(
        self,
        title: str,
        xlabel: str,
        ylabel: str,
        ylim: tuple[float, float],
        xlim: tuple[float, float] | None = None,
        categories: Sequence[str] = (),
        width: int = 760,
        height: int = 420,
        bottom: int = 70,
        xlog: bool = False,
        ylog: bool = False,
        xticks: Sequence[float] | None = None,
        legend_width: int = 0,
        top: int = 58,
    ) -> None:
        self.title, self.width, self.height = title, width + legend_width, height
        self.left, self.right, self.top, self.bottom = 78, 24 + legend_width, top, bottom
        self.xlog, self.ylog = xlog, ylog
        self.yticks = log_ticks(*ylim) if ylog else ticks(*ylim)
        self.categories = list(categories)
        self.xends: tuple[float, float] | None = None  # the x axis' ends where they are not its first and last ticks
        if xlim is None:
            self.xticks: list[float] = []
        elif xlog:
            self.xticks = sorted(set(xticks)) if xticks else log_ticks(*xlim)
            # a little room either side of the first and last points
            self.xends = (min(xlim[0], self.xticks[0]) / 1.25, max(xlim[1], self.xticks[-1]) * 1.25)
        else:
            self.xticks = sorted(set(xticks)) if xticks else ticks(*xlim)
            if xticks:
                self.xends = limits([*xlim, *self.xticks], pad=0.05)
        self.parts: list[str] = []
        self._axes(xlabel, ylabel)

    # -- coordinates ---------------------------------------------------------------------------

    def sx(self, x: float) -> float:
        span = self.width - self.left - self.right
        if self.categories:
            return self.left + span * (x + 0.5) / len(self.categories)
        if self.xlog:
            lo, hi = self.xends or (self.xticks[0], self.xticks[-1])
            return self.left + span * (math.log10(x) - math.log10(lo)) / (math.log10(hi) - math.log10(lo))
        lo, hi = self.xends or (self.xticks[0], self.xticks[-1])
        return self.left + span * (x - lo) / (hi - lo)

    def sy(self, y: float) -> float:
        lo, hi = self.yticks[0], self.yticks[-1]
        height = self.height - self.top - self.bottom
        if self.ylog:
            y = max(y, lo)
            return (
                self.height
                - self.bottom
                - height * (math.log10(y) - math.log10(lo)) / (math.log10(hi) - math.log10(lo))
            )
        return self.height - self.bottom - height * (y - lo) / (hi - lo)

    # -- marks ---------------------------------------------------------------------------------

    def text(
        self,
        x: float,
        y: float,
        words: str,
        size: int = 11,
        anchor: str = "start",
        color: str = "#222",
        rotate: float = 0.0,
        bold: bool = False,
    ) -> None:
        turn = f' transform="rotate({rotate:g} {x:.1f} {y:.1f})"' if rotate else ""
        weight = ' font-weight="bold"' if bold else ""
        self.parts.append(
            f'<text x="{x:.1f}" y="{y:.1f}" font-size="{size}" text-anchor="{anchor}" '
            f'fill="{color}"{weight}{turn}>{html.escape(words)}</text>'
        )

    def line(
        self,
        points: Sequence[tuple[float, float]],
        color: str = "#222",
        width: float = 1.5,
        dash: str = "",
        tip: str = "",
    ) -> None:
        coords = " ".join(f"{self.sx(x):.1f},{self.sy(y):.1f}" for x, y in points)
        dashed = f' stroke-dasharray="{dash}"' if dash else ""
        title = f"<title>{html.escape(tip)}</title>" if tip else ""
        self.parts.append(
            f'<polyline points="{coords}" fill="none" stroke="{color}" '
            f'stroke-width="{width}"{dashed}>{title}</polyline>'
        )

    def dot(
        self, x: float, y: float, color: str, r: float = 4.0, filled: bool = True, tip: str = "", square: bool = False
    ) -> None:
        fill = color if filled else "#fff"
        title = f"<title>{html.escape(tip)}</title>" if tip else ""
        cx, cy = self.sx(x), self.sy(y)
        if square:
            self.parts.append(
                f'<rect x="{cx - r:.1f}" y="{cy - r:.1f}" width="{2 * r:.1f}" height="{2 * r:.1f}" fill="{fill}" '
                f'stroke="{color}" stroke-width="1.5">{title}</rect>'
            )
        else:
            self.parts.append(
                f'<circle cx="{cx:.1f}" cy="{cy:.1f}" r="{r:.1f}" fill="{fill}" stroke="{color}" '
                f'stroke-width="1.5">{title}</circle>'
            )

    def ring(self, x: float, y: float, color: str, r: float = 9.0, tip: str = "") -> None:
        """An open circle around a point (marks one point among others)."""
        title = f"<title>{html.escape(tip)}</title>" if tip else ""
        self.parts.append(
            f'<circle cx="{self.sx(x):.1f}" cy="{self.sy(y):.1f}" r="{r:.1f}" fill="none" stroke="{color}" '
            f'stroke-width="2.5">{title}</circle>'
        )

    def point_labels(self, items: Sequence[tuple[float, float, str]], size: int = 9) -> list[str]:
        """Label points without overlap, in the order given (most important first): each label
        goes right, left, above or below its point, wherever it overlaps no label placed before it,
        no point and no edge of the plot; a label with no free place is left out (its point keeps its
        tooltip). Returns the labels left out."""
        char_w, height = 0.6 * size, size + 2.0
        points = [(self.sx(x), self.sy(y)) for x, y, _ in items]
        taken: list[tuple[float, float, float, float]] = [(px - 5, py - 5, px + 5, py + 5) for px, py in points]
        x_lo, x_hi, y_lo, y_hi = self.left, self.width - self.right, self.top, self.height - self.bottom
        left_out = []
        for (px, py), (_, _, words) in zip(points, items):
            w = len(words) * char_w
            gap = 11  # clear of a ring around the point (Chart.ring)
            options = (  # (box left, box top, text x, text anchor)
                (px + gap, py - height / 2, px + gap, "start"),
                (px - gap - w, py - height / 2, px - gap, "end"),
                (px - w / 2, py - gap - height, px, "middle"),
                (px - w / 2, py + gap, px, "middle"),
            )
            for bx, by, tx, anchor in options:
                box = (bx, by, bx + w, by + height)
                inside = box[0] >= x_lo and box[2] <= x_hi and box[1] >= y_lo and box[3] <= y_hi
                if inside and not any(_overlap(box, other) for other in taken):
                    taken.append(box)
                    self.text(tx, by + height - 2, words, size=size, anchor=anchor, color="#444")
                    break
            else:
                left_out.append(words)
        return left_out

    def bar(
        self,
        index: int,
        y0: float,
        y1: float,
        color: str,
        tip: str,
        share: float = 0.6,
        offset: float = 0.0,
        outline: str = "",
    ) -> None:
        """A bar in category `index`, `share` of the slot wide, shifted by `offset` slots."""
        slot = (self.width - self.left - self.right) / len(self.categories)
        x = self.sx(index) + slot * offset - slot * share / 2
        top, bottom = min(self.sy(y0), self.sy(y1)), max(self.sy(y0), self.sy(y1))
        stroke = f' stroke="{outline}" stroke-width="0.8"' if outline else ""
        self.parts.append(
            f'<rect x="{x:.1f}" y="{top:.1f}" width="{slot * share:.1f}" height="{max(bottom - top, 0.5):.1f}" '
            f'fill="{color}"{stroke}><title>{html.escape(tip)}</title></rect>'
        )

    def legend(self, items: Sequence[tuple[str, str]]) -> None:
        """Swatches above the plot area, in rows as wide as it (the last row just above it; give
        the chart a larger `top` where there are several rows)."""
        rows: list[list[tuple[str, str, float]]] = [[]]
        x: float = self.left + 8
        end = self.width - self.right
        for label, color in items:
            step = 24 + 6.2 * len(label)
            if rows[-1] and x + step - 10 > end:
                rows.append([])
                x = self.left + 8
            rows[-1].append((label, color, x))
            x += step
        for n, row in enumerate(rows):
            y = self.top - 18 - 15 * (len(rows) - 1 - n)
            for label, color, x in row:
                self.parts.append(f'<rect x="{x:.1f}" y="{y:.1f}" width="10" height="10" fill="{color}"/>')
                self.text(x + 14, y + 9, label, size=10)

    def side_legend(self, items: Sequence[tuple[str, str]], heading: str = "") -> None:
        """A column of line swatches in the reserved right-hand space, one per item."""
        x = self.width - self.right + 14
        y = self.top + 4
        if heading:
            self.text(x, y + 4, heading, size=10, bold=True)
            y += 16
        for label, color in items:
            self.parts.append(
                f'<line x1="{x:.1f}" y1="{y:.1f}" x2="{x + 16:.1f}" y2="{y:.1f}" stroke="{color}" stroke-width="2.5"/>'
            )
            self.text(x + 21, y + 3.5, label, size=10)
            y += 13

    # -- frame ---------------------------------------------------------------------------------

    def _axes(self, xlabel: str, ylabel: str) -> None:
        x0, x1 = self.left, self.width - self.right
        y0, y1 = self.height - self.bottom, self.top
        self.parts.append(
            f'<rect x="{x0}" y="{y1}" width="{x1 - x0}" height="{y0 - y1}" fill="#fafafa" stroke="#999"/>'
        )
        for t in self.yticks:
            y = self.sy(t)
            self.parts.append(f'<line x1="{x0}" y1="{y:.1f}" x2="{x1}" y2="{y:.1f}" stroke="#e4e4e4"/>')
            self.text(x0 - 6, y + 4, _label(t), size=10, anchor="end")
        for t in self.xticks:
            x = self.sx(t)
            self.parts.append(f'<line x1="{x:.1f}" y1="{y0}" x2="{x:.1f}" y2="{y1}" stroke="#ececec"/>')
            self.text(x, y0 + 16, _label(t), size=10, anchor="middle")
        for i, name in enumerate(self.categories):
            self.text(self.sx(i), y0 + 14, name, size=10, anchor="end", rotate=-25)
        self.text(self.width / 2, 22, self.title, size=14, anchor="middle", bold=True)
        scale = " (log scale)"
        self.text((x0 + x1) / 2, self.height - 8, xlabel + (scale if self.xlog else ""), size=11, anchor="middle")
        self.text(16, (y0 + y1) / 2, ylabel + (scale if self.ylog else ""), size=11, anchor="middle", rotate=-90)

    def render(self) -> str:
        """Inline SVG (HTML5 needs no namespace on it; the report adds one to the .svg files)."""
        head = (
            f'<svg viewBox="0 0 {self.width} {self.height}" width="{self.width}" height="{self.height}" role="img" '
            f'aria-label="{html.escape(self.title)}" font-family="sans-serif">'
        )
        return head + "".join(self.parts) + "</svg>"
