"""The vineyard pest catalog: names a scout might type, sampling units and action thresholds.

The catalog is data (``pest_catalog.json`` beside this module) so an agronomist
can correct a threshold without touching code. Every threshold names its source;
a threshold whose ``source`` is null is an informal guide and must be shown as
"no published threshold". The span policy and the fact check derive pest names
(synonyms, misspellings, plurals) and threshold values from here rather than
guessing, which is what lets them tell a correct report from a hallucinated one.
"""

from __future__ import annotations

import datetime as _dt
import difflib
import re
import unicodedata
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Iterable

from edgespec import EdgespecError, read_json_file

from . import FieldNoteError

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
        seen: set[str] = set()
        uniq = []
        for n in out:
            if n.lower() not in seen:
                seen.add(n.lower())
                uniq.append(n)
        return uniq

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


@dataclass
class ThresholdStatus:
    """Where one observation stands against its pest's action threshold, and why."""

    status: str  # "above" | "below" | "unknown"
    pest: str | None
    metric: str | None
    observed: float | None
    threshold: Threshold | None
    published: bool
    reason: str

    def to_dict(self) -> dict:
        return {
            "status": self.status,
            "pest": self.pest,
            "metric": self.metric,
            "observed": self.observed,
            "threshold": self.threshold.to_dict() if self.threshold else None,
            "published": self.published,
            "reason": self.reason,
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


# ------------------------------------------------------------- normalisation
_IRREGULAR_PLURALS = {
    "larva": "larvae", "pupa": "pupae", "colony": "colonies", "leaf": "leaves", "mycelium": "mycelia",
    "conidium": "conidia", "chasmothecium": "chasmothecia", "cleistothecium": "cleistothecia",
    "lanternfly": "lanternflies", "mass": "masses", "gall": "galls", "instar": "instars",
}
_IRREGULAR_SINGULARS = {v: k for k, v in _IRREGULAR_PLURALS.items()}


def normalize(text: str) -> str:
    """NFKC (full-width letters as plain ones), lower case, hyphens/underscores as spaces, punctuation
    dropped, spaces collapsed."""
    t = unicodedata.normalize("NFKC", text).lower().replace("-", " ").replace("_", " ").replace("\u2011", " ")
    t = re.sub(r"[^\w\s]", " ", t)
    return re.sub(r"\s+", " ", t).strip()


def plural(word: str) -> str:
    low = word.lower()
    if low in _IRREGULAR_PLURALS:
        p = _IRREGULAR_PLURALS[low]
        return word[: len(word) - len(low)] + p if word.islower() else p
    if low.endswith(("s", "x", "ch", "sh")):
        return word + "es"
    if low.endswith("y") and len(low) > 1 and low[-2] not in "aeiou":
        return word[:-1] + "ies"
    return word + "s"


def singular(word: str) -> str:
    low = word.lower()
    if low in _IRREGULAR_SINGULARS:
        return _IRREGULAR_SINGULARS[low]
    if low.endswith("ies") and len(low) > 4:
        return word[:-3] + "y"
    if low.endswith(("sses", "xes", "ches", "shes")):
        return word[:-2]
    if low.endswith("s") and not low.endswith(("ss", "us", "is")) and len(low) > 3:
        return word[:-1]
    return word


def number_variants(phrase: str) -> list[str]:
    """The phrase with its last word in singular and plural form (order: as given first)."""
    words = phrase.split(" ")
    last = words[-1]
    out = [phrase]
    for w in (plural(last), singular(last)):
        v = " ".join(words[:-1] + [w])
        if v not in out:
            out.append(v)
    return out


def _build_index(catalog: dict[str, Pest]) -> tuple[dict[str, str], dict[str, tuple[str, str]]]:
    index: dict[str, str] = {}
    members: dict[str, tuple[str, str]] = {}
    for pest in catalog.values():
        forms = pest.names(misspellings=True) + ([pest.scientific_name] if pest.scientific_name else [])
        for form in forms:
            for v in number_variants(normalize(form)):
                index.setdefault(v, pest.name)
        for m in pest.members:
            for form in (m.name, *m.names):
                for v in number_variants(normalize(form)):
                    members.setdefault(v, (pest.name, m.name))
    return index, members


_INDEX, _MEMBER_INDEX = _build_index(PEST_CATALOG)


def lookup(name: Any, catalog: dict[str, Pest] | None = None) -> Pest | None:
    """The catalog entry for ``name`` (case, synonyms, plurals, listed and small misspellings), else None."""
    if not isinstance(name, str):
        return None
    cat = catalog if catalog is not None else PEST_CATALOG
    index = _INDEX if catalog is None else _build_index(cat)[0]
    key = normalize(name)
    if not key:
        return None
    for cand in number_variants(key):
        if cand in index:
            return cat[index[cand]]
    # Unlisted typo: close enough to one known form and clearly closer than to any other entry.
    if len(key) >= 5:
        matches = difflib.get_close_matches(key, list(index), n=3, cutoff=0.86)
        owners = {index[m] for m in matches}
        if len(owners) == 1:
            return cat[owners.pop()]
    return None


def lookup_member(name: Any) -> tuple[Pest, str | None] | None:
    """(entry, species name) where the name identifies one species of a group entry, else (entry, None)."""
    pest = lookup(name)
    if pest is None:
        return None
    key = normalize(name)
    for cand in number_variants(key):
        if cand in _MEMBER_INDEX and _MEMBER_INDEX[cand][0] == pest.name:
            return pest, _MEMBER_INDEX[cand][1]
    return pest, None


@dataclass(frozen=True)
class PestName:
    """A pest name as a scout typed it, checked against the catalog.

    ``status``: "catalog" (the entry's name or one of its species), "synonym" (another name the
    catalog lists), "misspelling" (a listed or near misspelling) or "unknown". ``suggestion`` is the
    catalog name to offer instead: the entry's name for a synonym or misspelling, the nearest
    catalog name (if any is near) for an unknown one.
    """

    typed: str
    status: str
    pest: Pest | None = None
    suggestion: str | None = None

    @property
    def in_catalog(self) -> bool:
        return self.pest is not None

    def describe(self) -> str:
        """One line for the form: what the catalog makes of the name."""
        if self.status == "catalog":
            return f"catalog: {self.pest.name}" if self.pest and normalize(self.typed) != normalize(self.pest.name) else "in the catalog"
        if self.status in ("synonym", "misspelling"):
            return f"{self.status} of {self.suggestion} (the catalog name)"
        near = f"; nearest catalog name: {self.suggestion}" if self.suggestion else ""
        return f"not in the pest catalog{near}"


# How near an unknown name must be to a catalog name to be offered as "nearest" (difflib ratio): measured
# on the held-out names, 0.7 offers "spider mites" for "Pacific spider mite" and nothing for "grape cicada".
NEAR_CUTOFF = 0.7


def check_name(typed: Any) -> PestName:
    """What the catalog makes of a pest name as typed (``PestName``); never raises on odd input."""
    text = str(typed or "").strip()
    key = normalize(text)
    if not key:
        return PestName(text, "unknown")
    res = lookup_member(text)
    if res is not None:
        pest, member = res
        forms = {v for n in [pest.name] + ([member] if member else []) for v in number_variants(normalize(n))}
        if key in forms:
            return PestName(text, "catalog", pest)
        listed = {v for m in pest.misspellings for v in number_variants(normalize(m))}
        official = {v for n in pest.names(misspellings=False) + [pest.scientific_name] if n for v in number_variants(normalize(n))}
        if key in official and key not in listed:
            return PestName(text, "synonym", pest, pest.name)
        return PestName(text, "misspelling", pest, pest.name)
    # short keys are abbreviations ("PLH"): comparing letters with them suggests nonsense
    candidates = [k for k in _INDEX if len(k) >= 5]
    near = difflib.get_close_matches(key, candidates, n=1, cutoff=NEAR_CUTOFF)
    return PestName(text, "unknown", None, PEST_CATALOG[_INDEX[near[0]]].name if near else None)


def canonical_name(name: Any) -> str | None:
    """The catalog entry's name for ``name`` (synonyms, misspellings, plurals), else None: what a pest filter compares."""
    p = lookup(name) if isinstance(name, str) else None
    return p.name if p else None


def filter_matches(typed: str, name: Any) -> bool:
    """The pest filter's rule (fieldlog's store runs the same in SQL): ``typed`` is part of ``name`` or of
    its catalog name, any case and width, or both are the same catalog entry ("GBM", "berry moht")."""
    q = unicodedata.normalize("NFKC", str(typed or "")).strip().lower()
    if not q or not isinstance(name, str):
        return False
    canon = canonical_name(name)
    if q in unicodedata.normalize("NFKC", name).lower() or (canon and q in canon.lower()):
        return True
    return canon is not None and canon == canonical_name(q)


def all_names(*, misspellings: bool = False) -> list[str]:
    """Canonical names, synonyms and species names for autocomplete, sorted case-insensitively."""
    seen: dict[str, str] = {}
    for pest in PEST_CATALOG.values():
        for n in pest.names(misspellings=misspellings):
            seen.setdefault(n.lower(), n)
    # "European red mites" adds nothing to autocomplete next to "European red mite".
    keep = [n for k, n in seen.items() if not (singular(k) != k and singular(k) in seen)]
    return sorted(keep, key=str.lower)


# Bare words a report uses for a pest without naming it fully. They mark critical
# spans, but the fact check treats them as ambiguous (``mildew`` may be either).
GENERIC_TERMS: dict[str, tuple[str, ...]] = {
    "moth": ("grape berry moth", "European grapevine moth"),
    "beetle": ("Japanese beetle", "rose chafer"),
    "mildew": ("powdery mildew", "downy mildew"),
    "rot": ("botrytis bunch rot", "black rot"),
    "hopper": ("grape leafhopper", "Virginia creeper leafhopper", "potato leafhopper"),
    "mite": ("spider mites", "grape erineum mite"),
    "mealybug": ("mealybugs",),
    "lanternfly": ("spotted lanternfly",),
    "phylloxera": ("grape phylloxera",),
    "leafhopper": ("grape leafhopper", "Virginia creeper leafhopper", "potato leafhopper"),
}


def stage_forms(stage: str) -> list[str]:
    """A life stage in singular and plural form ("larva" -> larva, larvae)."""
    return number_variants(normalize(stage))


def all_life_stages() -> list[str]:
    out: dict[str, None] = {}
    for pest in PEST_CATALOG.values():
        for s in pest.life_stages:
            out[s.lower()] = None
    return list(out)


# ---------------------------------------------------------------- thresholds
def observed_figures(obs: dict) -> dict[str, float]:
    """The figures an observation supports, keyed by threshold metric."""
    out: dict[str, float] = {}
    sampled = obs.get("sampled")
    if isinstance(sampled, (int, float)) and not isinstance(sampled, bool) and sampled > 0:
        if isinstance(obs.get("infested"), (int, float)):
            out["incidence_pct"] = 100.0 * obs["infested"] / sampled
        if isinstance(obs.get("count"), (int, float)):
            out["per_unit"] = obs["count"] / sampled
    for key in ("defoliation_pct", "severity_pct"):
        if isinstance(obs.get(key), (int, float)) and not isinstance(obs.get(key), bool):
            out[key] = float(obs[key])
    if "infested" in obs or "count" in obs:
        out["presence"] = 1.0 if (obs.get("infested") or obs.get("count")) else 0.0
    return out


def _as_date(date: Any) -> _dt.date:
    if isinstance(date, _dt.datetime):
        return date.date()
    if isinstance(date, _dt.date):
        return date
    try:
        return _dt.date.fromisoformat(str(date))
    except ValueError:
        raise FieldNoteError(f"date: {date!r} is not an ISO date (YYYY-MM-DD)") from None


def _same_unit(a: str, b: str) -> bool:
    return singular(normalize(a)) == singular(normalize(b))


def threshold_status(obs: dict, date: Any, *, risk: str | None = None) -> ThresholdStatus:
    """Compare one observation with the threshold that applies on ``date`` (and ``risk`` class if known).

    Only a threshold whose window, risk class, life stage and sampling unit fit the
    observation is applied; otherwise the status is "unknown" and ``reason`` says
    which condition failed, so the report can say so instead of guessing.
    """
    if not isinstance(obs, dict):
        raise FieldNoteError(f"an observation is an object, got {type(obs).__name__}")
    day = _as_date(date)
    pest = lookup(obs.get("pest"))
    if pest is None:
        return ThresholdStatus("unknown", None, None, None, None, False, f"{obs.get('pest')!r} is not in the pest catalog")
    if not pest.thresholds:
        return ThresholdStatus("unknown", pest.name, None, None, None, False, f"no published action threshold for {pest.name}")
    figures = observed_figures(obs)
    stage = normalize(str(obs.get("life_stage") or ""))
    unit = str(obs.get("unit") or "")
    candidates: list[Threshold] = []
    skipped: list[str] = []
    for t in pest.thresholds:
        if not t.in_window(day):
            skipped.append(f"{t.describe()} applies {t.window[0]}..{t.window[1]}" if t.window else t.describe())
        elif risk and t.risk and risk.lower() not in t.risk:
            skipped.append(f"{t.describe()} is for {'/'.join(t.risk)}-risk blocks")
        elif t.life_stages and stage and singular(stage) not in {singular(s) for s in t.life_stages}:
            skipped.append(f"{t.describe()} counts {'/'.join(t.life_stages)}, not {stage}")
        elif t.sampling_unit and unit and not _same_unit(unit, t.sampling_unit):
            skipped.append(f"{t.describe()} is sampled on {t.sampling_unit}, not {unit}")
        elif t.metric not in figures:
            skipped.append(f"{t.describe()} needs {t.metric.replace('_', ' ')}, which this observation lacks")
        else:
            candidates.append(t)
    if not candidates:
        return ThresholdStatus("unknown", pest.name, None, None, None, False, "no threshold applies: " + "; ".join(skipped))
    candidates.sort(key=lambda t: not t.published)  # a published threshold wins over an informal guide
    t = candidates[0]
    value = figures[t.metric]
    above = value > t.value if t.comparison == ">" else value >= t.value
    verb = ("exceeds" if above else "does not exceed") if t.comparison == ">" else ("reaches" if above else "is below")
    why = f"{fmt_quantity(value, t.unit)} {verb} {t.describe()}"
    why += f"; source: {t.source}" if t.published else "; informal guide, no published threshold"
    return ThresholdStatus("above" if above else "below", pest.name, t.metric, round(value, 4), t, t.published, why)


def thresholds_for(names: Iterable[str]) -> dict[str, tuple[Threshold, ...]]:
    """Thresholds of the catalog entries behind ``names`` (unknown names are skipped)."""
    out: dict[str, tuple[Threshold, ...]] = {}
    for n in names:
        p = lookup(n)
        if p is not None:
            out[p.name] = p.thresholds
    return out
