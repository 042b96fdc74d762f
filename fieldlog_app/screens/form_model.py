"""The sighting form as pure data: field specs, parsing and validation.

Kept free of Textual so the rules the form enforces can be tested directly and
stay in step with ``vineyard.fieldnote.validate`` (which the store runs again on
finalize). Error keys use the same paths as FieldNoteError messages
(``date``, ``observations[0].infested``) so an error raised by the store can be
pinned to the widget that holds the bad value.
"""

from __future__ import annotations

import datetime as _dt
import re
from dataclasses import dataclass, field
from typing import Any

from vineyard.fieldnote import RISK_CLASSES, rows_error
from vineyard.pests import all_names

# Placeholders are hints, never values a scout could take for filled in: examples say "e.g." (and the
# stylesheet greys and slants them), formats say the format.
# kind: text | date | time | int | float | choice. lo/hi are inclusive bounds for numbers;
# choices are the allowed values of a choice field (shown as a Select, blank allowed).


@dataclass(frozen=True)
class FieldSpec:
    key: str
    label: str
    kind: str = "text"
    required: bool = False
    lo: float | None = None
    hi: float | None = None
    placeholder: str = ""
    max_len: int = 200  # the store's limit for text fields (notes and weather allow more)
    choices: tuple[str, ...] = ()


TOP_FIELDS: tuple[FieldSpec, ...] = (
    FieldSpec("block", "Block", required=True, placeholder="e.g. B4"),
    FieldSpec("variety", "Variety", placeholder="e.g. Riesling"),
    FieldSpec("rows", "Rows", required=True, placeholder="e.g. 12-18"),
    FieldSpec("date", "Date", kind="date", required=True, placeholder="YYYY-MM-DD"),
    FieldSpec("time", "Time", kind="time", placeholder="HH:MM"),
    FieldSpec("scout", "Scout", placeholder="name"),
    FieldSpec("weather", "Weather", placeholder="e.g. 22C, dry", max_len=500),
    FieldSpec("notes", "Notes", placeholder="what you saw", max_len=10_000),
    FieldSpec("lat", "Lat", kind="float", lo=-90, hi=90, placeholder="optional"),
    FieldSpec("lon", "Lon", kind="float", lo=-180, hi=180, placeholder="optional"),
    FieldSpec("accuracy_m", "GPS ± m", kind="float", lo=0, placeholder="optional"),
    # last: it fills the free cell next to "GPS ± m" on an 80-column screen (no extra row)
    FieldSpec("risk_class", "Risk class", kind="choice", choices=RISK_CLASSES, placeholder="not set"),
)
# laid out full-width in the form (free text that is often longer than half a handheld screen)
WIDE_FIELDS = frozenset({"weather", "notes"})

OBS_FIELDS: tuple[FieldSpec, ...] = (
    FieldSpec("pest", "Pest", required=True, placeholder="pest or disease"),
    FieldSpec("life_stage", "Stage", required=True, placeholder="e.g. larva"),
    FieldSpec("unit", "Unit", required=True, placeholder="e.g. vines"),
    FieldSpec("sampled", "Sampled", kind="int", required=True, lo=1, placeholder="≥ 1"),
    FieldSpec("infested", "Infested", kind="int", lo=0, placeholder="-"),
    FieldSpec("count", "Count", kind="int", lo=0, placeholder="-"),
    FieldSpec("severity_pct", "Sev %", kind="float", lo=0, hi=100, placeholder="-"),
    FieldSpec("defoliation_pct", "Defol %", kind="float", lo=0, hi=100, placeholder="-"),
)

TOP_BY_KEY = {f.key: f for f in TOP_FIELDS}
OBS_BY_KEY = {f.key: f for f in OBS_FIELDS}

LIFE_STAGES = ["egg", "larva", "nymph", "pupa", "adult", "crawler", "colonies", "galls",
               "oil spots", "sporulating", "lesions", "mixed"]
UNITS = ["clusters", "leaves", "shoots", "vines", "berries", "traps", "canes", "trunks"]

_DATE_RE = re.compile(r"^\d{4}-\d{2}-\d{2}$")
_TIME_RE = re.compile(r"^([01]?\d|2[0-3]):([0-5]\d)(?::([0-5]\d))?$")


def pest_names() -> list[str]:
    """Pest names for autocomplete, from the vineyard pest catalog."""
    return sorted(set(all_names()), key=str.lower)


def _fmt_bound(x: float) -> str:
    return f"{x:g}"


def check_value(spec: FieldSpec, text: str | None) -> tuple[Any, str | None]:
    """Parse one field's text. Returns (value or None, error message or None).

    Empty text is ``None`` with no error: whether it is allowed is decided by the
    caller (drafts may be incomplete, finalize may not).
    """
    s = (text or "").strip()
    if not s:
        return None, None
    if spec.kind == "text":
        if spec.key == "rows":
            problem = rows_error(s)
            if problem:
                return None, problem
        return s, None
    if spec.kind == "choice":
        if s.lower() in spec.choices:
            return s.lower(), None
        return None, f"choose {', '.join(spec.choices)} or leave it blank"
    if spec.kind == "date":
        if not _DATE_RE.match(s):
            return None, "use an ISO date, YYYY-MM-DD"
        try:
            _dt.date.fromisoformat(s)
        except ValueError:
            return None, f"{s} is not a real date"
        return s, None
    if spec.kind == "time":
        m = _TIME_RE.match(s)
        if not m:
            return None, "use 24-hour HH:MM"
        hh, mm, ss = m.groups()
        return f"{int(hh):02d}:{mm}" + (f":{ss}" if ss else ""), None  # 7:45 → 07:45
    # numbers; accept a decimal comma (common on handheld keyboards in Europe)
    raw = s.replace(",", ".") if spec.kind == "float" else s
    try:
        if spec.kind == "int":
            if not re.fullmatch(r"[+-]?\d+", raw):
                return None, "enter a whole number"
            value: float = int(raw)
        else:
            value = float(raw)
            if value != value or value in (float("inf"), float("-inf")):
                return None, "enter a number"
    except ValueError:
        return None, "enter a number"
    if spec.lo is not None and value < spec.lo:
        return None, _range_msg(spec)
    if spec.hi is not None and value > spec.hi:
        return None, _range_msg(spec)
    return value, None


_FILTER_DATE_RE = re.compile(r"^(\d{4})(?:-(\d{1,2})(?:-(\d{1,2}))?)?$")


def parse_filter_date(text: str | None, *, end: bool = False) -> tuple[str | None, str | None]:
    """A log filter's date as typed: (ISO date or None, error or None).

    A filter may name a year ("2026") or a month ("2026-07") as well as a day ("2026-7-1" is
    2026-07-01): "from" takes its first day, "to" (``end=True``) its last. Anything else is an
    error the log screen shows, so a typo is never silently taken as "no filter".
    """
    s = (text or "").strip()
    if not s:
        return None, None
    m = _FILTER_DATE_RE.match(s)
    try:
        if m is None:
            raise ValueError
        year, month, day = int(m.group(1)), m.group(2), m.group(3)
        if month is None:
            d = _dt.date(year, 12, 31) if end else _dt.date(year, 1, 1)
        elif day is None:
            first = _dt.date(year, int(month), 1)
            d = (first.replace(day=28) + _dt.timedelta(days=4)).replace(day=1) - _dt.timedelta(days=1) if end else first
        else:
            d = _dt.date(year, int(month), int(day))
    except ValueError:
        return None, f"{s!r} is not a date (YYYY-MM-DD, or YYYY-MM for a month)"
    return d.isoformat(), None


def _range_msg(spec: FieldSpec) -> str:
    if spec.lo is not None and spec.hi is not None:
        return f"must be {_fmt_bound(spec.lo)}–{_fmt_bound(spec.hi)}"
    if spec.lo is not None:
        return f"must be ≥ {_fmt_bound(spec.lo)}"
    return f"must be ≤ {_fmt_bound(spec.hi)}"  # type: ignore[arg-type]


@dataclass
class FormResult:
    note: dict
    errors: dict[str, str] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not self.errors


def _row_is_empty(row: dict[str, str]) -> bool:
    return not any((row.get(f.key) or "").strip() for f in OBS_FIELDS)


def parse_form(top: dict[str, str], observations: list[dict[str, str]], *, strict: bool,
               nothing_found: bool = False) -> FormResult:
    """Turn the form's raw strings into a sighting dict plus per-field errors.

    ``strict=False`` (save draft): typed fields must parse and be in range, but
    required ones may be empty. ``strict=True`` (finalize): everything
    ``vineyard.fieldnote.validate`` requires must be there too. Observation rows
    left completely empty are ignored in both modes, so an extra blank row
    never blocks a save.

    ``nothing_found`` is the form's "Nothing found" choice: the walk may then have no
    observation at all (``"observations": []``), and a row that is filled in records
    what was scouted for, so it must say 0 infested or 0 counted, never more.
    """
    errors: dict[str, str] = {}
    note: dict[str, Any] = {}
    for spec in TOP_FIELDS:
        value, err = check_value(spec, top.get(spec.key))
        if err:
            errors[spec.key] = err
        elif value is None and spec.required and strict:
            errors[spec.key] = "required"
        note[spec.key] = value
    if (note.get("lat") is None) != (note.get("lon") is None) and "lat" not in errors and "lon" not in errors:
        missing = "lon" if note.get("lon") is None else "lat"
        errors[missing] = "give both latitude and longitude"
    obs_out: list[dict[str, Any]] = []
    for row in observations:
        if _row_is_empty(row):
            continue
        i = len(obs_out)
        o: dict[str, Any] = {}
        for spec in OBS_FIELDS:
            value, err = check_value(spec, row.get(spec.key))
            where = f"observations[{i}].{spec.key}"
            if err:
                errors[where] = err
            elif value is None and spec.required and strict:
                errors[where] = "required"
            o[spec.key] = value
        sampled, infested = o.get("sampled"), o.get("infested")
        if sampled is not None and infested is not None and infested > sampled:
            # short: it sits under a narrow number field on a handheld
            errors[f"observations[{i}].infested"] = f"must be ≤ sampled ({sampled})"
        if nothing_found:
            for key in ("infested", "count"):
                if o.get(key):
                    errors[f"observations[{i}].{key}"] = "must be 0: Nothing found is ticked"
            if strict and o.get("infested") is None and o.get("count") is None and f"observations[{i}].infested" not in errors:
                errors[f"observations[{i}].infested"] = "enter 0 (scouted for, none found)"
        obs_out.append(o)
    if strict and not obs_out and not nothing_found:
        errors["observations"] = 'enter what you found, or tick "Nothing found"'
    note["observations"] = obs_out
    return FormResult(note=note, errors=errors)


def error_key(message: str) -> tuple[str | None, str]:
    """Split a FieldNoteError/ValidationError message into (field path, text).

    ``"observations[0].infested: 9 is out of range (0..5)"`` →
    ``("observations[0].infested", "9 is out of range (0..5)")``.
    """
    m = re.match(r"^\s*([a-z_]+(?:\[\d+\])?(?:\.[a-z_]+)?)\s*:\s*(.+)$", message, re.S)
    if not m:
        return None, message
    return m.group(1), m.group(2).strip()


def note_to_form(sighting: dict) -> tuple[dict[str, str], list[dict[str, str]]]:
    """The inverse of parse_form: a stored sighting as the form's raw strings."""

    def s(v: Any) -> str:
        if v is None:
            return ""
        if isinstance(v, float) and v.is_integer():
            return str(int(v))
        return str(v)

    top = {spec.key: s(sighting.get(spec.key)) for spec in TOP_FIELDS}
    obs = [{spec.key: s(o.get(spec.key)) for spec in OBS_FIELDS} for o in sighting.get("observations") or []]
    return top, obs
