"""Export writers: CSV for spreadsheets, GeoJSON for maps, JSON Lines for other programs.

Pure functions over the sighting dicts the Store hands in (with observations,
latest_report_id and, when the caller looked it up, ``report_text``: the text of
that report, see ``exporting.py``) and a text stream; the caller chooses the rows
and the file.
"""

from __future__ import annotations

import csv
import json
from typing import IO, Any, Iterable, Sequence

from .validation import GEO_FIELDS, OBS_FIELDS, TEXT_FIELDS

SIGHTING_COLUMNS = (
    ("sighting_id", "id"), ("status", "status"), ("version", "version"), ("replaces", "replaces"),
) + tuple((k, k) for k in TEXT_FIELDS + GEO_FIELDS) + (
    ("created_at", "created_at"), ("finalized_at", "finalized_at"), ("latest_report_id", "latest_report_id"),
    ("report_text", "report_text"),
)
CSV_FIELDS = [c for c, _ in SIGHTING_COLUMNS] + ["observation", *OBS_FIELDS]
PUBLIC_SIGHTING_KEYS = ("id", "status", "version", "replaces", *TEXT_FIELDS, *GEO_FIELDS,
                        "created_at", "updated_at", "finalized_at", "payload_sha256", "latest_report_id",
                        "report_text")


_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def csv_cell(v: Any) -> Any:
    """CSV cell; text that a spreadsheet would run as a formula gets a leading quote (OWASP CSV injection).

    Leading whitespace is looked through: spreadsheets trim it on import, so " =1+2" runs as a formula too."""
    if v is None:
        return ""
    if isinstance(v, str) and (v.startswith(_FORMULA_START) or v.lstrip().startswith(_FORMULA_START)):
        return "'" + v
    return v


def _clean_obs(o: dict) -> dict:
    return {k: o.get(k) for k in OBS_FIELDS if o.get(k) is not None}


def public_sighting(s: dict) -> dict:
    """A sighting for export: store columns plus observations, without internal keys."""
    out = {k: s.get(k) for k in PUBLIC_SIGHTING_KEYS}
    out["observations"] = [_clean_obs(o) for o in s.get("observations", [])]
    return out


def write_csv(sightings: Iterable[dict], f: IO[str], *, extra: Sequence[str] = ()) -> int:
    """One row per observation, sighting fields repeated; a sighting with none gets one row.

    ``extra``: more sighting keys to add as trailing columns (the office server adds device and received_at).
    """
    w = csv.DictWriter(f, fieldnames=CSV_FIELDS + list(extra), extrasaction="raise")
    w.writeheader()
    n = 0
    for s in sightings:
        base = {col: s.get(key) for col, key in SIGHTING_COLUMNS}
        base.update({k: s.get(k) for k in extra})
        observations = s.get("observations") or [None]
        for i, o in enumerate(observations):
            row = dict(base)
            if o is not None:
                row["observation"] = i + 1
                row.update({k: o.get(k) for k in OBS_FIELDS})
            w.writerow({k: csv_cell(v) for k, v in row.items()})
            n += 1
    return n


def has_position(s: dict) -> bool:
    return s.get("lat") is not None and s.get("lon") is not None


def write_geojson(sightings: list[dict], f: IO[str]) -> int:
    """A FeatureCollection with a Point [lon, lat] (RFC 7946 order) per sighting that has coordinates.

    A map cannot place a sighting without GPS, but it must not vanish silently: the
    collection says how many were left out (``sightings_without_gps``, a foreign
    member as RFC 7946 section 6.1 allows; map tools ignore it).
    """
    features = []
    left_out = 0
    for s in sightings:
        if not has_position(s):
            left_out += 1
            continue
        props = public_sighting(s)
        props["pests"] = ", ".join(sorted({o["pest"] for o in props["observations"] if o.get("pest")}))
        features.append(
            {
                "type": "Feature",
                "id": s["id"],
                "geometry": {"type": "Point", "coordinates": [s["lon"], s["lat"]]},
                "properties": props,
            }
        )
    json.dump({"type": "FeatureCollection", "sightings_without_gps": left_out, "features": features}, f,
              ensure_ascii=False, indent=1)
    f.write("\n")
    return len(features)


def write_jsonl(sightings: list[dict], f: IO[str]) -> int:
    """One sighting per line with its observations and latest (complete) report id."""
    for s in sightings:
        f.write(json.dumps(public_sighting(s), ensure_ascii=False, sort_keys=True) + "\n")
    return len(sightings)
