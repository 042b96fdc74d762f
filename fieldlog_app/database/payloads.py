"""The frozen JSON shapes of a sighting version and a report (what the outbox uploads).

Built from stored rows, with every number coerced to its column type, so the
hash computed at finalize equals the hash recomputed from the database later
(SQLite hands back 2.0 from a REAL column that was given 2).
"""

from __future__ import annotations

from typing import Any

from .validation import GEO_FIELDS, OBS_FIELDS, TEXT_FIELDS

REAL_FIELDS = frozenset({"lat", "lon", "accuracy_m", "severity_pct", "defoliation_pct"})
INT_FIELDS = frozenset({"sampled", "infested", "count"})
SIGHTING_META = ("id", "version", "replaces", "created_at", "finalized_at")
REPORT_FIELDS = (
    "id", "sighting_id", "created_at", "status", "text", "model_pair", "policy", "stats",
    "provenance", "spans", "findings", "sighting_sha256",
)


def _coerce(key: str, value: Any) -> Any:
    if value is None:
        return None
    if key in REAL_FIELDS:
        return float(value)
    if key in INT_FIELDS:
        return int(value)
    return value


def note_of(sighting: dict) -> dict:
    """Field-note shape (vineyard.fieldnote) of a sighting dict or row: absent values omitted."""
    out = {}
    for key in TEXT_FIELDS + GEO_FIELDS:
        v = _coerce(key, sighting.get(key))
        if v is not None:
            out[key] = v
    out["observations"] = [
        {k: _coerce(k, o.get(k)) for k in OBS_FIELDS if o.get(k) is not None}
        for o in sorted(sighting.get("observations") or [], key=lambda o: o.get("idx", 0))
    ]
    return out


def sighting_payload(sighting: dict) -> dict:
    """The uploaded version: field note + id, version, replaces, created_at, finalized_at."""
    out = note_of(sighting)
    for key in SIGHTING_META:
        out[key] = sighting.get(key)
    out["version"] = int(out["version"])
    return out


# A reviewed version also carries these. A report as generated leaves them out, so its payload (and hash)
# is what it was before reviews existed, and an office server that predates them still takes it.
REVIEW_FIELDS = ("version", "replaces", "review_status", "reviewed_by", "reviewed_at", "review_note")


def is_reviewed(report: dict) -> bool:
    return (report.get("review_status") or "generated") != "generated" or int(report.get("version") or 1) > 1


def report_payload(report: dict) -> dict:
    """The uploaded report: every stored field (JSON columns decoded) plus ``clean``; a reviewed
    version adds its version, the version it replaces, review status, who, when and why."""
    out = {key: report.get(key) for key in REPORT_FIELDS}
    out["clean"] = not report.get("findings")
    if is_reviewed(report):
        for key in REVIEW_FIELDS:
            out[key] = report.get(key)
        out["version"] = int(out["version"] or 1)
    return out
