"""Sync without any network: the outbox on an SD card.

A bundle is a zip file with two members:

* ``items.jsonl`` — one protocol item per line (exactly what ``POST /v1/batches``
  carries: item_id, kind, replaces, sha256, payload), in outbox ``seq`` order so a
  revision always follows the version it replaces;
* ``manifest.json`` — ``{"format": "fieldlog-bundle", "version": 1, "protocol": 1,
  "created_at", "device", "count", "items_sha256", "signature"}``.

The signature is an HMAC of the rest of the manifest under the device's card key
(signing.py, derived from its token): the office imports a bundle only from a
registered, active device whose key signed it, and credits it to that device.
A card found in the yard, or one naming another device, is refused.

The manifest's sha256 covers ``items.jsonl`` byte for byte, and every item carries
its own payload hash, so a card that corrupted one bit is refused as a whole
rather than half-imported: the import streams the items once to check the hash
and count, then again to store them in chunks, so memory stays bounded whatever
the file holds (the manifest, each line, the number of lines and each chunk
have a ceiling; a zip bomb stops at the first one it passes). The office imports it through the same ingest code
as HTTP batches (``ServerDB.ingest``), so importing a bundle twice, or importing
items the device later also sends online, creates nothing new. The import can
write the receipts to a file, each signed with the device's card key;
``fieldlog sync import-receipts`` on the device checks every signature and then
marks those rows sent, closing the loop for a device that never sees a network.
Item ids and hashes are on the card for anyone to read, so an unsigned receipt
proves nothing and marks nothing.

Exporting does not change any outbox state: a bundle is not a receipt.
"""

from __future__ import annotations

import hashlib
import json
import os
import socket
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Iterable, Iterator

from fieldlog_app.database.canonical import strict_loads, utc_now

from ..atomic import atomic_write
from fieldlog_app.database.demo_mark import is_demo

from .common import DEMO_REFUSAL, open_store
from .protocol import MAX_ITEMS, PROTOCOL, Item, ProtocolError, item_to_wire, parse_json, validate_item
from .signing import BUNDLE, NoSuchSigner, key_from_token, sign, sign_receipt, verify

BUNDLE_FORMAT = "fieldlog-bundle"
BUNDLE_VERSION = 1
MANIFEST = "manifest.json"
ITEMS = "items.jsonl"
MAX_MANIFEST_BYTES = 64 * 1024       # a real manifest is ~300 bytes
MAX_LINE_BYTES = 4 * 1024 * 1024     # one item; twice what the server takes over HTTP by default
MAX_BUNDLE_ITEMS = 100_000           # years of one handheld's sightings and reports
MAX_CHUNK_BYTES = 8 * 1024 * 1024    # items parsed and stored together
MAX_RECEIPTS_BYTES = 100 * 1024 * 1024  # a signed receipt is ~300 bytes: the largest bundle three times over
MAX_LISTED = 100                     # conflicts / invalid lines listed in a report (all are counted)


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
    """What an import did. ``conflicts`` and ``invalid`` list the first MAX_LISTED of each
    ({line, item_id, reason?, message}); ``n_conflicts`` / ``n_invalid`` count them all."""

    device: str = ""
    total: int = 0
    accepted: int = 0
    duplicate: int = 0
    conflicts: list[dict] = field(default_factory=list)
    invalid: list[dict] = field(default_factory=list)
    n_conflicts: int = 0
    n_invalid: int = 0
    receipts: int = 0     # receipts written (for ``fieldlog sync import-receipts`` on the device)

    def add_conflict(self, entry: dict) -> None:
        self.n_conflicts += 1
        if len(self.conflicts) < MAX_LISTED:
            self.conflicts.append(entry)

    def add_invalid(self, entry: dict) -> None:
        self.n_invalid += 1
        if len(self.invalid) < MAX_LISTED:
            self.invalid.append(entry)

    def summary(self) -> str:
        return (f"{self.total} item(s) from {self.device or 'unknown device'}: {self.accepted} new, "
                f"{self.duplicate} already present, {self.n_conflicts} conflicts, {self.n_invalid} invalid")


def _atomic_write(target: Path, write):
    """A pulled SD card never holds half a bundle under the real name."""
    return atomic_write(target, write, binary=True, error=BundleError)


def export_bundle(db, out: str | os.PathLike, *, token: str, include_sent: bool = False,
                  device: str | None = None) -> BundleInfo:
    """Write the pending outbox rows (queued/sending; with ``include_sent`` every row) to a bundle,
    signed for ``device`` (its name at the office; default: the host name) with its ``token``.

    Reads only. Raises BundleError if there is nothing to export or the file cannot be written."""
    if not token:
        raise BundleError("a bundle is signed with this device's token: pass --token TOKEN or set FIELDLOG_TOKEN")
    states = ("queued", "sending", "sent") if include_sent else ("queued", "sending")
    with open_store(db, readonly=True) as store:
        if is_demo(store):  # sample data must not reach an office by card either
            raise BundleError(DEMO_REFUSAL)
        rows = store.outbox_items(states)
    if not rows:
        raise BundleError("nothing to export: no pending items in the outbox" +
                          ("" if include_sent else " (use --all to include items already sent)"))
    device = device or socket.gethostname() or "device"

    def write(f: IO[bytes]) -> str:
        digest = hashlib.sha256()
        with zipfile.ZipFile(f, "w", compression=zipfile.ZIP_DEFLATED) as zf:
            with zf.open(ITEMS, "w") as items:
                for r in rows:
                    item = item_to_wire(r["item_id"], r["kind"], r["replaces"], r["sha256"], json.loads(r["payload"]))
                    line = json.dumps(item, ensure_ascii=False, separators=(",", ":")).encode("utf-8") + b"\n"
                    if len(line) > MAX_LINE_BYTES:
                        raise BundleError(f"{r['kind']} {r['item_id']} is {len(line)} bytes, more than a bundle "
                                          f"line may hold ({MAX_LINE_BYTES}); send it over the network")
                    items.write(line)
                    digest.update(line)
            manifest = {"format": BUNDLE_FORMAT, "version": BUNDLE_VERSION, "protocol": PROTOCOL,
                        "created_at": utc_now(), "device": device, "count": len(rows),
                        "items_sha256": digest.hexdigest()}
            manifest["signature"] = sign(key_from_token(token), BUNDLE, manifest)
            zf.writestr(MANIFEST, json.dumps(manifest, indent=1, sort_keys=True))
        return digest.hexdigest()

    target = Path(out).expanduser()
    digest = _atomic_write(target, write)
    with _Bundle(target) as b:  # read it back: SD cards lie
        b.verify()
    return BundleInfo(str(target), len(rows), digest, device)


def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


class _Bundle:
    """An open bundle whose manifest has been read and checked; ``verify`` and ``lines`` stream the items."""

    def __init__(self, path: str | os.PathLike):
        self.path = p = Path(path).expanduser()
        try:
            self.zf = zipfile.ZipFile(p)
        except FileNotFoundError:
            raise BundleError(f"{p}: no such file") from None
        except (zipfile.BadZipFile, OSError, ValueError) as e:
            raise BundleError(f"{p}: not a fieldlog bundle (not a readable zip file: {e})") from None
        try:
            self.manifest = self._read_manifest()
        except BaseException:
            self.zf.close()
            raise

    def __enter__(self) -> "_Bundle":
        return self

    def __exit__(self, *exc) -> None:
        self.zf.close()

    def _read_manifest(self) -> dict:
        p, names = self.path, set(self.zf.namelist())
        if MANIFEST not in names or ITEMS not in names:
            raise BundleError(f"{p}: not a fieldlog bundle (needs {MANIFEST} and {ITEMS})")
        try:
            with self.zf.open(MANIFEST) as f:
                raw = f.read(MAX_MANIFEST_BYTES + 1)
        except (zipfile.BadZipFile, OSError, EOFError, ValueError, NotImplementedError) as e:
            raise BundleError(f"{p}: unreadable manifest ({e})") from None
        if len(raw) > MAX_MANIFEST_BYTES:
            raise BundleError(f"{p}: the manifest is larger than {MAX_MANIFEST_BYTES} bytes; not a fieldlog bundle")
        try:
            manifest = parse_json(raw)
        except ProtocolError as e:
            raise BundleError(f"{p}: unreadable manifest ({e.message})") from None
        if not isinstance(manifest, dict) or manifest.get("format") != BUNDLE_FORMAT:
            raise BundleError(f"{p}: not a fieldlog bundle (manifest format is not {BUNDLE_FORMAT!r})")
        version, protocol = manifest.get("version"), manifest.get("protocol")
        if not (_is_int(version) and version == BUNDLE_VERSION and _is_int(protocol) and protocol == PROTOCOL):
            raise BundleError(f"{p}: bundle version {str(version)[:20]}/protocol {str(protocol)[:20]} "
                              f"is not supported (this is {BUNDLE_VERSION}/{PROTOCOL}); upgrade fieldlog-server")
        count = manifest.get("count")
        if not _is_int(count) or not 0 <= count <= MAX_BUNDLE_ITEMS:
            raise BundleError(f"{p}: the manifest announces {str(count)[:20]} items; a bundle holds 0.."
                              f"{MAX_BUNDLE_ITEMS} items")
        if not isinstance(manifest.get("items_sha256"), str):
            raise BundleError(f"{p}: the manifest has no items_sha256")
        return manifest

    def check_signature(self, server_db, expect_device: str | None = None) -> tuple[str, bytes]:
        """(device, its card key) for the device that signed this bundle, or BundleError: unsigned, unknown
        or revoked device, a signature by another key, or (``expect_device``) another device than expected."""
        device = self.manifest.get("device")
        if expect_device is not None and device != expect_device:
            raise BundleError(f"{self.path}: the bundle is from {str(device)[:80]!r}, not {expect_device!r}")
        try:
            key = server_db.card_key(device)
        except NoSuchSigner as e:
            raise BundleError(f"{self.path}: refused: {e}") from None
        unsigned = {k: v for k, v in self.manifest.items() if k != "signature"}
        if not verify(key, BUNDLE, unsigned, self.manifest.get("signature")):
            raise BundleError(f"{self.path}: refused: the bundle is not signed by device {device!r} (made with "
                              "another device's token, an old token, or altered)")
        return device, key

    @property
    def count(self) -> int:
        return self.manifest["count"]

    def lines(self) -> Iterator[tuple[int, bytes]]:
        """(line number, line without its newline), each at most MAX_LINE_BYTES, at most MAX_BUNDLE_ITEMS of them."""
        p = self.path
        try:
            with self.zf.open(ITEMS) as f:
                n = 0
                while True:
                    line = f.readline(MAX_LINE_BYTES + 2)
                    if not line:
                        return
                    n += 1
                    if n > MAX_BUNDLE_ITEMS:
                        raise BundleError(f"{p}: {ITEMS} holds more than {MAX_BUNDLE_ITEMS} items; refusing")
                    if len(line) > MAX_LINE_BYTES + 1 or (not line.endswith(b"\n") and len(line) > MAX_LINE_BYTES):
                        raise BundleError(f"{p}: {ITEMS} line {n} is longer than {MAX_LINE_BYTES} bytes; refusing")
                    yield n, line
        except (zipfile.BadZipFile, OSError, EOFError, ValueError, NotImplementedError) as e:  # e.g. a CRC error
            raise BundleError(f"{p}: {ITEMS} is damaged ({e})") from None

    def verify(self) -> None:
        """Stream the items once: their sha256 and count must be what the manifest says."""
        digest, n = hashlib.sha256(), 0
        for n, line in self.lines():
            digest.update(line)
        if digest.hexdigest() != self.manifest["items_sha256"]:
            raise BundleError(f"{self.path}: {ITEMS} does not match the manifest's sha256; the file is damaged. "
                              "Nothing was imported; export the bundle again")
        if n != self.count:
            raise BundleError(f"{self.path}: the manifest announces {self.count} items, the file has {n}")


def import_bundle(server_db, path: str | os.PathLike, *, device: str | None = None, chunk: int = MAX_ITEMS,
                  receipts: str | os.PathLike | None = None) -> ImportReport:
    """Import a bundle into the office database via ``ServerDB.ingest`` (per item: valid,
    non-conflicting items are stored; the others are reported). Safe to repeat.

    Only a bundle signed by an active device is read past its manifest (``device``: and only
    from that one). ``receipts``: write the receipts there (JSON Lines, atomically) as the
    chunks commit."""
    with _Bundle(path) as b:
        signer, key = b.check_signature(server_db, device)
        b.verify()
        report = ImportReport(device=signer, total=b.count)
        if receipts is None:
            _import_items(server_db, b, report, chunk, None, key)
        else:
            _atomic_write(Path(receipts).expanduser(), lambda f: _import_items(server_db, b, report, chunk, f, key))
    return report


def _import_items(server_db, b: _Bundle, report: ImportReport, chunk: int, out: IO[bytes] | None,
                  key: bytes) -> None:
    part: list[tuple[int, Item]] = []
    size = 0

    def flush() -> None:
        nonlocal part, size
        if not part:
            return
        result = server_db.ingest([it for _, it in part], device=report.device, source="bundle",
                                  batch_id=None, all_or_nothing=False)
        report.accepted += result.accepted
        report.duplicate += result.duplicate
        for c in result.conflicts:
            report.add_conflict({"line": part[c.index][0], "item_id": c.item_id, "reason": c.reason,
                                 "message": c.message})
        if out is not None:
            for r in result.receipts:
                out.write(_receipt_line(sign_receipt(key, r)))
        report.receipts += len(result.receipts)
        part, size = [], 0

    for n, line in b.lines():
        try:
            raw = parse_json(line)
        except ProtocolError as e:
            report.add_invalid({"line": n, "item_id": None, "message": e.message})
            continue
        item, errors = validate_item(raw, field=f"line {n}")
        if item is None:
            report.add_invalid({"line": n, "item_id": errors[0].get("item_id"),
                                "message": "; ".join(e["message"] for e in errors)})
            continue
        part.append((n, item))
        size += len(line)
        if len(part) >= chunk or size >= MAX_CHUNK_BYTES:
            flush()
    flush()


def _receipt_line(receipt: dict) -> bytes:
    return json.dumps(receipt, sort_keys=True, ensure_ascii=False).encode("utf-8") + b"\n"


def write_receipts(receipts: Iterable[dict], out: str | os.PathLike) -> int:
    """Receipts as JSON Lines (atomically), for the device's ``fieldlog sync import-receipts``."""
    receipts = list(receipts)

    def write(f: IO[bytes]) -> None:
        for r in receipts:
            f.write(_receipt_line(r))

    _atomic_write(Path(out), write)
    return len(receipts)


def read_receipts(path: str | os.PathLike) -> list[dict]:
    """Receipts from a JSON Lines file; raises BundleError naming the first bad line."""
    p = Path(path).expanduser()
    try:
        if p.stat().st_size > MAX_RECEIPTS_BYTES:
            raise BundleError(f"{p}: larger than {MAX_RECEIPTS_BYTES} bytes; not a receipts file")
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
            obj = strict_loads(line)
        except ValueError as e:
            raise BundleError(f"{p} line {n}: not JSON ({e})") from None
        if not isinstance(obj, dict):
            raise BundleError(f"{p} line {n}: a receipt is an object")
        out.append(obj)
    return out
