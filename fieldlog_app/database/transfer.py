"""Files in and out of the fieldlog store: exports (CSV, GeoJSON, JSONL) and importing field notes.

A mixin of ``Store`` (store.py)."""

from __future__ import annotations

import json
import os
import sqlite3
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from vineyard.pests import canonical_name, check_name

from . import export as _export
from .canonical import payload_sha256, strict_loads
from .errors import StoreError, ValidationError
from .guard import guarded
from .payloads import note_of
from .validation import STORE_FIELDS, validate_final


@dataclass
class ImportResult:
    """Outcome of import_notes: counts plus (line number, message) for every bad line."""

    imported: int = 0
    errors: list[tuple[int, str]] = field(default_factory=list)
    skipped: int = 0  # lines whose note is already in the log (re-importing a file is harmless)
    ids: list[str] = field(default_factory=list)
    # (line number, message) for pest names the catalog knows under another name or not at all: imported
    # as written (a file is the scout's record), but said, so a misspelling can be revised
    warnings: list[tuple[int, str]] = field(default_factory=list)


def unknown_pests(payload: dict) -> dict:
    """{"unknown_pests": [...]} for the audit entry of a version naming pests the catalog does not know
    (the form has the scout confirm them; the log keeps that they were), else {}."""
    names = sorted({o["pest"] for o in payload.get("observations") or [] if o.get("pest") and not canonical_name(o["pest"])})
    return {"unknown_pests": names} if names else {}


class TransferMethods:
    def _export_rows(self, include_drafts: bool, include_superseded: bool) -> list[dict]:
        statuses = ["finalized"] + (["draft"] if include_drafts else []) + (["superseded"] if include_superseded else [])
        rows = self._rows(
            f"SELECT * FROM sightings WHERE status IN ({', '.join('?' * len(statuses))}) "
            "ORDER BY date, time, created_at",
            statuses,
        )
        return self._with_details(rows)

    @guarded
    def export(
        self,
        fmt: str,
        out: str | os.PathLike | IO[str],
        *,
        include_drafts: bool = False,
        include_superseded: bool = False,
    ) -> int:
        """Write sightings as ``csv`` (one row per observation), ``geojson`` (a Point per
        sighting with coordinates) or ``jsonl`` (one sighting per line); returns rows written.

        By default only current finalized versions: what the farm office acts on.
        A path is written atomically (temp file + rename), so a crash never leaves
        half an export that looks complete.
        """
        writers = {"csv": _export.write_csv, "geojson": _export.write_geojson, "jsonl": _export.write_jsonl}
        if fmt not in writers:
            raise ValidationError(f"format: {fmt!r} is not one of csv, geojson, jsonl")
        rows = self._export_rows(include_drafts, include_superseded)
        if hasattr(out, "write"):
            return writers[fmt](rows, out)
        from ..atomic import atomic_write

        return atomic_write(out, lambda f: writers[fmt](rows, f), error=StoreError)

    @guarded
    def import_notes(self, path: str | os.PathLike) -> ImportResult:
        """Import field notes (JSON Lines, the ``edgespec generate --notes`` shape) as finalized sightings.

        Every line succeeds or fails on its own: a bad one (not UTF-8, not strict
        JSON — NaN, Infinity, nesting too deep — or not a valid note) is reported
        with its number and reason, and whatever goes wrong storing a line undoes
        only that line (a savepoint). A note already in the log (same content as an
        existing finalized or superseded version) is skipped, so importing twice is
        harmless. The good lines commit together: a crash mid-import imports nothing.
        """
        p = Path(path).expanduser()
        try:
            data = p.read_bytes()
        except FileNotFoundError:
            raise StoreError(f"{p}: no such file") from None
        except OSError as e:
            raise StoreError(f"{p}: cannot read ({e.strerror or e})") from None
        result = ImportResult()
        seen: set[str] = set()
        with self.transaction():
            for line_no, raw in enumerate(data.splitlines(), start=1):
                if line_no == 1 and raw.startswith(b"\xef\xbb\xbf"):
                    raw = raw[3:]
                if not raw.strip():
                    continue
                try:
                    line = raw.decode("utf-8")
                except UnicodeDecodeError:
                    result.errors.append((line_no, "not UTF-8 text"))
                    continue
                try:
                    note = strict_loads(line)
                except json.JSONDecodeError as e:
                    result.errors.append((line_no, f"not valid JSON ({e.msg} at column {e.colno})"))
                    continue
                except ValueError as e:
                    result.errors.append((line_no, f"not valid JSON ({e})"))
                    continue
                try:
                    if isinstance(note, dict):
                        note = {k: v for k, v in note.items() if k not in STORE_FIELDS}
                    norm = validate_final(note)
                except ValidationError as e:
                    result.errors.append((line_no, str(e)))
                    continue
                content_sha = payload_sha256(note_of(norm))
                dup = self._one(
                    "SELECT id FROM sightings WHERE content_sha256 = ? AND status <> 'draft' LIMIT 1", (content_sha,)
                )
                if dup is not None or content_sha in seen:
                    result.skipped += 1
                    continue
                try:
                    with self.transaction():  # savepoint: a failure here undoes only this line
                        now = self._now()
                        sid = str(uuid.uuid4())
                        self._insert_draft_row(sid, norm, now)
                        payload = self._finalize_in_tx(sid, now)
                        self._audit(
                            "sighting", sid, "import",
                            {"source": str(p), "line": line_no, "sha256": payload_sha256(payload),
                             **unknown_pests(payload)}, now,
                        )
                except (StoreError, ValueError, OverflowError, sqlite3.DatabaseError) as e:
                    result.errors.append((line_no, f"not stored: {e}"))
                    continue
                seen.add(content_sha)
                result.imported += 1
                result.ids.append(sid)
                for i, o in enumerate(norm["observations"]):
                    c = check_name(o.get("pest"))
                    if c.status != "catalog":
                        result.warnings.append((line_no, f"observations[{i}].pest: {c.typed!r}: {c.describe()}"))
        return result
