"""The vineyard pest catalog as data: entries, synonyms, misspellings, sampling units and action thresholds.

The catalog is data (``pest_catalog.json`` beside this module) so an agronomist
can correct a threshold without touching code. Every threshold names its source;
a threshold whose ``source`` is null is an informal guide and must be shown as
"no published threshold". ``parse_catalog`` checks the file's shape and says
where it is wrong; the lookups on it (names, thresholds) are in ``vineyard.pests``.
"""

from __future__ import annotations

import datetime as _dt
import re
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from edgespec import EdgespecError, read_json_file

CATALOG_PATH = Path(__file__).with_name("pest_catalog.json")

KINDS = ("insect", "mite", "disease")
METRICS = ("incidence_pct", "per_unit", "defoliation_pct", "severity_pct", "presence")


class PestCatalogError(EdgespecError, ValueError):
    """The pest catalog file is missing or does not match the documented shape."""


def fmt_quantity(value: float, unit: str) -> str:
    """6, "% damaged clusters" -> "6% damaged clusters"; 1.4, "nymphs per leaf" -> "1.4 nymphs per leaf"."""
    num = f"{value:.3g}" if abs(value) < 1000 else f"{value:.0f}"
    return f"{num}{unit}" if unit.startswith("%") else f"{num} {unit}"


# ----------------------------------------------------------------- data classes
@dataclass(frozen=True)
class Threshold:
    """One action threshold: act when the observed ``metric`` passes ``value``."""

    metric: str
    value: float
    unit: str
    source: str | None
    sampling_unit: str = ""
    life_stages: tuple[str, ...] = ()  # empty: any stage
    window: tuple[str, str] | None = None  # ("MM-DD", "MM-DD") inclusive, any year
    window_label: str = ""
    risk: tuple[str, ...] = ()  # empty: any risk class
    comparison: str = ">"  # ">" exceed, ">=" reach
    note: str = ""

    @property
    def published(self) -> bool:
        return self.source is not None

    def in_window(self, day: _dt.date) -> bool:
        if self.window is None:
            return True
        md = f"{day.month:02d}-{day.day:02d}"
        return self.window[0] <= md <= self.window[1]

    def describe(self) -> str:
        when = f" ({self.window_label})" if self.window_label else ""
        return f"{fmt_quantity(self.value, self.unit)}{when}"

    def to_dict(self) -> dict:
        d = asdict(self)
        d["window"] = list(self.window) if self.window else None
        d["life_stages"] = list(self.life_stages)
        d["risk"] = list(self.risk)
        d["published"] = self.published
        return d


@dataclass(frozen=True)
class Member:
    """A species inside a group entry (e.g. vine mealybug inside "mealybugs")."""

    name: str
    scientific_name: str
    names: tuple[str, ...]


@dataclass(frozen=True)
class Pest:
    name: str
    kind: str
    scientific_name: str
    synonyms: tuple[str, ...]
    misspellings: tuple[str, ...]
    life_stages: tuple[str, ...]
    sampling_unit: str
    thresholds: tuple[Threshold, ...]
    members: tuple[Member, ...] = ()
    reportable: bool = False
    notes: str = ""

    @property
    def has_published_threshold(self) -> bool:
        return any(t.published for t in self.thresholds)

    def names(self, *, misspellings: bool = True) -> list[str]:
        """Every surface form of this entry (canonical, synonyms, members, optionally misspellings)."""
        out = [self.name, *self.synonyms]
        for m in self.members:
            out += [m.name, *m.names]
        if misspellings:
            out += list(self.misspellings)
        first: dict[str, str] = {}  # case-insensitive, the first spelling kept (as pests.all_names does)
        for n in out:
            first.setdefault(n.lower(), n)
        return list(first.values())

    def to_dict(self) -> dict:
        return {
            "name": self.name,
            "kind": self.kind,
            "scientific_name": self.scientific_name,
            "synonyms": list(self.synonyms),
            "misspellings": list(self.misspellings),
            "members": [{"name": m.name, "scientific_name": m.scientific_name, "names": list(m.names)} for m in self.members],
            "life_stages": list(self.life_stages),
            "sampling_unit": self.sampling_unit,
            "thresholds": [t.to_dict() for t in self.thresholds],
            "reportable": self.reportable,
            "notes": self.notes,
        }


# ------------------------------------------------------------------- loading
def _str_list(value: Any, where: str) -> tuple[str, ...]:
    if value is None:
        return ()
    if not isinstance(value, list) or not all(isinstance(v, str) and v.strip() for v in value):
        raise PestCatalogError(f"{where}: expected a list of non-empty strings")
    return tuple(v.strip() for v in value)


def _threshold(raw: Any, where: str) -> Threshold:
    if not isinstance(raw, dict):
        raise PestCatalogError(f"{where}: expected an object")
    metric = raw.get("metric")
    if metric not in METRICS:
        raise PestCatalogError(f"{where}.metric: {metric!r} is not one of {', '.join(METRICS)}")
    value = raw.get("value")
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
        raise PestCatalogError(f"{where}.value: expected a number >= 0, got {value!r}")
    source = raw.get("source")
    if source is not None and (not isinstance(source, str) or not source.strip()):
        raise PestCatalogError(f"{where}.source: expected a citation string or null")
    window = raw.get("window")
    if window is not None:
        ok = isinstance(window, list) and len(window) == 2 and all(isinstance(w, str) and re.fullmatch(r"\d\d-\d\d", w) for w in window)
        if not ok or window[0] > window[1]:
            raise PestCatalogError(f"{where}.window: expected [\"MM-DD\", \"MM-DD\"] in order, got {window!r}")
        for w in window:
            try:
                _dt.date(2000, int(w[:2]), int(w[3:]))
            except ValueError:
                raise PestCatalogError(f"{where}.window: {w!r} is not a calendar day") from None
        window = (window[0], window[1])
    comparison = raw.get("comparison", ">")
    if comparison not in (">", ">="):
        raise PestCatalogError(f"{where}.comparison: expected '>' or '>=', got {comparison!r}")
    return Threshold(
        metric=metric,
        value=float(value),
        unit=str(raw.get("unit") or metric),
        source=source.strip() if source else None,
        sampling_unit=str(raw.get("sampling_unit") or ""),
        life_stages=tuple(s.lower() for s in _str_list(raw.get("life_stages"), f"{where}.life_stages")),
        window=window,
        window_label=str(raw.get("window_label") or ""),
        risk=tuple(s.lower() for s in _str_list(raw.get("risk"), f"{where}.risk")),
        comparison=comparison,
        note=str(raw.get("note") or ""),
    )


def parse_catalog(data: Any) -> dict[str, Pest]:
    """Validate catalog JSON (already parsed) into ``{canonical name: Pest}``."""
    if not isinstance(data, dict) or not isinstance(data.get("pests"), list):
        raise PestCatalogError("pest catalog: expected an object with a 'pests' list")
    out: dict[str, Pest] = {}
    for i, raw in enumerate(data["pests"]):
        where = f"pests[{i}]"
        if not isinstance(raw, dict):
            raise PestCatalogError(f"{where}: expected an object")
        name = raw.get("name")
        if not isinstance(name, str) or not name.strip():
            raise PestCatalogError(f"{where}.name: required")
        where = f"pests[{i}] ({name})"
        kind = raw.get("kind")
        if kind not in KINDS:
            raise PestCatalogError(f"{where}.kind: {kind!r} is not one of {', '.join(KINDS)}")
        thresholds = raw.get("thresholds") or []
        if not isinstance(thresholds, list):
            raise PestCatalogError(f"{where}.thresholds: expected a list")
        members = []
        for j, m in enumerate(raw.get("members") or []):
            if not isinstance(m, dict) or not isinstance(m.get("name"), str):
                raise PestCatalogError(f"{where}.members[{j}]: expected an object with a name")
            members.append(Member(m["name"], str(m.get("scientific_name") or ""), _str_list(m.get("names"), f"{where}.members[{j}].names")))
        pest = Pest(
            name=name.strip(),
            kind=kind,
            scientific_name=str(raw.get("scientific_name") or ""),
            synonyms=_str_list(raw.get("synonyms"), f"{where}.synonyms"),
            misspellings=_str_list(raw.get("misspellings"), f"{where}.misspellings"),
            life_stages=_str_list(raw.get("life_stages"), f"{where}.life_stages"),
            sampling_unit=str(raw.get("sampling_unit") or ""),
            thresholds=tuple(_threshold(t, f"{where}.thresholds[{k}]") for k, t in enumerate(thresholds)),
            members=tuple(members),
            reportable=bool(raw.get("reportable", False)),
            notes=str(raw.get("notes") or ""),
        )
        if pest.name in out:
            raise PestCatalogError(f"{where}: duplicate pest name")
        out[pest.name] = pest
    return out


def load_catalog(path: str | Path = CATALOG_PATH) -> dict[str, Pest]:
    return parse_catalog(read_json_file(path, PestCatalogError))


PEST_CATALOG: dict[str, Pest] = load_catalog()
