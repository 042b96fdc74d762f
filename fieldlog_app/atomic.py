"""Atomic file writes for exports and bundles: temp file + fsync + rename.

A crash or a pulled SD card never leaves half a file under the real name.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any, Callable


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
