"""SD-card bundles against hostile files: bounded memory (measured under a hard address-space limit)."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from fieldlog_app.database import Store
from fieldlog_app.sync.bundle import BundleError, export_bundle, import_bundle, read_receipts
from fieldlog_app.sync.server import ServerDB
from fieldlog_app.sync.signing import BUNDLE, key_from_token, sign
from fieldlog_app.sync.testing import make_sightings

ROOT = Path(__file__).resolve().parent.parent
HEADROOM = 160 * 1024 * 1024  # address space allowed above what the importing process holds after its imports


@pytest.fixture
def sdb(server_db_target):
    """The office database (SQLite, then PostgreSQL) with handheld-1 registered; its token is ``sdb.token``."""
    db = ServerDB(server_db_target)
    db.token = db.add_device("handheld-1")
    return db


@pytest.fixture
def sqlite_sdb(tmp_path):
    """The SQLite office database at tmp_path/server.db, which the memory-bounded subprocess opens."""
    db = ServerDB(tmp_path / "server.db")
    db.token = db.add_device("handheld-1")
    return db


def write_bundle(path: Path, items: bytes, token: str | None = None, **manifest) -> Path:
    """A bundle with these raw items.jsonl bytes and a manifest that matches them unless told otherwise,
    signed with ``token`` (unsigned without one)."""
    m = {"format": "fieldlog-bundle", "version": 1, "protocol": 1, "created_at": "2026-07-21T10:00:00Z",
         "device": "handheld-1", "count": items.count(b"\n"), "items_sha256": hashlib.sha256(items).hexdigest()}
    raw = manifest.pop("_raw", None)
    m.update(manifest)
    if token is not None:
        m["signature"] = sign(key_from_token(token), BUNDLE, m)
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=9) as zf:
        zf.writestr("manifest.json", raw or json.dumps(m))
        zf.writestr("items.jsonl", items)
    return path


_IMPORT_UNDER_LIMIT = """
import resource, sys
from fieldlog_app.sync.bundle import BundleError, import_bundle
from fieldlog_app.sync.server import ServerDB
sdb = ServerDB(sys.argv[1])
with open("/proc/self/status") as f:
    vm = next(int(line.split()[1]) * 1024 for line in f if line.startswith("VmSize:"))
limit = vm + int(sys.argv[3])
resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
try:
    report = import_bundle(sdb, sys.argv[2])
except BundleError as e:
    print("BundleError:", e)
except MemoryError:
    print("MemoryError")
else:
    print("imported:", report.summary())
"""


def import_under_memory_limit(tmp_path: Path, bundle: Path) -> str:
    if not Path("/proc/self/status").exists():
        pytest.skip("needs /proc to measure the process's address space")
    r = subprocess.run([sys.executable, "-c", _IMPORT_UNDER_LIMIT, str(tmp_path / "server.db"), str(bundle),
                        str(HEADROOM)], capture_output=True, text=True, timeout=300,
                       env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"})
    assert r.returncode == 0, r.stderr[-2000:]
    return r.stdout.strip()


@pytest.mark.slow
def test_a_manifest_that_inflates_to_300_mb_is_refused_within_bounded_memory(tmp_path, sqlite_sdb):
    bomb = b'{"format": "fieldlog-bundle", "pad": "' + b" " * (300 * 1024 * 1024) + b'"}'
    path = write_bundle(tmp_path / "bomb.zip", b"", _raw=bomb)
    del bomb
    assert path.stat().st_size < 1024 * 1024
    out = import_under_memory_limit(tmp_path, path)
    assert out.startswith("BundleError:") and "manifest" in out


@pytest.mark.slow
def test_a_million_tiny_lines_are_refused_within_bounded_memory(tmp_path, sqlite_sdb):
    # signed, and announcing as many items as a bundle may hold: only streaming the items finds the lie
    path = write_bundle(tmp_path / "lines.zip", b"{}\n" * 1_000_000, sqlite_sdb.token, count=100_000)
    out = import_under_memory_limit(tmp_path, path)
    assert out.startswith("BundleError:") and "items" in out


@pytest.mark.slow
def test_one_endless_line_is_refused_within_bounded_memory(tmp_path, sqlite_sdb):
    path = write_bundle(tmp_path / "line.zip", b'{"item_id": "' + b"a" * (300 * 1024 * 1024) + b'"}\n', sqlite_sdb.token)
    out = import_under_memory_limit(tmp_path, path)
    assert out.startswith("BundleError:") and "line 1" in out


def test_a_large_honest_bundle_streams_in_chunks(tmp_path, sdb, monkeypatch):
    store = Store(tmp_path / "device.db")
    make_sightings(store, 30, seed=3)
    path = export_bundle(store, tmp_path / "b.zip", token=sdb.token, device="handheld-1").path
    seen = []
    real = sdb.ingest
    monkeypatch.setattr(sdb, "ingest", lambda items, **kw: seen.append(len(items)) or real(items, **kw))
    report = import_bundle(sdb, path, chunk=7)
    assert report.accepted == 30 and seen == [7, 7, 7, 7, 2]
    store.close()


def test_manifest_fields_are_checked_strictly(tmp_path, sdb):
    items = b'{"a": 1}\n'
    for over, words in (({"version": True}, "version"), ({"protocol": True}, "protocol"),
                        ({"count": 2}, "announces 2"), ({"count": 10**12}, "items"),
                        ({"items_sha256": "0" * 64}, "sha256")):
        with pytest.raises(BundleError, match=words):
            import_bundle(sdb, write_bundle(tmp_path / "m.zip", items, sdb.token, **over))


def test_only_a_bundle_signed_by_the_device_it_names_is_imported(tmp_path, sdb):
    store = Store(tmp_path / "device.db")
    make_sightings(store, 2, seed=4)
    other_token = sdb.add_device("handheld-2")
    good = export_bundle(store, tmp_path / "good.zip", token=sdb.token, device="handheld-1").path
    with zipfile.ZipFile(good) as zf:
        items = zf.read("items.jsonl")
    forged = [
        (write_bundle(tmp_path / "unsigned.zip", items), "not signed by device 'handheld-1'"),
        (write_bundle(tmp_path / "guessed.zip", items, "fl_guess"), "not signed by device 'handheld-1'"),
        (write_bundle(tmp_path / "other.zip", items, other_token), "not signed by device 'handheld-1'"),
        (write_bundle(tmp_path / "unknown.zip", items, sdb.token, device="tablet-7"), "no device named 'tablet-7'"),
        (write_bundle(tmp_path / "newline.zip", items, sdb.token, device="handheld-1\nadmin"), "not a device name"),
    ]
    for path, words in forged:
        with pytest.raises(BundleError, match=words):
            import_bundle(sdb, path)
    assert sdb.list_items() == []
    with pytest.raises(BundleError, match="not 'handheld-2'"):
        import_bundle(sdb, good, device="handheld-2")
    report = import_bundle(sdb, good)
    assert report.accepted == 2 and {r["device"] for r in sdb.list_items()} == {"handheld-1"}
    sdb.revoke_device("handheld-1")
    with pytest.raises(BundleError, match="revoked"):
        import_bundle(sdb, good)
    with pytest.raises(BundleError, match="token"):
        export_bundle(store, tmp_path / "x.zip", token="", device="handheld-1")
    store.close()


def test_a_hostile_receipts_file_is_a_bundle_error(tmp_path):
    path = tmp_path / "r.jsonl"
    for text in ("[" * 5000 + "]" * 5000, '{"server_seq": NaN}', "[1]"):
        path.write_text(text + "\n")
        with pytest.raises(BundleError, match="line 1"):
            read_receipts(path)
