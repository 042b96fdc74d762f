"""Exports with what the office reads: each sighting's latest report text, and a count of
sightings a map had to leave out.

The writers in ``export.py`` are pure; this module picks the rows through the store
(the same ones ``Store.export`` picks), adds ``report_text`` from the latest complete
report, and writes a path atomically. ``fieldlog export`` uses it.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from typing import IO

from ..atomic import atomic_write
from . import export as _export
from .errors import StoreError, ValidationError
from .guard import guarded

WRITERS = {"csv": _export.write_csv, "geojson": _export.write_geojson, "jsonl": _export.write_jsonl}


@dataclass(frozen=True)
class ExportResult:
    written: int  # rows (csv), features (geojson) or lines (jsonl)
    sightings: int
    without_gps: int  # sightings a GeoJSON export left out (0 for the other formats)


class Exporter:
    """Reads through the store's connection under its lock (``guarded`` uses ``_store``)."""

    def __init__(self, store) -> None:
        self._store = store

    @guarded
    def rows(self, *, include_drafts: bool = False, include_superseded: bool = False) -> list[dict]:
        """The sightings ``Store.export`` writes, each with ``report_text`` (None without a complete report)."""
        rows = self._store._export_rows(include_drafts, include_superseded)
        ids = [r["latest_report_id"] for r in rows if r.get("latest_report_id")]
        texts = dict(self._store.db.conn.execute(
            "SELECT id, text FROM reports WHERE id IN (SELECT value FROM json_each(?))", (json.dumps(ids),)
        ).fetchall())
        for r in rows:
            r["report_text"] = texts.get(r.get("latest_report_id"))
        return rows

    def export(self, fmt: str, out: str | os.PathLike | IO[str], *, include_drafts: bool = False,
               include_superseded: bool = False) -> ExportResult:
        if fmt not in WRITERS:
            raise ValidationError(f"format: {fmt!r} is not one of {', '.join(WRITERS)}")
        rows = self.rows(include_drafts=include_drafts, include_superseded=include_superseded)
        if hasattr(out, "write"):
            n = WRITERS[fmt](rows, out)
        else:
            n = atomic_write(out, lambda f: WRITERS[fmt](rows, f), error=StoreError)
        left_out = sum(1 for r in rows if not _export.has_position(r)) if fmt == "geojson" else 0
        return ExportResult(n, len(rows), left_out)
