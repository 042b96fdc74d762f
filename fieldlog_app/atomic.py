"""Atomic file writes for exports and bundles: temp file + fsync + rename.

A crash or a pulled SD card never leaves half a file under the real name. The file
gets the mode any other new file would (0666 less the umask; mkstemp alone makes
it 0600, which hides exports from the office user who copies them), or keeps the
mode of the file it replaces.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any, Callable

from edgespec.atomic import umask


def _mode_for(target: Path) -> int:
    try:
        return target.stat().st_mode & 0o7777
    except OSError:
        return 0o666 & ~umask()


def atomic_write(target: str | os.PathLike, write: Callable[[Any], Any], *, binary: bool = False,
                 error: type[Exception] = OSError) -> Any:
    """Call ``write(file)`` on a temp file next to ``target``, then rename it into place; returns what write returned."""
    target = Path(target).expanduser()
    if target.is_dir():
        raise error(f"{target} is a directory")
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", dir=target.parent if str(target.parent) else ".")
    except OSError as e:
        raise error(f"cannot write {target}: {e}") from None
    try:
        os.fchmod(fd, _mode_for(target))
        with (os.fdopen(fd, "wb") if binary else os.fdopen(fd, "w", encoding="utf-8", newline="")) as f:
            result = write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, target)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    return result
