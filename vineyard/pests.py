"""What a name or an observation means against the pest catalog (``vineyard.pest_catalog``).

A scout's name for a pest resolves to its catalog entry through case, width,
synonyms, plurals and listed or small misspellings (``lookup``, ``check_name``,
the pest filter's ``filter_matches``); an observation is compared with the
threshold that applies on its date, block risk class, life stage and sampling
unit (``threshold_status``). The span policy and the fact check derive pest
names and threshold values from here rather than guessing, which is what lets
them tell a correct report from a hallucinated one.
"""

from __future__ import annotations

import datetime as _dt
import difflib
import re
import unicodedata
from dataclasses import dataclass
from typing import Any, Iterable

from . import FieldNoteError
from .pest_catalog import PEST_CATALOG, Pest, Threshold, fmt_quantity


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


def resolve_mention(name: str) -> str | None:
    """Canonical pest for an unambiguous mention; None for generic words ("mildew")."""
    key = singular(normalize(name))
    if key in GENERIC_TERMS and len(GENERIC_TERMS[key]) > 1:
        return None
    p = lookup(name)
    return p.name if p else None


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
