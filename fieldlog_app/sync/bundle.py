"""Sync without any network: the outbox on an SD card.

A bundle is a zip file with two members:

* ``items.jsonl`` — one protocol item per line (exactly what ``POST /v1/batches``
  carries: item_id, kind, replaces, sha256, payload), in outbox ``seq`` order so a
  revision always follows the version it replaces;
* ``manifest.json`` — ``{"format": "fieldlog-bundle", "version": 1, "protocol": 1,
  "created_at", "device", "count", "items_sha256"}``.

The manifest's sha256 covers ``items.jsonl`` byte for byte, and every item carries
its own payload hash, so a card that corrupted one bit is refused as a whole
rather than half-imported. The office imports it through the same ingest code
as HTTP batches (``ServerDB.ingest``), so importing a bundle twice, or importing
items the device later also sends online, creates nothing new. The import can
write the receipts to a file; ``fieldlog sync import-receipts`` on the device then
marks those rows sent, closing the loop for a device that never sees a network.

Exporting does not change any outbox state: a bundle is not a receipt.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import socket
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Iterable

from fieldlog_app.database.canonical import utc_now

from ..atomic import atomic_write
from .client import _open_store
from .protocol import MAX_ITEMS, PROTOCOL, Item, item_to_wire, parse_json, ProtocolError, validate_item

BUNDLE_FORMAT = "fieldlog-bundle"
BUNDLE_VERSION = 1
MANIFEST = "manifest.json"
ITEMS = "items.jsonl"
MAX_ITEMS_BYTES = 1 << 30  # refuse to inflate more than 1 GiB (a zip bomb, or not our file)


class BundleError(Exception):
    """The file is not a readable, intact fieldlog bundle."""


@dataclass
class BundleInfo:
    path: str
    count: int
    items_sha256: str
    device: str


@dataclass
class ImportReport:
    """What an import did; ``receipts`` are for ``fieldlog sync import-receipts`` on the device."""

    device: str = ""
    total: int = 0
    accepted: int = 0
    duplicate: int = 0
    conflicts: list[dict] = field(default_factory=list)   # {line, item_id, reason, message}
    invalid: list[dict] = field(default_factory=list)     # {line, item_id, message}
    receipts: list[dict] = field(default_factory=list)

    def summary(self) -> str:
        return (f"{self.total} item(s) from {self.device or 'unknown device'}: {self.accepted} new, "
                f"{self.duplicate} already present, {len(self.conflicts)} conflicts, {len(self.invalid)} invalid")


def _atomic_write(target: Path, write) -> None:
    """A pulled SD card never holds half a bundle under the real name."""
    atomic_write(target, write, binary=True, error=BundleError)


def export_bundle(db, out: str | os.PathLike, *, include_sent: bool = False, device: str | None = None) -> BundleInfo:
    """Write the pending outbox rows (queued/sending; with ``include_sent`` every row) to a bundle.

    Reads only. Raises BundleError if there is nothing to export or the file cannot be written."""
    states = ("queued", "sending", "sent") if include_sent else ("queued", "sending")
    with _open_store(db, readonly=True) as store:
        rows = store.outbox_items(states)
    if not rows:
        raise BundleError("nothing to export: no pending items in the outbox" +
                          ("" if include_sent else " (use --all to include items already sent)"))
    lines = io.BytesIO()
    for r in rows:
        item = item_to_wire(r["item_id"], r["kind"], r["replaces"], r["sha256"], json.loads(r["payload"]))
        lines.write(json.dumps(item, ensure_ascii=False, separators=(",", ":")).encode("utf-8") + b"\n")
    data = lines.getvalue()
    digest = hashlib.sha256(data).hexdigest()
    device = device or socket.gethostname() or "device"
    manifest = {"format": BUNDLE_FORMAT, "version": BUNDLE_VERSION, "protocol": PROTOCOL, "created_at": utc_now(),
                "device": device, "count": len(rows), "items_sha256": digest}

    def write(f: IO[bytes]) -> None:
        with zipfile.ZipFile(f, "w", compression=zipfile.ZIP_DEFLATED) as zf:
            zf.writestr(MANIFEST, json.dumps(manifest, indent=1, sort_keys=True))
            zf.writestr(ITEMS, data)

    target = Path(out).expanduser()
    _atomic_write(target, write)
    read_bundle(target)  # read it back: SD cards lie
    return BundleInfo(str(target), len(rows), digest, device)


def read_bundle(path: str | os.PathLike) -> tuple[dict, list[tuple[int, dict | None, str | None]]]:
    """Open and verify a bundle; returns (manifest, [(line_no, raw_item_or_None, parse_error_or_None)]).

    Raises BundleError for anything that makes the file as a whole untrustworthy
    (not a zip, no manifest, wrong format/version, sha256 or count mismatch)."""
    p = Path(path).expanduser()
    try:
        zf = zipfile.ZipFile(p)
    except FileNotFoundError:
        raise BundleError(f"{p}: no such file") from None
    except (zipfile.BadZipFile, OSError) as e:
        raise BundleError(f"{p}: not a fieldlog bundle (not a readable zip file: {e})") from None
    with zf:
        names = set(zf.namelist())
        if MANIFEST not in names or ITEMS not in names:
            raise BundleError(f"{p}: not a fieldlog bundle (needs {MANIFEST} and {ITEMS})")
        try:
            manifest = json.loads(zf.read(MANIFEST).decode("utf-8"))
        except (ValueError, UnicodeDecodeError, zipfile.BadZipFile) as e:
            raise BundleError(f"{p}: unreadable manifest ({e})") from None
        if not isinstance(manifest, dict) or manifest.get("format") != BUNDLE_FORMAT:
            raise BundleError(f"{p}: not a fieldlog bundle (manifest format is not {BUNDLE_FORMAT!r})")
        if manifest.get("version") != BUNDLE_VERSION or manifest.get("protocol") != PROTOCOL:
            raise BundleError(f"{p}: bundle version {manifest.get('version')}/protocol {manifest.get('protocol')} "
                              f"is not supported (this is {BUNDLE_VERSION}/{PROTOCOL}); upgrade fieldlog-server")
        info = zf.getinfo(ITEMS)
        if info.file_size > MAX_ITEMS_BYTES:
            raise BundleError(f"{p}: {ITEMS} would inflate to {info.file_size} bytes; refusing")
        try:
            data = zf.read(ITEMS)
        except (zipfile.BadZipFile, OSError, EOFError) as e:  # includes zip CRC errors
            raise BundleError(f"{p}: {ITEMS} is damaged ({e})") from None
    if hashlib.sha256(data).hexdigest() != manifest.get("items_sha256"):
        raise BundleError(f"{p}: {ITEMS} does not match the manifest's sha256; the file is damaged. "
                          "Nothing was imported; export the bundle again")
    lines = data.split(b"\n")
    if lines and lines[-1] == b"":
        lines.pop()
    if len(lines) != manifest.get("count"):
        raise BundleError(f"{p}: the manifest announces {manifest.get('count')} items, the file has {len(lines)}")
    out: list[tuple[int, dict | None, str | None]] = []
    for n, line in enumerate(lines, 1):
        try:
            out.append((n, parse_json(line), None))
        except ProtocolError as e:
            out.append((n, None, e.message))
    return manifest, out


def import_bundle(server_db, path: str | os.PathLike, *, device: str | None = None,
                  chunk: int = MAX_ITEMS) -> ImportReport:
    """Import a bundle into the office database via ``ServerDB.ingest`` (per item: valid,
    non-conflicting items are stored; the others are reported). Safe to repeat."""
    manifest, lines = read_bundle(path)
    report = ImportReport(device=str(device or manifest.get("device") or "bundle"), total=len(lines))
    valid: list[tuple[int, Item]] = []
    for n, raw, parse_error in lines:
        if parse_error:
            report.invalid.append({"line": n, "item_id": None, "message": parse_error})
            continue
        item, errors = validate_item(raw, field=f"line {n}")
        if item is None:
            report.invalid.append({"line": n, "item_id": errors[0].get("item_id"),
                                   "message": "; ".join(e["message"] for e in errors)})
        else:
            valid.append((n, item))
    for start in range(0, len(valid), chunk):
        part = valid[start:start + chunk]
        result = server_db.ingest([it for _, it in part], device=report.device, source="bundle",
                                  batch_id=None, all_or_nothing=False)
        report.receipts.extend(result.receipts)
        report.accepted += result.accepted
        report.duplicate += result.duplicate
        for c in result.conflicts:
            report.conflicts.append({"line": part[c.index][0], "item_id": c.item_id, "reason": c.reason,
                                     "message": c.message})
    return report


def write_receipts(receipts: Iterable[dict], out: str | os.PathLike) -> int:
    """Receipts as JSON Lines (atomically), for the device's ``fieldlog sync import-receipts``."""
    receipts = list(receipts)

    def write(f: IO[bytes]) -> None:
        for r in receipts:
            f.write(json.dumps(r, sort_keys=True, ensure_ascii=False).encode("utf-8") + b"\n")

    _atomic_write(Path(out), write)
    return len(receipts)


def read_receipts(path: str | os.PathLike) -> list[dict]:
    """Receipts from a JSON Lines file; raises BundleError naming the first bad line."""
    p = Path(path).expanduser()
    try:
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise BundleError(f"{p}: no such file") from None
    except (OSError, UnicodeDecodeError) as e:
        raise BundleError(f"{p}: cannot read ({e})") from None
    out = []
    for n, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except ValueError as e:
            raise BundleError(f"{p} line {n}: not JSON ({e})") from None
        if not isinstance(obj, dict):
            raise BundleError(f"{p} line {n}: a receipt is an object")
        out.append(obj)
    return out
