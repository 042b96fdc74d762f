"""Field notes (one scouting stop): their JSON shape and validation.

A field note is the JSON shape shared by ``edgespec generate --notes``,
``fieldlog import-notes`` and the app's store::

    {"block": "B4", "variety": "Riesling", "rows": "12-18", "date": "2026-07-21",
     "scout": "M. Ortiz",
     "observations": [{"pest": "grape berry moth", "life_stage": "larva",
                       "unit": "clusters", "sampled": 50, "infested": 4}],
     "weather": "22C, dry", "notes": "damage on the wood edge"}

Observation fields: pest, life_stage, unit, sampled (required); infested, count,
severity_pct, defoliation_pct (optional, numbers). ``"observations": []`` is a
walk where nothing was found (the key itself is required: an empty list says
"looked, found nothing", a missing key says nothing); an observation with 0
infested or 0 counted records what was scouted for ("scouted for X: 0 of N").
``rows`` is free text ("12-18", "W1-W22", "3, 5-7"), but a numeric range written
backwards ("20-5") is refused, since it is almost always a typo. An optional ``risk_class``
(low, intermediate, high) picks the threshold that applies where the pest
catalog has one per block risk class. Validation raises
FieldNoteError naming the field, so a form or an import can point at it.
The report prompt built from a note is ``vineyard.prompt``.
"""

from __future__ import annotations

import datetime as _dt
import re
from pathlib import Path
from typing import Any

from edgespec import read_json_file

from . import FieldNoteError

REQUIRED = ("block", "rows", "date", "observations")
OPTIONAL_TEXT = ("variety", "scout", "weather", "notes", "time")
OBS_REQUIRED = ("pest", "life_stage", "unit", "sampled")
OBS_NUMBERS = ("infested", "count", "severity_pct", "defoliation_pct")
# A block's pest-risk class (as in the Cornell/NYS IPM grape berry moth protocol): picks which
# threshold applies when the catalog has one per class. Optional.
RISK_CLASSES = ("low", "intermediate", "high")

def parse_number(value: Any, where: str, *, integer: bool = False, lo: float = 0, hi: float | None = None) -> float | int:
    """``value`` as a number in [lo, hi] (a whole one when ``integer``), else FieldNoteError naming ``where``."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise FieldNoteError(f"{where}: expected a number, got {value!r}")
    if integer and int(value) != value:
        raise FieldNoteError(f"{where}: expected a whole number, got {value!r}")
    if value < lo or (hi is not None and value > hi):
        rng = f"{lo}..{hi}" if hi is not None else f">= {lo}"
        raise FieldNoteError(f"{where}: {value!r} is out of range ({rng})")
    return int(value) if integer else value


def risk_class(value: Any, where: str = "risk_class") -> str:
    """One of RISK_CLASSES, any case (a scout may type "High"); returned lower-case."""
    risk = str(value).strip().lower()
    if risk not in RISK_CLASSES:
        raise FieldNoteError(f"{where}: {value!r} is not one of {', '.join(RISK_CLASSES)}")
    return risk


_RANGE_RE = re.compile(r"([A-Za-z]*)\s*(\d+)\s*(?:-|\u2013|to)\s*([A-Za-z]*)\s*(\d+)")


def rows_error(rows: str) -> str | None:
    """Why ``rows`` is not a usable rows field, or None: a numeric range must run upwards ("5-20", not "20-5")."""
    for part in re.split(r"\s*[,;]\s*", str(rows)):
        m = _RANGE_RE.fullmatch(part.strip())
        if m and m.group(1).lower() == m.group(3).lower() and int(m.group(2)) > int(m.group(4)):
            a, b = m.group(1) + m.group(2), m.group(3) + m.group(4)
            return f"{part.strip()!r} runs backwards; write {b}-{a}"
    return None


def nothing_found(note: dict) -> bool:
    """A walk where no pest was found: no observations, or only ones with 0 infested / 0 counted."""
    obs = note.get("observations") or []
    return all(("infested" in o or "count" in o) and not o.get("infested") and not o.get("count") for o in obs)


def validate(note: Any, *, check_rows: bool = True) -> dict:
    """Return a normalised copy of ``note`` or raise FieldNoteError naming the bad field.

    ``check_rows=False`` skips the backwards-range rule (``rows_error``): the sync server accepts
    sightings an older app finalized before the rule existed, rather than leaving them stuck."""
    if not isinstance(note, dict):
        raise FieldNoteError(f"a field note is a JSON object, got {type(note).__name__}")
    for key in REQUIRED:
        # [] is a value for observations (a nothing-found walk), not a missing field
        if key not in note or note[key] is None or (key != "observations" and note[key] in ("", [])):
            raise FieldNoteError(f"{key}: required")
    out: dict[str, Any] = {}
    for key in ("block", "rows"):
        out[key] = str(note[key]).strip()
        if not out[key]:
            raise FieldNoteError(f"{key}: required")
    if check_rows:
        problem = rows_error(out["rows"])
        if problem:
            raise FieldNoteError(f"rows: {problem}")
    try:
        _dt.date.fromisoformat(str(note["date"]))
    except ValueError:
        raise FieldNoteError(f"date: {note['date']!r} is not an ISO date (YYYY-MM-DD)") from None
    out["date"] = str(note["date"])
    for key in OPTIONAL_TEXT:
        if note.get(key) is not None:
            out[key] = str(note[key])
    if note.get("risk_class") not in (None, ""):
        out["risk_class"] = risk_class(note["risk_class"])
    if not isinstance(note["observations"], list):
        raise FieldNoteError("observations: expected a list")
    obs_out = []
    for i, obs in enumerate(note["observations"]):
        where = f"observations[{i}]"
        if not isinstance(obs, dict):
            raise FieldNoteError(f"{where}: expected an object")
        for key in OBS_REQUIRED:
            if key not in obs or obs[key] in (None, ""):
                raise FieldNoteError(f"{where}.{key}: required")
        o: dict[str, Any] = {
            "pest": str(obs["pest"]).strip(),
            "life_stage": str(obs["life_stage"]).strip(),
            "unit": str(obs["unit"]).strip(),
            "sampled": parse_number(obs["sampled"], f"{where}.sampled", integer=True, lo=1),
        }
        for key in OBS_NUMBERS:
            if obs.get(key) is None:
                continue
            if key == "infested":
                o[key] = parse_number(obs[key], f"{where}.infested", integer=True, lo=0, hi=o["sampled"])
            elif key == "count":
                o[key] = parse_number(obs[key], f"{where}.count", integer=True, lo=0)
            else:
                o[key] = parse_number(obs[key], f"{where}.{key}", lo=0, hi=100)
        obs_out.append(o)
    out["observations"] = obs_out
    for key in ("lat", "lon", "accuracy_m"):
        if note.get(key) is not None:
            lo, hi = {"lat": (-90, 90), "lon": (-180, 180), "accuracy_m": (0, None)}[key]
            out[key] = parse_number(note[key], key, lo=lo, hi=hi)
    return out


def load(path: str | Path) -> dict:
    return validate(read_json_file(path, FieldNoteError))
