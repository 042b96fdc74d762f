"""Sighting validation for the store: lenient for drafts, full (vineyard.fieldnote) for finalized.

A scout saves half-filled forms in the field, so a draft may miss required
fields; but whatever *is* filled must already have the right type and range,
otherwise a bad value would only surface at finalize time, far from the input.
Unknown keys are rejected rather than silently dropped, so a typo never loses data.
"""

from __future__ import annotations

import datetime as _dt
import math
import unicodedata
import uuid
from typing import Any

from vineyard import FieldNoteError, fieldnote
from vineyard.fieldnote import parse_number  # the same number checks as the field note
from vineyard.pests import canonical_name

from .errors import ValidationError

# risk_class is text with a fixed vocabulary (vineyard.fieldnote.RISK_CLASSES), stored lower-case;
# it sits next to the other block fields so a CSV export shows it beside block/variety/rows.
TEXT_FIELDS = ("block", "variety", "rows", "risk_class", "date", "time", "scout", "weather", "notes")
RISK_CLASSES = fieldnote.RISK_CLASSES
GEO_FIELDS = ("lat", "lon", "accuracy_m")
NOTE_FIELDS = TEXT_FIELDS + GEO_FIELDS + ("observations",)
OBS_TEXT = ("pest", "life_stage", "unit")
OBS_NUMBERS = ("sampled", "infested", "count", "severity_pct", "defoliation_pct")
OBS_FIELDS = OBS_TEXT + OBS_NUMBERS

# Keys the store itself adds to a sighting dict: accepted on input (so a UI can pass
# back what get_sighting returned) and ignored.
STORE_FIELDS = frozenset({
    "id", "status", "version", "replaces", "created_at", "updated_at", "finalized_at",
    "payload_sha256", "content_sha256", "superseded_by", "latest_report_id", "pests", "report_count",
    "report_text",  # exports carry the latest report's text (database/exporting.py)
    # the form's "Nothing found" choice, kept with a draft (save_draft reads it; see nothing_found_flag)
    # and no part of the field note: a revision cannot set it and an imported note's is dropped
    "nothing_found",
})
OBS_STORE_FIELDS = frozenset({"id", "sighting_id", "idx"})

MAX_LEN = {"notes": 10_000, "weather": 500}
DEFAULT_MAX_LEN = 200
# The largest count a scout can record: far above any real tally, far below SQLite's 2**63 - 1,
# so a typing accident or a hostile file is a validation error, never an overflow in the database.
MAX_COUNT = 10**9


def _text(value: Any, where: str, max_len: int) -> str | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        raise ValidationError(f"{where}: expected text, got {type(value).__name__}")
    if isinstance(value, float) and not math.isfinite(value):
        raise ValidationError(f"{where}: expected text, got {value!r}")
    try:
        s = str(value).strip()
    except ValueError:  # an int too long for Python to print
        raise ValidationError(f"{where}: too long (max {max_len} characters)") from None
    if len(s) > max_len:
        raise ValidationError(f"{where}: too long ({len(s)} characters, max {max_len})")
    return s or None


def validate_text_field(value: Any, where: str, max_len: int) -> str | None:
    """A free-text value as the store keeps it (stripped; None when empty); ValidationError naming ``where``."""
    return _text(value, where, max_len)


def _number(value: Any, where: str, **kw) -> float | int | None:
    if value is None or value == "":
        return None
    if isinstance(value, float) and not math.isfinite(value):  # NaN passes every range check
        raise ValidationError(f"{where}: {value!r} is not a finite number")
    try:
        return parse_number(value, where, **kw)
    except FieldNoteError as e:
        raise ValidationError.from_fieldnote(e) from None


def check_uuid(value: Any, where: str = "id") -> str:
    """Ids are UUIDs made on the device; anything else would collide at the farm office."""
    try:
        return str(uuid.UUID(str(value)))
    except (ValueError, TypeError, AttributeError):
        raise ValidationError(f"{where}: {value!r} is not a UUID") from None


def check_risk_class(value: str, where: str = "risk_class") -> str:
    """The field note's rule (``vineyard.fieldnote.risk_class``), reported as a form/sync validation error."""
    try:
        return fieldnote.risk_class(value, where)
    except FieldNoteError as e:
        raise ValidationError(str(e)) from None


def validate_draft(sighting: Any) -> dict:
    """Type- and range-check what is present; return a dict with every note field (None when absent)."""
    if not isinstance(sighting, dict):
        raise ValidationError(f"a sighting is an object, got {type(sighting).__name__}")
    for key in sighting:
        if key not in NOTE_FIELDS and key not in STORE_FIELDS:
            raise ValidationError(f"{key}: unknown field")
    out: dict[str, Any] = {}
    for key in TEXT_FIELDS:
        out[key] = _text(sighting.get(key), key, MAX_LEN.get(key, DEFAULT_MAX_LEN))
    if out["risk_class"] is not None:
        out["risk_class"] = check_risk_class(out["risk_class"])
    if out["date"] is not None:
        try:
            _dt.date.fromisoformat(out["date"])
        except ValueError:
            raise ValidationError(f"date: {out['date']!r} is not an ISO date (YYYY-MM-DD)") from None
    if out["time"] is not None:
        try:
            _dt.time.fromisoformat(out["time"])
        except ValueError:
            raise ValidationError(f"time: {out['time']!r} is not a time (HH:MM)") from None
    out["lat"] = _number(sighting.get("lat"), "lat", lo=-90, hi=90)
    out["lon"] = _number(sighting.get("lon"), "lon", lo=-180, hi=180)
    out["accuracy_m"] = _number(sighting.get("accuracy_m"), "accuracy_m", lo=0)
    if (out["lat"] is None) != (out["lon"] is None):
        missing = "lon" if out["lon"] is None else "lat"
        raise ValidationError(f"{missing}: required when the other coordinate is given")
    obs = sighting.get("observations")
    if obs is None:
        obs = []
    if not isinstance(obs, list):
        raise ValidationError("observations: expected a list")
    out["observations"] = [validate_observation(o, i) for i, o in enumerate(obs)]
    return out


def validate_observation(obs: Any, i: int) -> dict:
    where = f"observations[{i}]"
    if not isinstance(obs, dict):
        raise ValidationError(f"{where}: expected an object")
    for key in obs:
        if key not in OBS_FIELDS and key not in OBS_STORE_FIELDS:
            raise ValidationError(f"{where}.{key}: unknown field")
    o: dict[str, Any] = {k: _text(obs.get(k), f"{where}.{k}", DEFAULT_MAX_LEN) for k in OBS_TEXT}
    o["sampled"] = _number(obs.get("sampled"), f"{where}.sampled", integer=True, lo=1, hi=MAX_COUNT)
    hi = o["sampled"] if o["sampled"] is not None else MAX_COUNT
    o["infested"] = _number(obs.get("infested"), f"{where}.infested", integer=True, lo=0, hi=hi)
    o["count"] = _number(obs.get("count"), f"{where}.count", integer=True, lo=0, hi=MAX_COUNT)
    o["severity_pct"] = _number(obs.get("severity_pct"), f"{where}.severity_pct", lo=0, hi=100)
    o["defoliation_pct"] = _number(obs.get("defoliation_pct"), f"{where}.defoliation_pct", lo=0, hi=100)
    return o


def nothing_found_flag(value: Any, observations: list[dict]) -> bool | None:
    """A draft's "Nothing found" choice: True (ticked), False (not) or None (not said).

    Ticked, every observation records what was scouted for, so none may say more than 0 infested or
    counted (the form's rule, form_model.parse_form): the flag never contradicts the rows it is kept with."""
    if value is None:
        return None
    if isinstance(value, bool) or (isinstance(value, int) and value in (0, 1)):
        flag = bool(value)
    else:
        raise ValidationError(f"nothing_found: expected true or false, got {value!r}")
    if flag:
        for i, o in enumerate(observations):
            for key in ("infested", "count"):
                if o.get(key):
                    raise ValidationError(f"observations[{i}].{key}: must be 0 when nothing_found is set")
    return flag


def note_content(norm: dict) -> dict:
    """The field-note shape (vineyard.fieldnote) of a normalised sighting: absent values omitted."""
    out = {k: norm[k] for k in TEXT_FIELDS + GEO_FIELDS if norm.get(k) is not None}
    out["observations"] = [{k: v for k, v in o.items() if v is not None} for o in norm.get("observations", [])]
    return out


def validate_final(sighting: Any) -> dict:
    """Full validation for a finalized sighting: draft checks plus vineyard.fieldnote.validate."""
    norm = validate_draft(sighting)
    try:
        fieldnote.validate(note_content(norm))
    except FieldNoteError as e:
        raise ValidationError.from_fieldnote(e) from None
    return norm


def fold(text: str) -> str:
    """NFKC: full-width letters and digits as plain ones ("ｍｏｔｈ" → "moth"), for search and filters."""
    return unicodedata.normalize("NFKC", text)


def pests_text(observations: list[dict]) -> str:
    """Pest names and life stages as one searchable string (FTS indexes one table's columns).

    NFKC-folded, and a name the catalog knows under another spelling carries the catalog's
    name too ("berry moht (grape berry moth) larva"), so a search for "moth" finds it."""
    parts = []
    for o in observations:
        pest = o.get("pest")
        canon = canonical_name(pest) if pest else None
        if pest and canon and canon.lower() != str(pest).lower():
            pest = f"{pest} ({canon})"
        words = " ".join(p for p in (pest, o.get("life_stage")) if p)
        if words:
            parts.append(fold(words))
    return "; ".join(parts)
