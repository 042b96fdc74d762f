"""Read commands on read-only or full storage, and SQLite files that are not fieldlog's."""

from __future__ import annotations

import functools
import json
import os
import resource
import signal
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from fieldlog_app.database import SCHEMA_VERSION, Store, StoreError
from fieldlog_app.database.migrations import APPLICATION_ID

ROOT = Path(__file__).resolve().parent.parent
NOTES_JSONL = ROOT / "vineyard" / "samples" / "notes.jsonl"
TOKEN = "fl_test-token-for-bundles"


def fieldlog(*argv) -> list[str]:
    return [sys.executable, "-m", "fieldlog_app.cli", *map(str, argv)]


def _env() -> dict:
    return {**os.environ, "PYTHONPATH": str(ROOT), "FIELDLOG_TOKEN": TOKEN}


@functools.lru_cache(maxsize=1)
def _can_unshare() -> bool:
    try:
        r = subprocess.run(["unshare", "--user", "--map-root-user", "--mount", "true"], capture_output=True,
                           timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return r.returncode == 0


# Inside a private mount namespace, bind the folder onto itself read-only: a real EROFS for every
# process below, without root on the host. The probe proves the folder cannot be written.
_RO_SCRIPT = ('mount --bind "$1" "$1" && mount -o remount,bind,ro "$1" || exit 96; '
              'touch "$1/.probe" 2>/dev/null && exit 97; d="$1"; shift; exec "$@"')


def run_on_readonly(directory: Path, argv: list[str]) -> subprocess.CompletedProcess:
    """Run ``argv`` with ``directory`` on a read-only filesystem (a read-only bind mount)."""
    if _can_unshare():
        cmd = ["unshare", "--user", "--map-root-user", "--mount", "sh", "-c", _RO_SCRIPT, "sh", str(directory), *argv]
        r = subprocess.run(cmd, capture_output=True, text=True, env=_env(), timeout=120)
        assert r.returncode not in (96, 97), f"could not make {directory} read-only: {r.stderr}"
        return r
    if os.geteuid() == 0:
        pytest.skip("needs unprivileged user namespaces (unshare) to mount a folder read-only as root")
    modes = {p: p.stat().st_mode for p in [directory, *directory.iterdir()]}
    try:
        for p in modes:
            p.chmod(0o555 if p.is_dir() else 0o444)
        return subprocess.run(argv, capture_output=True, text=True, env=_env(), timeout=120)
    finally:
        for p, mode in modes.items():
            p.chmod(mode)


def _no_room() -> None:
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails with EFBIG instead of killing
    resource.setrlimit(resource.RLIMIT_FSIZE, (0, 0))


def run_on_full_disk(argv: list[str]) -> subprocess.CompletedProcess:
    """Run ``argv`` where no file can grow by a byte (RLIMIT_FSIZE 0), as on a disk at 100%."""
    return subprocess.run(argv, capture_output=True, text=True, env=_env(), timeout=120, preexec_fn=_no_room)


def folder_state(d: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(d.iterdir()) if p.is_file()}


@pytest.fixture
def card(tmp_path) -> Path:
    """A folder holding a fieldlog database with the ten sample sightings, closed cleanly."""
    d = tmp_path / "card"
    d.mkdir()
    with Store(d / "f.db") as s:
        assert s.import_notes(NOTES_JSONL).imported == 10
    return d


def test_read_commands_work_on_a_read_only_filesystem(card, tmp_path):
    db = card / "f.db"
    before = folder_state(card)
    r = run_on_readonly(card, fieldlog("list", "--db", db))
    assert r.returncode == 0, r.stderr
    assert "10 sightings" in r.stderr
    r = run_on_readonly(card, fieldlog("export", "-f", "jsonl", "--db", db))
    assert r.returncode == 0, r.stderr
    assert len([json.loads(x) for x in r.stdout.splitlines()]) == 10
    out = tmp_path / "sd"
    out.mkdir()
    r = run_on_readonly(card, fieldlog("sync", "export-bundle", out / "b.zip", "--db", db, "--device", "handheld-1"))
    assert r.returncode == 0, r.stderr
    assert "wrote 10 item(s)" in r.stdout and (out / "b.zip").exists()
    r = run_on_readonly(card, fieldlog("sync", "status", "--db", db))
    assert r.returncode == 0 and "queued 10" in r.stdout, r.stderr
    assert folder_state(card) == before


def test_read_commands_work_on_a_full_disk(card):
    db = card / "f.db"
    r = run_on_full_disk(fieldlog("list", "--db", db))
    assert r.returncode == 0, r.stderr
    assert "10 sightings" in r.stderr
    r = run_on_full_disk(fieldlog("export", "-f", "csv", "--db", db))
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("sighting_id,") and len(r.stdout.splitlines()) > 10
    r = run_on_full_disk(fieldlog("sync", "status", "--db", db))
    assert r.returncode == 0 and "queued 10" in r.stdout, r.stderr
    r = run_on_full_disk(fieldlog("import-notes", NOTES_JSONL, "--db", db))  # a write says why it failed
    assert r.returncode == 1 and "Traceback" not in r.stderr


def test_a_read_only_store_refuses_writes_and_an_old_schema(card, tmp_path):
    with Store(card / "f.db", readonly=True) as s:
        assert len(s.list_sightings()) == 10 and s.outbox_counts()["queued"] == 10
        with pytest.raises(StoreError):
            s.save_draft({"block": "B4"})
        with pytest.raises(StoreError):
            s.outbox.recover()
    with pytest.raises(StoreError, match="no fieldlog database"):
        Store(tmp_path / "missing.db", readonly=True)
    assert not (tmp_path / "missing.db").exists()


def test_another_applications_database_is_refused_before_it_is_touched(tmp_path):
    other = tmp_path / "photos.db"
    conn = sqlite3.connect(other)
    conn.execute("CREATE TABLE photos (id INTEGER PRIMARY KEY, path TEXT)")
    conn.execute("INSERT INTO photos (path) VALUES ('a.jpg')")
    conn.commit()
    conn.close()
    stamped = tmp_path / "stamped.db"
    conn = sqlite3.connect(stamped)
    conn.execute("PRAGMA application_id = 1196444237")  # "GPKG": a GeoPackage, even one with our table names
    conn.execute("CREATE TABLE sightings (id TEXT)")
    conn.commit()
    conn.close()
    before = folder_state(tmp_path)
    for path, words in ((other, "not a fieldlog database"), (stamped, "application_id")):
        for readonly in (False, True):
            with pytest.raises(StoreError, match=words):
                Store(path, readonly=readonly)
        r = subprocess.run(fieldlog("import-notes", NOTES_JSONL, "--db", path), capture_output=True, text=True,
                           env=_env(), timeout=120)
        assert r.returncode == 1 and words in r.stderr and "Traceback" not in r.stderr
    assert folder_state(tmp_path) == before  # no WAL switch, no _migrations table, no -wal/-shm files


def test_new_databases_are_stamped_and_unstamped_fieldlog_ones_are_adopted(tmp_path):
    path = tmp_path / "f.db"
    Store(path).close()
    head = path.read_bytes()[:100]
    assert int.from_bytes(head[68:72], "big") == APPLICATION_ID
    assert int.from_bytes(head[60:64], "big") == SCHEMA_VERSION
    conn = sqlite3.connect(path)  # as a fieldlog from before the stamp left it
    conn.execute("PRAGMA application_id = 0")
    conn.execute("PRAGMA user_version = 0")
    conn.commit()
    conn.close()
    with Store(path, readonly=True) as s:
        assert s.list_sightings() == []
    with Store(path) as s:
        assert s.db.conn.execute("PRAGMA application_id").fetchone()[0] == APPLICATION_ID
        assert s.db.conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    empty = tmp_path / "empty.db"
    sqlite3.connect(empty).close()  # a zero-byte file is a new database, not a foreign one
    Store(empty).close()
