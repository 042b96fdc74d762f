"""Front-ends the ``edgespec`` CLI loads by name, so the runtime never imports the packages built on it.

A package registers a report writer in its wheel's metadata (as Harlequin finds
its adapters in the ``harlequin.adapter`` group)::

    [project.entry-points."edgespec.writers"]
    notes = "vineyard.writer:ReportWriter"

and ``edgespec generate --notes FILE`` loads the one named ``notes``.
"""

from __future__ import annotations

import threading
from importlib.metadata import entry_points
from typing import Any, Iterator, Protocol

from . import EdgespecError
from .events import Chunk, Done

GROUP = "edgespec.writers"


class ReportWriter(Protocol):
    """Streams one report for an input the writer understands and packages its record."""

    def stream_report(self, note: Any, *, max_tokens: int = ..., temperature: float = ..., seed: int | None = ...,
                      top_k: int = ..., top_p: float = ..., cancel: threading.Event | None = ...) -> Iterator[Chunk | Done]: ...

    def report_record(self, done: Done) -> dict: ...


class WriterFactory(Protocol):
    """What an entry point of GROUP names: ``load(path)`` reads an input file, calling it wraps a Generator."""

    def load(self, path: str) -> Any: ...

    def __call__(self, generator: Any) -> ReportWriter: ...


def load_writer(name: str) -> WriterFactory:
    """The writer registered as ``name`` in GROUP; EdgespecError when no installed package provides it."""
    found = entry_points(group=GROUP, name=name)
    if not found:
        raise EdgespecError(f"no report writer {name!r} is installed (entry point group {GROUP!r}); "
                            "reinstall the package that provides it (pip install -e .)")
    return next(iter(found)).load()
