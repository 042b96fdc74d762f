"""Write a file whole or not at all: a temp file in the same folder, then a rename over the target.

A handheld loses power mid-write; every state file edgespec keeps (calibration, policy estimates,
model stamps, queued jobs, the prompt cache) is written so that a reader sees the old file or the
new one, never half of one. The temp name is unique (``mkstemp``), so two threads or processes
writing the same file do not write into one temp file.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path


def umask() -> int:
    """The process umask without changing it (Linux reports it in /proc), else by setting and restoring it."""
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def write_bytes(path: str | os.PathLike, data: bytes, *, mode: int | None = None, durable: bool = False) -> Path:
    """Replace ``path`` by ``data`` atomically, with ``mode`` (default: what any new file gets, 0666 less the
    umask; ``mkstemp`` alone would make it 0600). ``durable``: fsync the file and its folder before returning
    (a queued job must survive a pulled battery; a cache may be lost and rebuilt)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(fd, 0o666 & ~umask() if mode is None else mode)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            if durable:
                f.flush()
                os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    if durable:
        try:
            dfd = os.open(path.parent, os.O_RDONLY)
            try:
                os.fsync(dfd)
            finally:
                os.close(dfd)
        except OSError:
            pass
    return path


def write_json(path: str | os.PathLike, data, *, indent: int | None = None, sort_keys: bool = False,
               durable: bool = False) -> Path:
    """``data`` as UTF-8 JSON (non-ASCII kept as text), atomically, as ``write_bytes``."""
    text = json.dumps(data, ensure_ascii=False, indent=indent, sort_keys=sort_keys) + "\n"
    return write_bytes(path, text.encode("utf-8"), durable=durable)
