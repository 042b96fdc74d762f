"""The history drafter's cold start: template scouting reports, so a device's first report already drafts well.

``edgespec`` knows no domain's reports; a vineyard generator passes these to its history index
(``GeneratorConfig.history_seed``, set by ``vineyard.writer.open_writer`` and the ``edgespec generate
--notes`` writer).
"""

from __future__ import annotations

from importlib import resources

from edgespec.drafters.history_index import reports_in


def template_reports() -> list[tuple[str, str]]:
    """(name, text) of the shipped template reports (``vineyard/samples/templates/``), in name order."""
    return reports_in(resources.files("vineyard") / "samples" / "templates")
