"""atomic_write: the file appears whole or not at all, with the mode the umask gives a new file."""

from __future__ import annotations

import os
import stat

import pytest

from fieldlog_app.atomic import atomic_write


@pytest.fixture
def umask():
    """Set a umask for one test and restore the old one after it."""
    old = os.umask(0o022)
    os.umask(old)
    yield lambda mask: os.umask(mask)
    os.umask(old)


@pytest.mark.parametrize("mask, mode", [(0o022, 0o644), (0o077, 0o600), (0o002, 0o664)])
def test_a_new_file_follows_the_umask(tmp_path, umask, mask, mode):
    umask(mask)
    target = tmp_path / "export.csv"
    assert atomic_write(target, lambda f: f.write("a,b\n")) == 4
    assert stat.S_IMODE(target.stat().st_mode) == mode and target.read_text() == "a,b\n"


def test_a_binary_bundle_follows_the_umask_too(tmp_path, umask):
    umask(0o027)
    target = tmp_path / "card.zip"
    atomic_write(target, lambda f: f.write(b"PK"), binary=True)
    assert stat.S_IMODE(target.stat().st_mode) == 0o640


def test_a_replaced_file_keeps_its_mode(tmp_path, umask):
    umask(0o022)
    target = tmp_path / "private.jsonl"
    target.write_text("old\n")
    target.chmod(0o600)
    atomic_write(target, lambda f: f.write("new\n"))
    assert stat.S_IMODE(target.stat().st_mode) == 0o600 and target.read_text() == "new\n"


def test_a_failed_write_leaves_the_old_file_and_no_temp_file(tmp_path):
    target = tmp_path / "x.csv"
    target.write_text("kept\n")

    def boom(f):
        f.write("half")
        raise RuntimeError("disk pulled")

    with pytest.raises(RuntimeError):
        atomic_write(target, boom)
    assert target.read_text() == "kept\n" and sorted(p.name for p in tmp_path.iterdir()) == ["x.csv"]


def test_edgespec_state_files_are_written_whole_with_the_mode_asked(tmp_path, umask, monkeypatch):
    from edgespec import atomic

    umask(0o027)
    target = atomic.write_json(tmp_path / "sub" / "state.json", {"a": "é"})
    assert stat.S_IMODE(target.stat().st_mode) == 0o640 and target.read_text(encoding="utf-8") == '{"a": "é"}\n'
    secret = atomic.write_bytes(tmp_path / "cache.kv", b"kv", mode=0o600)
    assert stat.S_IMODE(secret.stat().st_mode) == 0o600

    def pulled_card(src, dst):
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(os, "replace", pulled_card)
    with pytest.raises(OSError):
        atomic.write_json(target, {"a": "new"}, durable=True)
    monkeypatch.undo()
    assert target.read_text(encoding="utf-8") == '{"a": "é"}\n'  # the old file, whole
    assert sorted(p.name for p in target.parent.iterdir()) == ["state.json"]  # no temp file left
