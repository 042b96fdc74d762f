"""Demo data for ``fieldlog --demo``: the vineyard sample field notes, so a newcomer
sees a populated log (and can generate a report) the moment the app opens."""

from __future__ import annotations

from importlib import resources
from typing import Any

DEMO_DRAFT = {
    "block": "C1",
    "variety": "Chardonnay",
    "rows": "10-14",
    "date": "2026-07-22",
    "scout": "M. Ortiz",
    "observations": [{"pest": "powdery mildew", "life_stage": "colonies", "unit": "leaves"}],
    "notes": "Started counting, interrupted by rain - finish tomorrow.",
}


def sample_notes_path():
    """A Traversable for vineyard/samples/notes.jsonl (works installed or from a checkout)."""
    return resources.files("vineyard").joinpath("samples", "notes.jsonl")


def seed_demo(store: Any) -> int:
    """Fill an *empty* store with the sample notes (finalized) and one unfinished draft.

    Returns how many sightings were added; 0 when the store already has any, so
    ``fieldlog --demo`` can be started again and again without duplicates.
    """
    counts = store.counts()
    if counts["draft"] + counts["finalized"] + counts["superseded"]:
        return 0
    with resources.as_file(sample_notes_path()) as path:
        result = store.import_notes(path)
    store.save_draft(DEMO_DRAFT)
    return result.imported + 1
