"""A block's season per pest against its action threshold, as SVG written on the server.

One small hand-written chart instead of a plotting library: the page needs one
kind of chart, it must work offline and without scripts, and SVG's presentation
attributes keep it within a Content-Security-Policy that forbids inline styles.
Every figure comes from vineyard.pests (``threshold_status``: the metric and the
threshold that applies on that day, window and risk class included).
"""

from __future__ import annotations

import datetime as _dt
from dataclasses import dataclass, field
from xml.sax.saxutils import escape, quoteattr

from vineyard import pests as _pests
from vineyard.fieldnote import FieldNoteError

W, H = 640, 220
LEFT, RIGHT, TOP, BOTTOM = 56, 16, 14, 34
METRIC_LABELS = {"incidence_pct": "% infested", "per_unit": "per unit", "defoliation_pct": "% defoliation",
                 "severity_pct": "% severity", "presence": "present"}


@dataclass
class Point:
    date: _dt.date
    value: float
    threshold: float | None
    status: str          # above | below | unknown
    sighting_id: str


@dataclass
class Series:
    pest: str
    metric: str
    unit: str = ""
    published: bool = False
    source: str | None = None
    points: list[Point] = field(default_factory=list)

    @property
    def above(self) -> int:
        return sum(p.status == "above" for p in self.points)


def season_series(sightings: list[dict], block: str) -> list[Series]:
    """One series per (pest, metric) observed in ``block``, points in date order."""
    out: dict[tuple[str, str], Series] = {}
    for s in sightings:
        if s.get("block") != block or not s.get("date"):
            continue
        try:
            day = _dt.date.fromisoformat(str(s["date"]))
        except ValueError:
            continue
        for o in s.get("observations") or []:
            try:
                ts = _pests.threshold_status(o, day, risk=s.get("risk_class"))
            except FieldNoteError:
                continue
            if ts.metric is not None and ts.observed is not None:
                metric, value, thr = ts.metric, float(ts.observed), ts.threshold
            else:  # no threshold applies: still plot what was seen, without a line to compare with
                figures = _pests.observed_figures(o)
                metric = next((m for m in METRIC_LABELS if m in figures), None)
                if metric is None:
                    continue
                value, thr = figures[metric], None
            name = ts.pest or str(o.get("pest") or "?")
            series = out.setdefault((name, metric), Series(name, metric))
            if thr is not None:
                series.unit, series.published, series.source = thr.unit, thr.published, thr.source
            series.points.append(Point(day, value, thr.value if thr is not None else None, ts.status, str(s.get("id"))))
    for series in out.values():
        series.points.sort(key=lambda p: p.date)
    return sorted(out.values(), key=lambda x: (x.pest, x.metric))


def _fmt(v: float) -> str:
    return f"{v:.0f}" if abs(v) >= 10 or v == int(v) else f"{v:.2g}"


def render_svg(series: Series, *, standalone: bool = False) -> str:
    """The chart of one series: observed values as a line with dots (red above the threshold), the threshold
    as a dashed step line. ``standalone`` adds the XML namespace for serving it as its own image."""
    pts = series.points
    d0, d1 = pts[0].date, pts[-1].date
    span = max((d1 - d0).days, 1)
    ymax = max([p.value for p in pts] + [p.threshold for p in pts if p.threshold is not None] + [1e-9]) * 1.15
    pw, ph = W - LEFT - RIGHT, H - TOP - BOTTOM

    def x(d: _dt.date) -> float:
        return LEFT + (pw * (d - d0).days / span if len(pts) > 1 or span > 1 else pw / 2)

    def y(v: float) -> float:
        return TOP + ph - ph * v / ymax

    label = f"{series.pest}: {METRIC_LABELS.get(series.metric, series.metric)}"
    ns = 'xmlns="http://www.w3.org/2000/svg" ' if standalone else ""
    out = [f'<svg {ns}class="chart" viewBox="0 0 {W} {H}" '
           f'width="{W}" height="{H}" role="img" aria-label={quoteattr(label)} data-pest={quoteattr(series.pest)} '
           f'data-metric={quoteattr(series.metric)}>',
           f"<title>{escape(label)}</title>",
           f'<rect x="{LEFT}" y="{TOP}" width="{pw}" height="{ph}" fill="#fbfaf7" stroke="#c9c3b5"/>']
    for frac in (0.0, 0.5, 1.0):
        v = ymax / 1.15 * frac
        out.append(f'<line x1="{LEFT}" x2="{LEFT + pw}" y1="{y(v):.1f}" y2="{y(v):.1f}" stroke="#e4dfd3"/>')
        out.append(f'<text x="{LEFT - 6}" y="{y(v) + 4:.1f}" text-anchor="end" font-size="11" fill="#555">'
                   f"{escape(_fmt(v))}</text>")
    for d, anchor in ((d0, "start"), (d1, "end")) if d1 != d0 else ((d0, "middle"),):
        out.append(f'<text x="{x(d):.1f}" y="{H - 12}" text-anchor="{anchor}" font-size="11" fill="#555">{d.isoformat()}</text>')
    thr = [(p.date, p.threshold) for p in pts if p.threshold is not None]
    if thr:
        steps = []
        for i, (d, v) in enumerate(thr):
            if i:
                steps.append(f"{x(d):.1f},{y(thr[i - 1][1]):.1f}")
            steps.append(f"{x(d):.1f},{y(v):.1f}")
        if len(thr) == 1:
            steps = [f"{LEFT},{y(thr[0][1]):.1f}", f"{LEFT + pw},{y(thr[0][1]):.1f}"]
        kind = "published threshold" if series.published else "informal guide"
        out.append(f'<polyline class="threshold" points="{" ".join(steps)}" fill="none" stroke="#b3261e" '
                   f'stroke-width="1.5" stroke-dasharray="6 4"><title>{escape(kind)}: {escape(_fmt(thr[-1][1]))} '
                   f'{escape(series.unit)}</title></polyline>')
    line = " ".join(f"{x(p.date):.1f},{y(p.value):.1f}" for p in pts)
    out.append(f'<polyline class="series" data-points="{len(pts)}" points="{line}" fill="none" stroke="#2f5d3a" '
               'stroke-width="2"/>')
    for p in pts:
        colour = "#b3261e" if p.status == "above" else "#2f5d3a" if p.status == "below" else "#777"
        out.append(f'<circle class="point {p.status}" cx="{x(p.date):.1f}" cy="{y(p.value):.1f}" r="4" fill="{colour}">'
                   f"<title>{p.date.isoformat()}: {escape(_fmt(p.value))}"
                   f"{' (threshold ' + escape(_fmt(p.threshold)) + ')' if p.threshold is not None else ''}</title></circle>")
    out.append("</svg>")
    return "\n".join(out)
