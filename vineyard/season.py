"""A block's season at a glance: per pest, the weekly figure against the catalog's threshold.

Pure functions over field notes (the shape ``fieldnote.py`` validates). Observations of
one pest in one ISO week are pooled (infested and counted units summed over units
sampled, the highest severity/defoliation kept), then compared with the threshold
that applies on the week's last scouting day and the block's risk class, by the
same rule as a report's threshold line (``pests.threshold_status``). So a week the
chart marks above is a week a report would call above.
"""

from __future__ import annotations

import datetime as _dt
from dataclasses import dataclass, field
from typing import Any, Iterable

from .pest_catalog import Threshold
from .pests import lookup, normalize, observed_figures, plural, singular, threshold_status

# Which figure a week shows when no threshold applies to it: the threshold's metric wins.
_FALLBACK_METRICS = ("incidence_pct", "per_unit", "severity_pct", "defoliation_pct")
METRIC_LABEL = {
    "incidence_pct": "% of {units} infested",
    "per_unit": "per {unit} sampled",
    "severity_pct": "% severity",
    "defoliation_pct": "% defoliation",
}


def metric_label(metric: str, unit: str = "") -> str:
    """incidence_pct, "clusters" -> "% of clusters infested" (the unit sampled, else "units")."""
    unit = normalize(unit)
    return METRIC_LABEL.get(metric, metric).format(units=plural(singular(unit)) if unit else "units",
                                                   unit=singular(unit) if unit else "unit")


@dataclass(frozen=True)
class Week:
    """One pest in one ISO week of one block."""

    year: int
    week: int
    start: str  # the week's Monday, ISO date
    last_date: str  # the last scouting day in the week
    sampled: int | float
    unit: str  # the unit sampled (clusters, leaves, ...), as the week's last note wrote it
    metric: str | None  # incidence_pct, per_unit, ... (None: nothing measurable)
    observed: float | None
    threshold: Threshold | None  # the one that applies that week, if any
    status: str  # "above" | "below" | "unknown"
    reason: str
    sightings: tuple[str, ...] = ()  # ids of the sightings pooled (when the notes carry them)

    @property
    def label(self) -> str:
        return f"W{self.week:02d}"

    @property
    def above(self) -> bool:
        return self.status == "above"


@dataclass
class PestSeason:
    pest: str  # catalog name, or the name as written when the catalog does not know it
    in_catalog: bool
    weeks: list[Week] = field(default_factory=list)

    @property
    def metric(self) -> str | None:
        """The figure the series shows (the most common one across its weeks)."""
        metrics = [w.metric for w in self.weeks if w.metric]
        return max(dict.fromkeys(metrics), key=metrics.count) if metrics else None

    @property
    def label(self) -> str:
        """What the series shows, e.g. "% of clusters infested"."""
        metric = self.metric
        if metric is None:
            return ""
        units = [w.unit for w in self.weeks if w.metric == metric and w.unit]
        return metric_label(metric, units[-1] if units else "")

    @property
    def latest(self) -> Week | None:
        return self.weeks[-1] if self.weeks else None

    @property
    def weeks_above(self) -> list[Week]:
        return [w for w in self.weeks if w.above]


@dataclass
class BlockSeason:
    block: str
    year: int | None
    risk_class: str | None
    pests: list[PestSeason] = field(default_factory=list)

    @property
    def alerts(self) -> list[PestSeason]:
        """Pests whose latest scouted week is above its threshold: what needs acting on now."""
        return [p for p in self.pests if p.latest is not None and p.latest.above]


def _num(v: Any) -> float | None:
    return float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else None


def _pool(observations: list[dict]) -> dict:
    """One observation standing for a week's observations of one pest (same unit as the last one)."""
    last = observations[-1]
    unit = normalize(str(last.get("unit") or ""))
    same = [o for o in observations if normalize(str(o.get("unit") or "")) == unit]
    out: dict[str, Any] = {k: last[k] for k in ("pest", "life_stage", "unit") if k in last}
    sampled = sum(_num(o.get("sampled")) or 0 for o in same)
    if sampled:
        out["sampled"] = sampled
    for key in ("infested", "count"):
        values = [_num(o.get(key)) for o in same if _num(o.get("sampled"))]
        if values and all(v is not None for v in values):
            out[key] = sum(values)
    for key in ("severity_pct", "defoliation_pct"):
        values = [v for v in (_num(o.get(key)) for o in same) if v is not None]
        if values:
            out[key] = max(values)
    return out


def _week(notes: list[dict], pest_obs: list[dict], risk: str | None) -> Week:
    pooled = _pool(pest_obs)
    last_date = max(n["date"] for n in notes)
    day = _dt.date.fromisoformat(last_date)
    iso = day.isocalendar()
    start = _dt.date.fromisocalendar(iso[0], iso[1], 1).isoformat()
    st = threshold_status(pooled, last_date, risk=risk)
    metric, observed = st.metric, st.observed
    if metric is None:  # no threshold applies: still show the figure the week has
        figures = observed_figures(pooled)
        metric = next((m for m in _FALLBACK_METRICS if m in figures), None)
        observed = round(figures[metric], 4) if metric else None
    ids = tuple(str(n["id"]) for n in notes if n.get("id"))
    return Week(iso[0], iso[1], start, last_date, pooled.get("sampled", 0), str(pooled.get("unit") or ""), metric,
                observed, st.threshold,
                st.status, st.reason, ids)


def block_season(notes: Iterable[dict], block: str, *, year: int | None = None) -> BlockSeason:
    """The season of ``block`` (case-insensitive) in ``year`` (default: the year of its latest note).

    ``notes`` are field notes with ``date``, ``block`` and ``observations`` (store sightings
    will do; drafts and old versions should be left out by the caller). The block's risk
    class is the one its latest note gives. Weeks are in date order; a pest appears from
    the first week it was scouted.
    """
    mine = [n for n in notes if str(n.get("block") or "").strip().lower() == block.strip().lower() and n.get("date")]
    if year is None and mine:
        year = max(_dt.date.fromisoformat(n["date"]).year for n in mine)
    mine = sorted((n for n in mine if _dt.date.fromisoformat(n["date"]).year == year), key=lambda n: n["date"])
    risk = next((n.get("risk_class") for n in reversed(mine) if n.get("risk_class")), None)
    season = BlockSeason(block, year, risk)
    # (iso week) -> pest key -> (notes, observations)
    weeks: dict[tuple[int, int], dict[str, tuple[list[dict], list[dict]]]] = {}
    names: dict[str, tuple[str, bool]] = {}
    for n in mine:
        wk = _dt.date.fromisoformat(n["date"]).isocalendar()[:2]
        for o in n.get("observations") or []:
            if not isinstance(o, dict) or not o.get("pest"):
                continue
            entry = lookup(o["pest"])
            key = entry.name if entry else normalize(str(o["pest"]))
            names.setdefault(key, (entry.name if entry else str(o["pest"]).strip(), entry is not None))
            ns, os_ = weeks.setdefault(wk, {}).setdefault(key, ([], []))
            if not ns or ns[-1] is not n:
                ns.append(n)
            os_.append(o)
    by_pest: dict[str, PestSeason] = {}
    for wk in sorted(weeks):
        for key, (ns, os_) in weeks[wk].items():
            name, known = names[key]
            ps = by_pest.setdefault(key, PestSeason(name, known))
            ps.weeks.append(_week(ns, os_, risk))
    # pests needing action first, then the rest by name
    season.pests = sorted(by_pest.values(), key=lambda p: (not (p.latest and p.latest.above), not p.weeks_above,
                                                           p.pest.lower()))
    return season


def blocks_with_alerts(notes: Iterable[dict]) -> list[BlockSeason]:
    """Every block (in its latest year) whose latest scouted week of some pest is above threshold."""
    notes = list(notes)
    blocks = sorted({str(n.get("block")).strip() for n in notes if n.get("block") and n.get("date")}, key=str.lower)
    seen: set[str] = set()
    out = []
    for b in blocks:
        if b.lower() in seen:
            continue
        seen.add(b.lower())
        s = block_season(notes, b)
        if s.alerts:
            out.append(s)
    return out
